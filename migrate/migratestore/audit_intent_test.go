package migratestore

import (
	"errors"
	"sync"
	"sync/atomic"

	"encoding/json"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"strconv"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
)

// FuzzIntentMsg checks that an intent decodes to the event it was built
// from (with the user and phase of the record it replaces) and that its
// previous link parses back to the record's Audit, as Query reads them.
func FuzzIntentMsg(f *testing.F) {
	f.Add("alice", "legacy", "c1", "op-1", "because", uint64(0), int64(1764000000000))
	f.Add("b.ob", "shadow", "", "", "quote \" and \\ and \u2028", uint64(1<<63), int64(-1))
	f.Fuzz(func(t *testing.T, user, phase, campaign, opID, reason string, prev uint64, ms int64) {
		cur := migrate.User{ID: user, Phase: migrate.Phase(phase), Audit: prev}
		ev := migrate.AuditEvent{At: time.UnixMilli(ms), Kind: migrate.AuditTransition, Actor: migrate.ActorDriver,
			OpID: opID, Campaign: campaign, To: "ready", Reason: reason, Result: migrate.ResultOK,
			Values: map[string]float64{"actual_bp": 12}}
		msg, err := intentMsg(ev, cur)
		if err != nil {
			if migrate.CheckUserID(user) == nil && (campaign == "" || migrate.CheckCampaignName(campaign) == nil) {
				t.Fatalf("valid names refused: %v", err)
			}
			return
		}
		if msg.Subject != auditSubject(campaign, user) {
			t.Fatalf("subject %q, want %q", msg.Subject, auditSubject(campaign, user))
		}
		var got migrate.AuditEvent
		if err := json.Unmarshal(msg.Data, &got); err != nil {
			t.Fatal(err)
		}
		want := ev
		want.User, want.From, want.At = user, phase, ev.At.UTC().Truncate(time.Millisecond)
		// JSON carries valid UTF-8 only: compare with what it can carry.
		var norm migrate.AuditEvent
		data, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &norm); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(norm, got); diff != "" {
			t.Fatalf("decoded intent differs (-want +got):\n%s", diff)
		}
		link, err := strconv.ParseUint(msg.Header.Get(hdrPrev), 10, 64)
		if err != nil || link != prev {
			t.Fatalf("previous link %q (%v), want %d", msg.Header.Get(hdrPrev), err, prev)
		}
	})
}

