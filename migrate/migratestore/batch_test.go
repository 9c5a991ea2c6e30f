package migratestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTransitionMany checks that a batch gives every op the outcome
// Transition would: written records in the bucket and the State, refusals,
// repeats, users the State does not know, and users whose State record is
// stale (the compare-and-set loses and the op takes the one-by-one path).
func TestTransitionMany(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	clock := &fakeClock{t: t0}
	s := startStore(t, ctx, e.JS, Config{Now: clock.Now})

	const n = 2*batchWindow + 7 // several windows, the last one partial
	for i := range n {
		if _, err := s.Transition(ctx, fmt.Sprintf("u%05d", i), migrate.Op{ID: "seed", To: migrate.PhaseShadow}); err != nil {
			t.Fatal(err)
		}
	}
	// A second store on the same bucket whose State is not fed: whatever
	// it holds is as stale as we make it.
	st2, err := migrate.NewState()
	if err != nil {
		t.Fatal(err)
	}
	stale, err := New(ctx, e.JS, st2, Config{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}

	ops := make([]migrate.UserOp, 0, n+3)
	for i := range n {
		ops = append(ops, migrate.UserOp{User: fmt.Sprintf("u%05d", i), Op: migrate.Op{ID: "go-ready", To: migrate.PhaseReady, Reason: "batch"}})
	}
	ops = append(ops,
		migrate.UserOp{User: "newcomer", Op: migrate.Op{ID: "new", To: migrate.PhaseShadow}},  // not in the State
		migrate.UserOp{User: "u00000", Op: migrate.Op{ID: "bad", To: migrate.PhaseFinalized}}, // no such edge from shadow
		migrate.UserOp{User: "bad id!", Op: migrate.Op{To: migrate.PhaseShadow}},
	)
	errs := s.TransitionMany(ctx, ops)
	if len(errs) != len(ops) {
		t.Fatalf("TransitionMany: %d results for %d ops", len(errs), len(ops))
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("op %d: %v", i, errs[i])
		}
	}
	if errs[n] != nil {
		t.Errorf("newcomer: %v", errs[n])
	}
	var te *migrate.TransitionError
	if !errors.As(errs[n+1], &te) || !errors.Is(errs[n+1], migrate.ErrIllegalTransition) {
		t.Errorf("illegal op: %v, want a *migrate.TransitionError", errs[n+1])
	}
	if !errors.Is(errs[n+2], migrate.ErrInvalidUserID) {
		t.Errorf("bad id: %v, want ErrInvalidUserID", errs[n+2])
	}

	for _, id := range []string{"u00000", fmt.Sprintf("u%05d", n-1)} {
		stored, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := migrate.User{ID: id, Phase: migrate.PhaseReady, PhaseSince: t0, Reason: "batch", OpID: "go-ready", Revision: stored.Revision}
		if diff := cmp.Diff(want, stored); diff != "" {
			t.Errorf("KV %s (-want +got):\n%s", id, diff)
		}
		inState, _ := s.st.Get(id)
		if diff := cmp.Diff(stored, inState); diff != "" {
			t.Errorf("State %s right after the batch (-KV +State):\n%s", id, diff)
		}
	}
	if u, err := s.Get(ctx, "newcomer"); err != nil || u.Phase != migrate.PhaseShadow {
		t.Errorf("newcomer: %+v, %v", u, err)
	}

	// Repeating the batch writes nothing, and says so.
	before, _ := s.Get(ctx, "u00001")
	for i, err := range s.TransitionMany(ctx, ops[:n]) {
		if !errors.Is(err, migrate.ErrRepeated) {
			t.Fatalf("repeat op %d: %v, want ErrRepeated", i, err)
		}
	}
	if after, _ := s.Get(ctx, "u00001"); after.Revision != before.Revision {
		t.Errorf("repeat wrote: revision %d → %d", before.Revision, after.Revision)
	}

	// A stale State: the compare-and-set loses, and the one-by-one path,
	// which reads the bucket, applies the op.
	old := before
	old.Revision = 1 // long gone
	st2.Put(old)
	errs = stale.TransitionMany(ctx, []migrate.UserOp{
		{User: "u00001", Op: migrate.Op{ID: "to-cloud", To: migrate.PhaseCloud}},
		{User: "u00002", Op: migrate.Op{ID: "to-cloud", To: migrate.PhaseCloud}}, // not in st2
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("stale op %d: %v", i, err)
		}
	}
	for _, id := range []string{"u00001", "u00002"} {
		if u, err := s.Get(ctx, id); err != nil || u.Phase != migrate.PhaseCloud || u.OpID != "to-cloud" {
			t.Errorf("%s after the stale batch: %+v, %v", id, u, err)
		}
	}
}

