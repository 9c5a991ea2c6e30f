package migratestore

import (
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
)

// TestRevocationAuditedIntentFirst revokes a device with the audit written
// first: the revocation is in the user's log with actor, op id and to; a
// repeated op id returns the signed revocation stored and writes nothing;
// an intent whose write never landed (over the record, or for a device
// never revoked) is dropped by Query, by user and in full.
func TestRevocationAuditedIntentFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	_, audit := policyStores(t, ctx, e.JS)
	rs, err := NewRevocations(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	const peer = "12D3KooWRita"
	revoke := func(signed string) func(Revocation) (Revocation, migrate.AuditEvent, error) {
		return func(cur Revocation) (Revocation, migrate.AuditEvent, error) {
			return Revocation{User: "rita", Signed: []byte(signed)},
				migrate.AuditEvent{At: now, Kind: migrate.AuditRevocation, Actor: "admin:ann", Step: -1, User: "rita", To: "revoked", Reason: "stolen", Result: migrate.ResultOK}, nil
		}
	}
	r, err := rs.RevokeAudited(ctx, audit, peer, "rev-1", revoke(`{"sig":"one"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.LastOp != "rev-1" || r.Audit == 0 || string(r.Signed) != `{"sig":"one"}` {
		t.Fatalf("revocation after op 1: %+v", r)
	}
	userSubject := auditSubject("", "rita")
	stored := auditStored(t, ctx, e.JS, userSubject)
	again, err := rs.RevokeAudited(ctx, audit, peer, "rev-1", revoke(`{"sig":"two"}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(again.Signed) != `{"sig":"one"}` || again.Revision != r.Revision {
		t.Errorf("a repeated op id changed the revocation: %+v", again)
	}
	if n := auditStored(t, ctx, e.JS, userSubject); n != stored {
		t.Errorf("a repeat wrote %d events", n-stored)
	}
	// Intents of writes that never landed.
	ev := migrate.AuditEvent{At: now, Kind: migrate.AuditRevocation, Actor: "admin:ann", OpID: "lost", Step: -1, User: "rita", To: "revoked", Result: migrate.ResultOK}
	if _, err := audit.intendOn(ctx, revocationChain(peer), ev, r.Audit); err != nil {
		t.Fatal(err)
	}
	ev.OpID = "lost-new"
	if _, err := audit.intendOn(ctx, revocationChain("12D3KooWOther"), ev, 0); err != nil {
		t.Fatal(err)
	}
	for _, q := range []AuditQuery{{}, {User: "rita"}} {
		evs, err := audit.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"rev-1"}, opsOf(evs)); diff != "" {
			t.Errorf("query %+v (-want +got):\n%s", q, diff)
		}
		if len(evs) == 1 && (evs[0].Actor != "admin:ann" || evs[0].To != "revoked" || evs[0].User != "rita") {
			t.Errorf("query %+v: event %+v", q, evs[0])
		}
	}
	if _, err := rs.RevokeAudited(ctx, audit, "not/a.peer", "x", revoke("{}")); err == nil {
		t.Error("a peer id with a dot and a slash was accepted")
	}
}
