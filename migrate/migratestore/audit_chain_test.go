package migratestore

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// TestQueryStopsAtLinkNotOlder: an intent whose previous link is itself
// (a cycle) or a later event (a forward link), made the head of the
// user's chain, fails a query of the user and a query of everything
// with an error naming the chain, instead of looping.
func TestQueryStopsAtLinkNotOlder(t *testing.T) {
	for _, c := range []struct {
		name  string
		ahead uint64 // the previous link, past the intent's own sequence
	}{{"cycle", 0}, {"forward", 50}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := testContext(t)
			e := enginetest.Start(t)
			s := startStore(t, ctx, e.JS, Config{})
			if _, err := s.TransitionAudited(ctx, "cy", migrate.Op{ID: "m1", To: migrate.PhaseShadow, Reason: "manual"},
				migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops", OpID: "m1", Step: -1, To: "shadow", Result: migrate.ResultOK}); err != nil {
				t.Fatal(err)
			}
			stream, err := e.JS.Stream(ctx, s.audit.stream)
			if err != nil {
				t.Fatal(err)
			}
			info, err := stream.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The crafted intent lands at the next sequence.
			seq := info.State.LastSeq + 1
			msg, err := intentMsg(migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops", OpID: "m2", Step: -1,
				To: "held", Result: migrate.ResultOK}, migrate.User{ID: "cy", Phase: migrate.PhaseShadow, Audit: seq + c.ahead})
			if err != nil {
				t.Fatal(err)
			}
			ack, err := e.JS.PublishMsg(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			if ack.Sequence != seq {
				t.Fatalf("crafted intent at %d, want %d", ack.Sequence, seq)
			}
			setAuditHead(t, e.JS, "cy", seq)
			for _, q := range []AuditQuery{{User: "cy"}, {}} {
				_, err := s.audit.Query(ctx, q)
				if err == nil || !strings.Contains(err.Error(), "chain of cy") || !strings.Contains(err.Error(), "not older") {
					t.Errorf("query %+v: %v, want a link not older on the chain of cy", q, err)
				}
			}
		})
	}
}

// TestQueryChainReadsCapped: a user's query reads each batch intent on
// the user's chain from the stream; past maxChainReads it fails with
// ErrChainTooLong naming the chain, at the cap it answers in full; a
// query of everything or by campaign is not capped, even when cut short
// so that it reads the later links.
func TestQueryChainReadsCapped(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{History: checkHistory})
	phases := []migrate.Phase{migrate.PhaseShadow, migrate.PhaseHeld, migrate.PhaseShadow, migrate.PhaseHeld}
	for i, to := range phases {
		auditedRound(t, ctx, s.Store, []string{"cl"}, to, "q", "b"+string(rune('1'+i)))
	}
	// The first move (the record's creation) writes an intent on cl's
	// subject, which the query fetches; each later one a batch intent,
	// read from the stream.
	reads := len(phases) - 1
	saved := maxChainReads
	t.Cleanup(func() { maxChainReads = saved })

	maxChainReads = reads - 1
	_, err := s.audit.Query(ctx, AuditQuery{User: "cl"})
	if !errors.Is(err, ErrChainTooLong) || !strings.Contains(err.Error(), "chain of cl") {
		t.Errorf("query past the cap: %v, want ErrChainTooLong on the chain of cl", err)
	}
	maxChainReads = reads
	evs, err := s.audit.Query(ctx, AuditQuery{User: "cl"})
	if err != nil || len(evs) != len(phases) {
		t.Errorf("query at the cap: %d events, %v; want %d", len(evs), err, len(phases))
	}
	maxChainReads = 0
	evs, err = s.audit.Query(ctx, AuditQuery{})
	if err != nil || len(evs) != len(phases) {
		t.Errorf("query of everything with no reads allowed: %d events, %v; want %d", len(evs), err, len(phases))
	}
	// Queries by campaign or of everything are not capped: cut at one
	// event, they must read the later links from the stream to judge it,
	// and still answer.
	for _, q := range []AuditQuery{{Limit: 1}, {Campaign: "q", Limit: 1}} {
		if evs, err := s.audit.Query(ctx, q); err != nil || len(evs) != 1 {
			t.Errorf("query %+v with no reads allowed: %d events, %v; want 1", q, len(evs), err)
		}
	}
}

// setAuditHead points user's record at audit event seq, as a corrupt
// record (or a crafted one) would.
func setAuditHead(tb testing.TB, js jetstream.JetStream, user string, seq uint64) {
	tb.Helper()
	ctx := testContext(tb)
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := kv.Get(ctx, user)
	if err != nil {
		tb.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		tb.Fatal(err)
	}
	rec["audit"] = seq
	data, err := json.Marshal(rec)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := kv.Update(ctx, user, data, e.Revision()); err != nil {
		tb.Fatal(err)
	}
}