// TestTransitionManyCanceled checks that a batch under an ended context
// reports every op as failed with the context's error.
func TestTransitionManyCanceled(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	if _, err := s.Transition(ctx, "alice", migrate.Op{To: migrate.PhaseShadow}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	errs := s.TransitionMany(cctx, []migrate.UserOp{{User: "alice", Op: migrate.Op{To: migrate.PhaseReady}}, {User: "bob", Op: migrate.Op{To: migrate.PhaseShadow}}})
	for i, err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("op %d: %v, want context.Canceled", i, err)
		}
	}
}

// seedShadow moves n users u00000… to shadow through s, one by one.
func seedShadow(tb testing.TB, ctx context.Context, s *running, n int) []string {
	tb.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%05d", i)
		if _, err := s.Transition(ctx, ids[i], migrate.Op{ID: "seed", To: migrate.PhaseShadow}); err != nil {
			tb.Fatal(err)
		}
	}
	return ids
}

// TestTransitionManyLosesToForeignWriter checks the pipelined batch against
// records another writer changed after the batch's State read them: across
// several windows in flight, each of those compare-and-sets loses, the op
// takes the one-by-one path, which reads the bucket and refuses (the user
// is no longer where the op expects), and nothing the other writer wrote is
// overwritten. The running store's watch, for which the batch's writes are
// foreign, applies every one of them.
func TestTransitionManyLosesToForeignWriter(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	const n = 2*batchWindow + 13
	ids := seedShadow(t, ctx, s, n)

	// The batch's store is not running: its State holds what the bucket
	// held before the other writer's changes.
	batcher := staleBatcher(t, ctx, e.JS, s.Store, ids, Config{})
	foreign := func(i int) bool { return i%7 == 3 }
	for i, id := range ids {
		if foreign(i) {
			if _, err := s.Transition(ctx, id, migrate.Op{ID: "back", To: migrate.PhaseLegacy}); err != nil {
				t.Fatal(err)
			}
		}
	}

	ops := make([]migrate.UserOp, n)
	for i, id := range ids {
		ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: "go-ready", To: migrate.PhaseReady}}
	}
	errs := batcher.TransitionMany(ctx, ops)
	for i, err := range errs {
		switch {
		case foreign(i) && !errors.Is(err, migrate.ErrIllegalTransition):
			t.Fatalf("op %d on a user moved by another writer: %v, want ErrIllegalTransition", i, err)
		case !foreign(i) && err != nil:
			t.Fatalf("op %d: %v", i, err)
		}
	}
	for i, id := range ids {
		want := migrate.PhaseReady
		if foreign(i) {
			want = migrate.PhaseLegacy
		}
		stored, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if stored.Phase != want {
			t.Fatalf("%s in the bucket: %s, want %s", id, stored.Phase, want)
		}
		waitFor(t, ctx, "the watch to apply "+id, func() bool {
			u, ok := s.st.Get(id)
			return ok && u.Revision == stored.Revision
		})
		if u, _ := s.st.Get(id); u.Phase != want {
			t.Fatalf("%s in the watched State: %s, want %s", id, u.Phase, want)
		}
	}
}

