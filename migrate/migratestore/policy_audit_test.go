package migratestore

import (
	"context"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// policyStores opens the policy bucket and the audit log on js.
func policyStores(tb testing.TB, ctx context.Context, js jetstream.JetStream) (*Policies, *Audit) {
	tb.Helper()
	_, audit := campaignStores(tb, ctx, js)
	ps, err := NewPolicies(ctx, js, "", 0)
	if err != nil {
		tb.Fatal(err)
	}
	return ps, audit
}

// policyEvent is the event of a version-policy change of platform by the
// admin ann, from the policy's minimum to minimum.
func policyEvent(at time.Time, cur migrate.VersionPolicy, minimum string) migrate.AuditEvent {
	return migrate.AuditEvent{At: at, Kind: migrate.AuditVersions, Actor: "admin:ann", Step: -1,
		From: cur.Platform + ":" + cur.Minimum, To: "retire below " + minimum, Reason: "old clients", Result: migrate.ResultOK}
}

// TestPolicyAuditedIntentFirst changes version policies with their audit
// written first: a policy saved before audited changes reads and is
// changed; the change is in the log with actor, op id, from and to; a
// repeated op id writes no second event; a refusal writes none; and a
// compare-and-set that loses leaves its intent off the policy's chain,
// which Query drops, while the retry's stands. Two platforms' chains are
// judged apart.
func TestPolicyAuditedIntentFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	ps, audit := policyStores(t, ctx, e.JS)
	// A policy stored before audited changes: no audit link, no op id.
	if _, err := ps.Put(ctx, migrate.VersionPolicy{Platform: "android", Minimum: "1.0"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	retire := func(minimum string) func(migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
		return func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
			next := cur
			next.Minimum = minimum
			return next, policyEvent(now, cur, minimum), nil
		}
	}
	p, wrote, err := ps.ModifyAudited(ctx, audit, "android", "op-1", retire("2.0"))
	if err != nil || !wrote {
		t.Fatalf("op 1: wrote %v, %v", wrote, err)
	}
	if p.Minimum != "2.0" || p.LastOp != "op-1" || p.Audit == 0 {
		t.Fatalf("policy after op 1: %+v", p)
	}
	if got, err := ps.Get(ctx, "android"); err != nil || got.LastOp != "op-1" || got.Audit != p.Audit {
		t.Fatalf("stored policy after op 1: %+v %v", got, err)
	}
	stored := auditStored(t, ctx, e.JS, freezeSubject)

	// A repeat writes no event and changes nothing.
	again, wrote, err := ps.ModifyAudited(ctx, audit, "android", "op-1", retire("3.0"))
	if err != nil || wrote {
		t.Fatalf("repeat of op 1: wrote %v, %v", wrote, err)
	}
	if again.Minimum != "2.0" || again.Audit != p.Audit || again.Revision != p.Revision {
		t.Errorf("a repeated op id changed the policy: %+v", again)
	}
	// A policy that does not validate is refused before its intent.
	if _, _, err := ps.ModifyAudited(ctx, audit, "android", "op-bad", retire("not a version")); err == nil {
		t.Error("an invalid policy was saved")
	}
	if n := auditStored(t, ctx, e.JS, freezeSubject); n != stored {
		t.Errorf("a repeat and a refusal wrote %d events", n-stored)
	}

	// A new platform's first policy (a create), on its own chain.
	if _, _, err := ps.ModifyAudited(ctx, audit, "ios", "op-ios", retire("5.0")); err != nil {
		t.Fatal(err)
	}

	// A compare-and-set that loses (another writer lands between the
	// intent and it) leaves an intent off the chain; the retry's is on it.
	lose := true
	p, _, err = ps.ModifyAudited(ctx, audit, "android", "op-2", func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
		if lose {
			lose = false
			other := cur.Clone()
			other.Notice = "unaudited writer"
			if _, err := ps.Put(ctx, other); err != nil {
				t.Fatal(err)
			}
		}
		return retire("2.5")(cur)
	})
	if err != nil {
		t.Fatal(err)
	}
	if p.Minimum != "2.5" || p.LastOp != "op-2" || p.Notice != "unaudited writer" {
		t.Fatalf("policy after op 2: %+v", p)
	}
	if n := auditStored(t, ctx, e.JS, freezeSubject); n != stored+3 {
		t.Errorf("stream holds %d policy events, want %d: the %d before, ios, the lost intent and its retry", n, stored+3, stored)
	}
	evs, err := audit.Query(ctx, AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"op-1", "op-ios", "op-2"}, opsOf(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if len(evs) == 3 {
		want := migrate.AuditEvent{At: now.Truncate(time.Millisecond), Kind: migrate.AuditVersions, Actor: "admin:ann", OpID: "op-1",
			Step: -1, From: "android:1.0", To: "retire below 2.0", Reason: "old clients", Result: migrate.ResultOK}
		if diff := cmp.Diff(want, evs[0]); diff != "" {
			t.Errorf("policy event (-want +got):\n%s", diff)
		}
	}
}

// TestPolicyIntentNeverLanded: an intent written for a policy whose write
// never went out (the writer died between the two) is dropped by Query,
// whether the platform has a policy (the intent is off its chain) or none
// (no record: no change of it stands).
func TestPolicyIntentNeverLanded(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	ps, audit := policyStores(t, ctx, e.JS)
	now := time.Now().UTC()
	p, _, err := ps.ModifyAudited(ctx, audit, "android", "landed", func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
		cur.Minimum = "2.0"
		return cur, policyEvent(now, cur, "2.0"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The intents of writes that never landed, as a dying writer leaves
	// them: one over the stored policy, one over a platform with none.
	ev := policyEvent(now, p, "3.0")
	ev.OpID = "lost"
	if _, err := audit.intendOn(ctx, policyChain("android"), ev, p.Audit); err != nil {
		t.Fatal(err)
	}
	ev.OpID = "lost-new"
	if _, err := audit.intendOn(ctx, policyChain("ios"), ev, 0); err != nil {
		t.Fatal(err)
	}
	evs, err := audit.Query(ctx, AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"landed"}, opsOf(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// The retry of the lost change, with its op id, lands and is audited.
	if _, _, err := ps.ModifyAudited(ctx, audit, "android", "lost", func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
		cur.Minimum = "3.0"
		return cur, policyEvent(now, cur, "3.0"), nil
	}); err != nil {
		t.Fatal(err)
	}
	if evs, err = audit.Query(ctx, AuditQuery{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"landed", "lost"}, opsOf(evs)); diff != "" {
		t.Errorf("events after the retry (-want +got):\n%s", diff)
	}
}
