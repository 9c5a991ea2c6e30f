package migratestore

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// freezeSubject is the subject of the freeze's audit events (no campaign,
// no user).
var freezeSubject = auditSubject("", "")

// TestFreezeAuditedIntentFirst turns the freeze on and off with its audit
// written first: a record from before audited freezes reads and is
// changed, a repeated op id writes no second event, and a compare-and-set
// that loses leaves its intent off the freeze's chain, which Query judges
// alongside a campaign's.
func TestFreezeAuditedIntentFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cs, audit := campaignStores(t, ctx, e.JS)
	// A freeze stored before audited freezes: no audit link, no op id.
	if _, err := cs.kv.Put(ctx, freezeKey, []byte(`{"on":true,"reason":"old","actor":"admin"}`)); err != nil {
		t.Fatal(err)
	}
	if f, err := cs.Freeze(ctx); err != nil || !f.On || f.Reason != "old" || f.Audit != 0 || f.LastOp != "" {
		t.Fatalf("old freeze read as %+v %v", f, err)
	}
	if _, err := cs.CreateAudited(ctx, audit, testAuditedCampaign("spring"), migrate.AuditEvent{Kind: migrate.AuditCampaign, Actor: "test", To: "draft", Result: migrate.ResultOK}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	off, err := cs.SetFreezeAudited(ctx, audit, Freeze{On: false, Reason: "done", Actor: "admin:ann", Since: now}, "freeze-1")
	if err != nil {
		t.Fatal(err)
	}
	if off.On || off.LastOp != "freeze-1" || off.Audit == 0 {
		t.Fatalf("freeze after op 1: %+v", off)
	}
	stored := auditStored(t, ctx, e.JS, freezeSubject)

	// A repeat writes no event and changes nothing.
	again, err := cs.SetFreezeAudited(ctx, audit, Freeze{On: true, Reason: "repeat", Actor: "admin:ann", Since: now}, "freeze-1")
	if err != nil {
		t.Fatal(err)
	}
	if again.On || again.Audit != off.Audit {
		t.Errorf("a repeated op id changed the freeze: %+v", again)
	}
	if n := auditStored(t, ctx, e.JS, freezeSubject); n != stored {
		t.Errorf("a repeat wrote %d events", n-stored)
	}

	// A compare-and-set that loses (another writer lands between the
	// intent and it) leaves an intent off the chain; the retry's is on it.
	lose := true
	on, err := cs.modifyFreeze(ctx, audit, "freeze-2", func(cur Freeze) (Freeze, migrate.AuditEvent, error) {
		if lose {
			lose = false
			r, err := cs.getFreeze(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r.Reason = "unaudited writer"
			if _, err := cs.putFreeze(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		return Freeze{On: true, Reason: "holiday", Actor: "admin:ann", Since: now},
			migrate.AuditEvent{At: now, Kind: migrate.AuditFreeze, Actor: "admin:ann", Step: -1, From: onOff(cur.On), To: "on", Result: migrate.ResultOK}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !on.On || on.LastOp != "freeze-2" {
		t.Fatalf("freeze after op 2: %+v", on)
	}
	evs, err := audit.Query(ctx, AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"create-spring", "freeze-1", "freeze-2"}, opsOf(evs)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if n := auditStored(t, ctx, e.JS, freezeSubject); n != stored+2 {
		t.Errorf("stream holds %d freeze events, want %d: the %d before, the lost intent and its retry", n, stored+2, stored)
	}
	if len(evs) == 3 {
		want := migrate.AuditEvent{At: now.Truncate(time.Millisecond), Kind: migrate.AuditFreeze, Actor: "admin:ann", OpID: "freeze-1",
			Step: -1, From: "on", To: "off", Reason: "done", Result: migrate.ResultOK}
		if diff := cmp.Diff(want, evs[1]); diff != "" {
			t.Errorf("freeze event (-want +got):\n%s", diff)
		}
	}
}

// Environment of the child process of TestFreezeAuditSurvivesKill.
const freezeCrashDirEnv = "FERRY_FREEZE_AUDIT_CRASH_DIR"

// TestFreezeAuditSurvivesKill is TestCampaignAuditSurvivesKill for the
// freeze: a child process turns it on and off, op ids numbered, until it
// is killed with SIGKILL at a random moment, several times; after each
// kill the audit log holds exactly the changes that landed (the record's
// LastOp tells which), each once.
func TestFreezeAuditSurvivesKill(t *testing.T) {
	if dir := os.Getenv(freezeCrashDirEnv); dir != "" {
		freezeCrashChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	killLives(t, "TestFreezeAuditSurvivesKill", freezeCrashDirEnv, "freezing", checkFreezeAudit)
}

// checkFreezeAudit checks that the audit log holds exactly the freeze
// changes that landed, each once, and returns how many did.
func checkFreezeAudit(tb testing.TB, ctx context.Context, js jetstream.JetStream) int {
	tb.Helper()
	cs, audit := campaignStores(tb, ctx, js)
	n := landedFreezes(tb, ctx, cs)
	want := []string{}
	for i := range n {
		want = append(want, freezeOp(i))
	}
	evs, err := audit.Query(ctx, AuditQuery{})
	if err != nil {
		tb.Fatal(err)
	}
	if diff := cmp.Diff(want, opsOf(evs)); diff != "" {
		tb.Errorf("landed changes (-) vs audit events (+):\n%s", diff)
	}
	return n
}

// freezeOp is the op id of change i of TestFreezeAuditSurvivesKill's child.
func freezeOp(i int) string { return "freeze-" + strconv.Itoa(i) }

// landedFreezes returns how many of the child's changes landed, from the
// freeze's LastOp.
func landedFreezes(tb testing.TB, ctx context.Context, cs *Campaigns) int {
	tb.Helper()
	f, err := cs.Freeze(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if f.LastOp == "" {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimPrefix(f.LastOp, "freeze-"))
	if err != nil {
		tb.Fatalf("freeze's last op %q", f.LastOp)
	}
	return n + 1
}

// campaignStores opens the campaign bucket and the audit log on js.
func campaignStores(tb testing.TB, ctx context.Context, js jetstream.JetStream) (*Campaigns, *Audit) {
	tb.Helper()
	cs, err := NewCampaigns(ctx, js, "", 0)
	if err != nil {
		tb.Fatal(err)
	}
	audit, err := NewAudit(ctx, js, "", 0)
	if err != nil {
		tb.Fatal(err)
	}
	return cs, audit
}

// freezeCrashChild is the child of TestFreezeAuditSurvivesKill: on the
// engine in dir it goes on from the freeze's last change, turning it on
// and off, one change after another, until it is killed.
func freezeCrashChild(t *testing.T, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := enginetest.StartIn(t, dir)
	cs, audit := campaignStores(t, ctx, e.JS)
	fmt.Println("freezing")
	next := landedFreezes(t, ctx, cs)
	for i := next; i < next+campaignCrashOps; i++ {
		f := Freeze{On: i%2 == 0, Reason: "change " + strconv.Itoa(i), Actor: "test", Since: time.Now()}
		if _, err := cs.SetFreezeAudited(ctx, audit, f, freezeOp(i)); err != nil {
			t.Fatal(err)
		}
	}
	<-ctx.Done()
}