// TestTransitionAuditedWritesIntentFirst checks the path of the admin API's
// manual changes: the event is on the user's chain (the record's Audit is
// its sequence, and Query answers it, with the phase moved from), while a
// repeat and a refusal write no event, and a change whose compare-and-set
// lost to another writer is answered once.
func TestTransitionAuditedWritesIntentFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	ev := func(op string, to migrate.Phase) migrate.AuditEvent {
		return migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops@example", OpID: op, Step: -1,
			To: string(to), Reason: "manual", Result: migrate.ResultOK}
	}
	u, err := s.TransitionAudited(ctx, "mia", migrate.Op{ID: "m1", To: migrate.PhaseShadow, Reason: "manual"}, ev("m1", migrate.PhaseShadow))
	if err != nil {
		t.Fatal(err)
	}
	if u.Audit == 0 {
		t.Fatal("the record does not name its intent")
	}
	// A repeat and a refusal (shadow→finalized is illegal) write nothing.
	if _, err := s.TransitionAudited(ctx, "mia", migrate.Op{ID: "m1", To: migrate.PhaseShadow}, ev("m1", migrate.PhaseShadow)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TransitionAudited(ctx, "mia", migrate.Op{ID: "m2", To: migrate.PhaseFinalized}, ev("m2", migrate.PhaseFinalized)); err == nil {
		t.Fatal("shadow→finalized accepted")
	}
	// Two writers race to hold mia: when both read the same revision, both
	// write an intent, one compare-and-set loses, and its retry is refused
	// (already held). Only the winner's event is answered.
	var wg sync.WaitGroup
	var refused atomic.Int32
	for _, op := range []string{"m3", "m4"} {
		wg.Go(func() {
			_, err := s.TransitionAudited(ctx, "mia", migrate.Op{ID: op, To: migrate.PhaseHeld, Reason: "manual"}, ev(op, migrate.PhaseHeld))
			if errors.Is(err, migrate.ErrIllegalTransition) {
				refused.Add(1)
			} else if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if refused.Load() != 1 {
		t.Fatalf("%d of the two holds refused, want 1", refused.Load())
	}
	evs, err := s.audit.Query(ctx, AuditQuery{User: "mia"})
	if err != nil {
		t.Fatal(err)
	}
	cur, err := s.Get(ctx, "mia")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.OpID+" "+e.From+"→"+e.To)
	}
	want := []string{"m1 legacy→shadow", cur.OpID + " shadow→held"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit of mia (-want +got):\n%s", diff)
	}
}

// FuzzBatchIntent checks that a batch intent decodes to the moves it was
// built from, and that any body decodes to lists of one length, with
// distinct users, each event its user's, or to an error.
func FuzzBatchIntent(f *testing.F) {
	f.Add("alice", "bob", uint64(0), uint64(7), "c1", []byte(`{"users":["a"],"prev":[1],"events":[{"user":"a"}]}`))
	f.Add("a", "a", uint64(1), uint64(1), "", []byte(`{"users":["a","a"],"prev":[1,2],"events":[{"user":"a"},{"user":"a"}]}`))
	f.Add("x", "y", uint64(1<<63), uint64(3), "c", []byte(`{"users":[],"prev":[1],"events":[]}`))
	f.Fuzz(func(t *testing.T, u1, u2 string, p1, p2 uint64, campaign string, raw []byte) {
		if b, evs, err := decodeBatchIntent(raw); err == nil {
			if len(b.Prev) != len(b.Users) || len(evs) != len(b.Users) {
				t.Fatalf("lists of %d, %d, %d", len(b.Users), len(b.Prev), len(evs))
			}
			seen := map[string]bool{}
			for i, u := range b.Users {
				if seen[u] || evs[i].User != u {
					t.Fatalf("user %q twice or event %d of %q", u, i, evs[i].User)
				}
				seen[u] = true
				if _, prev, ok, err := batchLink(raw, u); err != nil || !ok || prev != b.Prev[i] {
					t.Fatalf("batchLink(%q) = %d, %v, %v; want %d", u, prev, ok, err, b.Prev[i])
				}
			}
		}
		if u1 == u2 {
			return
		}
		var events []json.RawMessage
		for _, u := range []string{u1, u2} {
			_, data, err := encodeEvent(migrate.AuditEvent{Kind: migrate.AuditTransition, Campaign: campaign, User: u, From: "shadow", To: "ready", Result: migrate.ResultOK})
			if err != nil {
				return // names the log refuses
			}
			events = append(events, data)
		}
		msg, err := batchIntentMsg(campaign, []string{u1, u2}, []uint64{p1, p2}, events)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get(hdrBatch) != batchIntentVersion {
			t.Fatalf("header %q", msg.Header.Get(hdrBatch))
		}
		b, evs, err := decodeBatchIntent(msg.Data)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]uint64{p1, p2}, b.Prev); diff != "" {
			t.Fatalf("links (-want +got):\n%s", diff)
		}
		if evs[0].User != u1 || evs[1].User != u2 || evs[1].Campaign != campaign {
			t.Fatalf("events %+v", evs)
		}
	})
}