// staleBatcher returns a Store on js that is not running, whose State holds
// ids as s reads them now: whatever other writers do next leaves it behind.
func staleBatcher(tb testing.TB, ctx context.Context, js jetstream.JetStream, s *Store, ids []string, cfg Config) *Store {
	tb.Helper()
	st, err := migrate.NewState()
	if err != nil {
		tb.Fatal(err)
	}
	for _, id := range ids {
		u, err := s.Get(ctx, id)
		if err != nil {
			tb.Fatal(err)
		}
		st.Put(u)
	}
	batcher, err := New(ctx, js, st, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return batcher
}

// TestTransitionManyWithConcurrentWriter runs a batch on a running store
// while another writer moves some of the same users back to legacy: every
// op is applied or refused, never lost or half done, and once the watch has
// caught up the State equals the bucket for every user, whether the record
// came from the batch (put by TransitionMany, the watch skipping it) or from
// the other writer (applied by the watch).
func TestTransitionManyWithConcurrentWriter(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	const n = batchWindow + 500
	ids := seedShadow(t, ctx, s, n)
	other, err := New(ctx, e.JS, mustState(t), Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, skipped0 := s.local.stats()

	ops := make([]migrate.UserOp, n)
	for i, id := range ids {
		ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: "go-ready", To: migrate.PhaseReady}}
	}
	foreignErrs := make([]error, n)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := n - 1; i >= 0; i -= 5 { // from the end, to meet the batch halfway
			_, foreignErrs[i] = other.Transition(ctx, ids[i], migrate.Op{ID: "back", To: migrate.PhaseLegacy})
		}
	})
	errs := s.TransitionMany(ctx, ops)
	wg.Wait()

	refused := 0
	for i, err := range errs {
		switch {
		case err == nil:
		case errors.Is(err, migrate.ErrIllegalTransition):
			refused++
			if foreignErrs[i] != nil {
				t.Errorf("%s: both writers refused: %v / %v", ids[i], err, foreignErrs[i])
			}
		default:
			t.Fatalf("op %d: %v", i, err)
		}
	}
	for i, id := range ids {
		stored, err := s.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case errs[i] == nil && foreignErrs[i] == nil && i%5 == (n-1)%5:
			t.Fatalf("%s: both writers moved the user from shadow", id)
		case errs[i] != nil && stored.Phase != migrate.PhaseLegacy,
			errs[i] == nil && stored.Phase != migrate.PhaseReady:
			t.Fatalf("%s: batch %v, other writer %v, bucket has %s", id, errs[i], foreignErrs[i], stored.Phase)
		}
		waitFor(t, ctx, "the watch to reach "+id, func() bool {
			u, ok := s.st.Get(id)
			return ok && u.Revision >= stored.Revision
		})
		if u, _ := s.st.Get(id); u.Revision != stored.Revision || u.Phase != stored.Phase {
			t.Fatalf("%s: State has %s@%d, bucket %s@%d", id, u.Phase, u.Revision, stored.Phase, stored.Revision)
		}
	}
	if noted, skipped := s.local.stats(); noted != 0 {
		t.Errorf("%d writes still noted after the watch caught up (skipped %d)", noted, skipped-skipped0)
	}
	t.Logf("%d refused; the watch skipped %d of the batch's writes", refused, func() uint64 { _, k := s.local.stats(); return k - skipped0 }())
}

