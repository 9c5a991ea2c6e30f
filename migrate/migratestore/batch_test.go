package migratestore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
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

	// Repeating the batch writes nothing.
	before, _ := s.Get(ctx, "u00001")
	for i, err := range s.TransitionMany(ctx, ops[:n]) {
		if err != nil {
			t.Fatalf("repeat op %d: %v", i, err)
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