// TestQueryUserFollowsBatches checks a query by user against moves made in
// batch intents, which are not on the user's subject: Query finds them by
// following the user's chain, mixed in stream order with the user's own
// events (a manual change, a plain record), and answers a move whose
// compare-and-set lost nothing.
func TestQueryUserFollowsBatches(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cfg := Config{History: checkHistory}
	s := startStore(t, ctx, e.JS, cfg)
	ids := []string{"qa", "qb", "qc"}
	auditedRound(t, ctx, s.Store, ids, migrate.PhaseShadow, "q", "b1")
	if _, err := s.TransitionAudited(ctx, "qa", migrate.Op{ID: "m1", To: migrate.PhaseHeld, Reason: "manual"},
		migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops", OpID: "m1", Step: -1, To: "held", Result: migrate.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if err := s.audit.Record(ctx, migrate.AuditEvent{Kind: migrate.AuditExempt, Actor: "ops", User: "qa", Campaign: "q", Step: -1, Result: migrate.ResultOK}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TransitionAudited(ctx, "qa", migrate.Op{ID: "m2", To: migrate.PhaseShadow, Reason: "manual"},
		migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops", OpID: "m2", Step: -1, To: "shadow", Result: migrate.ResultOK}); err != nil {
		t.Fatal(err)
	}
	// A stale batcher's move of qa loses to the manual changes; qb's lands.
	batcher := staleBatcher(t, ctx, e.JS, s.Store, []string{"qb"}, cfg)
	st := batcher.st
	old, _ := s.st.Get("qa")
	old.Revision, old.Phase, old.OpID = 1, migrate.PhaseShadow, "b1"
	st.Put(old)
	auditedRound(t, ctx, batcher, []string{"qa", "qb"}, migrate.PhaseReady, "q", "b2")

	evs, err := s.audit.Query(ctx, AuditQuery{User: "qa"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		got = append(got, ev.Kind+" "+ev.OpID+" "+ev.From+"→"+ev.To)
	}
	want := []string{"transition b1 legacy→shadow", "transition m1 shadow→held", "exempt  →",
		"transition m2 held→shadow", "transition b2 shadow→ready"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit of qa (-want +got):\n%s", diff)
	}
	evs, err = s.audit.Query(ctx, AuditQuery{User: "qb", Campaign: "q", Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].OpID != "b1" {
		t.Errorf("first event of qb: %+v, want b1", evs)
	}
}

// TestTransitionAuditedLateRetry: a manual change retried after other
// changes of the user (here a driver's batch move, a hold and a resume)
// is refused with ErrConflict and writes nothing: applied again it
// would undo them. The check follows the user's chain through the batch
// intent. A new operation id is a new change.
func TestTransitionAuditedLateRetry(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	manual := func(op string, to migrate.Phase) error {
		_, err := s.TransitionAudited(ctx, "noa", migrate.Op{ID: op, To: to, Reason: "manual"},
			migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops@example", OpID: op, Step: -1, To: string(to), Reason: "manual", Result: migrate.ResultOK})
		return err
	}
	if err := manual("n1", migrate.PhaseShadow); err != nil {
		t.Fatal(err)
	}
	auditedRound(t, ctx, s.Store, []string{"noa"}, migrate.PhaseReady, "late", "drv-1")
	if err := manual("n2", migrate.PhaseHeld); err != nil {
		t.Fatal(err)
	}
	if err := manual("n3", migrate.PhaseReady); err != nil { // resumed
		t.Fatal(err)
	}
	before, err := s.Get(ctx, "noa")
	if err != nil {
		t.Fatal(err)
	}
	// ready→shadow is a legal move: only the operation id tells that this
	// is n1 again.
	if err := manual("n1", migrate.PhaseShadow); !errors.Is(err, migrate.ErrConflict) {
		t.Fatalf("n1 retried after drv-1, n2 and n3: %v, want ErrConflict", err)
	}
	after, err := s.Get(ctx, "noa")
	if err != nil || after.Revision != before.Revision || after.Phase != migrate.PhaseReady {
		t.Fatalf("the late retry changed noa: %+v → %+v (%v)", before, after, err)
	}
	if err := manual("n4", migrate.PhaseShadow); err != nil {
		t.Fatalf("a new operation after the refusal: %v", err)
	}
	evs, err := s.audit.Query(ctx, AuditQuery{User: "noa"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.OpID)
	}
	if diff := cmp.Diff([]string{"n1", "drv-1", "n2", "n3", "n4"}, got); diff != "" {
		t.Errorf("audit of noa (-want +got):\n%s", diff)
	}
}