func mustState(tb testing.TB) *migrate.State {
	tb.Helper()
	st, err := migrate.NewState()
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// TestLocalWrites checks the watch's notes of the batch's own writes: none
// without a running watch; recognised in flight by the bytes published after
// the replaced revision, or once acknowledged by revision; never a foreign
// write with other bytes; a write the watch met and skipped is reported to a
// batch whose publish then failed; and every note goes once settled and met.
func TestLocalWrites(t *testing.T) {
	var l localWrites
	if w := l.publishing("a", 1, []byte("A")); w != nil {
		t.Fatal("noted without a running watch")
	}
	l.start()
	a := l.publishing("a", 1, []byte("A"))
	b := l.publishing("b", 2, []byte("B"))
	c := l.publishing("c", 3, []byte("C"))
	d := l.publishing("d", 4, []byte("D"))

	// a: acknowledged first, then met by revision.
	l.acked("a", a, 10)
	if l.handled("a", 9, []byte("A")) {
		t.Error("a@9, before its revision, skipped")
	}
	if !l.handled("a", 10, []byte("A")) || l.handled("a", 10, []byte("A")) {
		t.Error("a@10: want skipped once")
	}
	// b: met in flight, then acknowledged.
	if l.handled("b", 2, []byte("B")) {
		t.Error("b@2 (the replaced revision) skipped")
	}
	if l.handled("b", 11, []byte("other")) {
		t.Error("b@11, another writer's bytes, skipped")
	}
	if !l.handled("b", 12, []byte("B")) {
		t.Error("b@12, the bytes published, not skipped")
	}
	if l.handled("b", 13, []byte("B")) {
		t.Error("b@13 skipped: a write is met once")
	}
	l.acked("b", b, 12)
	// c: met in flight, then its publish failed: the batch must put it.
	if !l.handled("c", 14, []byte("C")) {
		t.Error("c@14 not skipped")
	}
	if rev := l.failed("c", c); rev != 14 {
		t.Errorf("failed c = %d, want 14 (the revision the watch skipped)", rev)
	}
	// d: failed before the watch met it: the watch applies whatever comes.
	if rev := l.failed("d", d); rev != 0 {
		t.Errorf("failed d = %d, want 0", rev)
	}
	if l.handled("d", 15, []byte("D")) {
		t.Error("d@15 skipped after its note was dropped")
	}
	if l.handled("gone", 16, nil) {
		t.Error("a delete skipped")
	}
	// e: acknowledged after the watch went past it unseen (superseded).
	e := l.publishing("e", 5, []byte("E"))
	l.acked("e", e, 7)
	if noted, skipped := l.stats(); noted != 0 || skipped != 3 {
		t.Errorf("stats = %d noted, %d skipped; want 0, 3", noted, skipped)
	}
	f := l.publishing("f", 5, []byte("F"))
	l.stop()
	if noted, _ := l.stats(); noted != 0 {
		t.Errorf("%d noted after stop", noted)
	}
	if l.handled("f", 20, []byte("F")) || l.failed("f", f) != 0 {
		t.Error("f recognised after stop")
	}
}

// TestAuditedBatchAbandonsUnsentIntent checks that moves whose batch intent
// was still being filled when the context ended fail with the context's
// error, and that no intent of theirs reaches the log.
func TestAuditedBatchAbandonsUnsentIntent(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	ids := []string{"ua", "ub"}
	ops := make([]migrate.UserOp, len(ids))
	events := make([]migrate.AuditEvent, len(ids))
	for i, id := range ids {
		if _, err := s.Transition(ctx, id, migrate.Op{ID: "seed", To: migrate.PhaseShadow}); err != nil {
			t.Fatal(err)
		}
		ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: "x", To: migrate.PhaseReady}}
		events[i] = migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: migrate.ActorDriver, OpID: "x", Campaign: "unsent", Result: migrate.ResultOK}
	}
	b := batch{s: s.Store, ops: ops, events: events, errs: make([]error, len(ops))}
	b.startApplier()
	for i := range ops {
		b.publish(i) // fewer than intentChunk: the batch intent is not sent
	}
	if len(b.chunk.moves) != len(ops) || len(b.iq) != 0 {
		t.Fatalf("%d moves being filled, %d intents sent; want %d and 0", len(b.chunk.moves), len(b.iq), len(ops))
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	b.abandon(cctx)
	b.stopApplier()
	for i, err := range b.errs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("op %d: %v, want context.Canceled", i, err)
		}
	}
	if n := storedEvents(t, ctx, e.JS, "unsent"); n != 0 {
		t.Errorf("%d events stored for moves never sent", n)
	}
}
