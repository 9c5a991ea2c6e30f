package migratestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// testAuditedCampaign is a valid draft campaign named name.
func testAuditedCampaign(name string) migrate.Campaign {
	return migrate.Campaign{Name: name, State: migrate.CampaignDraft, LastOp: "create-" + name,
		Steps: []migrate.Step{{TargetBP: 100, MinSoak: migrate.Duration(time.Hour)}}}
}

// exemptChange is a ModifyAudited change exempting user (or lifting the
// exemption when remove), with its event.
func exemptChange(user string, remove bool) func(migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
	return func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		c = c.Clone()
		to := "exempt"
		if remove {
			to = "not exempt"
			delete(c.Exemptions, user)
		} else {
			if c.Exemptions == nil {
				c.Exemptions = map[string]migrate.Exemption{}
			}
			c.Exemptions[user] = migrate.Exemption{Reason: "test"}
		}
		return c, migrate.AuditEvent{Kind: migrate.AuditExempt, Actor: "test", User: user, To: to, Result: migrate.ResultOK}, nil
	}
}

// campaignStored counts the messages the audit stream holds for campaign,
// landed or not.
func campaignStored(tb testing.TB, ctx context.Context, js jetstream.JetStream, campaign string) uint64 {
	tb.Helper()
	return auditStored(tb, ctx, js, auditSubjectPrefix+".c_"+campaign+".>")
}

// auditStored counts the messages the audit stream holds on subjects
// matching filter, landed or not.
func auditStored(tb testing.TB, ctx context.Context, js jetstream.JetStream, filter string) uint64 {
	tb.Helper()
	s, err := js.Stream(ctx, DefaultAuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Msgs
}

// opsOf lists the op ids of evs, in order.
func opsOf(evs []migrate.AuditEvent) []string {
	if len(evs) == 0 {
		return nil // as the kill tests' want is when nothing landed
	}
	ops := make([]string, len(evs))
	for i, ev := range evs {
		ops[i] = ev.OpID
	}
	return ops
}

func TestCampaignModifyAuditedIntentFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cs, audit := campaignStores(t, ctx, e.JS)
	c, err := cs.CreateAudited(ctx, audit, testAuditedCampaign("spring"), migrate.AuditEvent{Kind: migrate.AuditCampaign, Actor: "test", To: "draft", Result: migrate.ResultOK})
	if err != nil {
		t.Fatal(err)
	}
	if c.Audit == 0 {
		t.Fatal("created campaign has no audit link")
	}
	// A second create is refused; its intent is off the chain.
	if _, err := cs.CreateAudited(ctx, audit, testAuditedCampaign("spring"), migrate.AuditEvent{Kind: migrate.AuditCampaign, Actor: "test", To: "draft", Result: migrate.ResultOK}); !errors.Is(err, migrate.ErrCampaignExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := cs.ModifyAudited(ctx, audit, "spring", "op-1", exemptChange("u1", false)); err != nil {
		t.Fatal(err)
	}
	stored := campaignStored(t, ctx, e.JS, "spring")

	// A repeat and a refusal write no event.
	again, err := cs.ModifyAudited(ctx, audit, "spring", "op-1", exemptChange("u1", true))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Exemptions["u1"]; !ok {
		t.Error("a repeated op id changed the record")
	}
	refused := errors.New("refused")
	if _, err := cs.ModifyAudited(ctx, audit, "spring", "op-2", func(migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		return migrate.Campaign{}, migrate.AuditEvent{}, refused
	}); !errors.Is(err, refused) {
		t.Fatalf("refusal: %v", err)
	}
	if n := campaignStored(t, ctx, e.JS, "spring"); n != stored {
		t.Errorf("a repeat and a refusal wrote %d events", n-stored)
	}

	// A compare-and-set that loses (another writer lands between the
	// intent and it) leaves an intent off the chain; the retry's is on it.
	lose := true
	if _, err := cs.ModifyAudited(ctx, audit, "spring", "op-3", func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		if lose {
			lose = false
			other := c.Clone()
			other.Reason = "unaudited writer"
			if _, err := cs.Update(ctx, other); err != nil {
				t.Fatal(err)
			}
		}
		return exemptChange("u1", true)(c)
	}); err != nil {
		t.Fatal(err)
	}
	// op-1 retried after op-3 (a late retry) is refused and writes
	// nothing: applied again, it would undo op-3.
	before := campaignStored(t, ctx, e.JS, "spring")
	if _, err := cs.ModifyAudited(ctx, audit, "spring", "op-1", exemptChange("u1", false)); !errors.Is(err, migrate.ErrConflict) {
		t.Fatalf("op-1 retried after op-3: %v, want ErrConflict", err)
	}
	if n := campaignStored(t, ctx, e.JS, "spring"); n != before {
		t.Errorf("the late retry wrote %d events", n-before)
	}
	evs, err := audit.Query(ctx, AuditQuery{Campaign: "spring"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"create-spring", "op-1", "op-3"}, opsOf(evs)); diff != "" {
		t.Errorf("campaign's events (-want +got):\n%s", diff)
	}
	if n := campaignStored(t, ctx, e.JS, "spring"); n != uint64(len(evs))+2 {
		t.Errorf("stream holds %d events, want the %d answered and 2 dropped", n, len(evs))
	}
	// A query by user judges the user's exemptions on the campaign's chain.
	evs, err = audit.Query(ctx, AuditQuery{User: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"op-1", "op-3"}, opsOf(evs)); diff != "" {
		t.Errorf("user's events (-want +got):\n%s", diff)
	}
}

// Environment of the child process of TestCampaignAuditSurvivesKill.
const campaignCrashDirEnv = "FERRY_CAMPAIGN_AUDIT_CRASH_DIR"

// Sizes of TestCampaignAuditSurvivesKill.
const (
	campaignCrashKills = 4
	campaignCrashOps   = 2000 // per life at most
)

// TestCampaignAuditSurvivesKill changes a campaign record with its audit
// (exempt, un-exempt, other changes) in a child process and kills it with
// SIGKILL at a random moment, several times. The child's changes are one
// after another, op ids numbered, so the record's LastOp tells exactly
// which changes landed: after each kill, the campaign's audit log holds
// exactly those, each once, and none of the change whose write never
// landed.
func TestCampaignAuditSurvivesKill(t *testing.T) {
	if dir := os.Getenv(campaignCrashDirEnv); dir != "" {
		campaignCrashChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	killLives(t, "TestCampaignAuditSurvivesKill", campaignCrashDirEnv, "changing", checkCampaignAudit)
}

// killLives runs test in a child process (env dirEnv naming the engine's
// directory) and kills it once it printed marker, campaignCrashKills
// times; after each kill, check checks the engine's state and returns
// how many changes landed.
func killLives(t *testing.T, test, dirEnv, marker string, check func(testing.TB, context.Context, jetstream.JetStream) int) {
	dir := t.TempDir()
	for life := range campaignCrashKills {
		ctx := testContext(t)
		killChild(t, ctx, test, []string{dirEnv + "=" + dir}, marker, 300*time.Millisecond)
		e := enginetest.StartIn(t, dir)
		n := check(t, ctx, e.JS)
		t.Logf("life %d: %d changes landed and audited", life, n)
		e.Close()
		if t.Failed() {
			return
		}
	}
}

// killChild runs the test named test of this binary in a child process
// with env added, waits until it prints a line starting with marker, and
// kills it with SIGKILL at a random moment within maxDelay after.
func killChild(tb testing.TB, ctx context.Context, test string, env []string, marker string, maxDelay time.Duration) {
	tb.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	started, read := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		once := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), marker) && !once {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-read
		cmd.Wait()
		tb.Fatalf("%s: the child never printed %q", test, marker)
	}
	time.Sleep(time.Duration(rand.Int64N(int64(maxDelay))))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	<-read
	cmd.Wait() // killed: its error says so
}

// crashCampaignName is the campaign TestCampaignAuditSurvivesKill changes.
const crashCampaignName = "killed"

// crashOp is the op id of change i of TestCampaignAuditSurvivesKill's
// child (-1: the create).
func crashOp(i int) string {
	if i < 0 {
		return "create"
	}
	return "op-" + strconv.Itoa(i)
}

// landedOps returns how many of the child's changes landed, from the
// record's LastOp (0 when only the create did, -1 when not even that).
func landedOps(tb testing.TB, ctx context.Context, cs *Campaigns) int {
	tb.Helper()
	c, err := cs.Get(ctx, crashCampaignName)
	if errors.Is(err, migrate.ErrCampaignNotFound) {
		return -1
	}
	if err != nil {
		tb.Fatal(err)
	}
	if c.LastOp == crashOp(-1) {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimPrefix(c.LastOp, "op-"))
	if err != nil {
		tb.Fatalf("record's last op %q", c.LastOp)
	}
	return n + 1
}

// checkCampaignAudit checks that the campaign's audit log holds exactly the
// changes that landed, each once, and returns how many did.
func checkCampaignAudit(tb testing.TB, ctx context.Context, js jetstream.JetStream) int {
	tb.Helper()
	cs, audit := campaignStores(tb, ctx, js)
	n := landedOps(tb, ctx, cs)
	var want []string
	for i := -1; i < n; i++ {
		want = append(want, crashOp(i))
	}
	evs, err := audit.Query(ctx, AuditQuery{Campaign: crashCampaignName})
	if err != nil {
		tb.Fatal(err)
	}
	if diff := cmp.Diff(want, opsOf(evs)); diff != "" {
		tb.Errorf("landed changes (-) vs audit events (+):\n%s", diff)
	}
	return max(n, 0)
}

// campaignCrashChild is the child of TestCampaignAuditSurvivesKill: on the
// engine in dir it creates the campaign if it is not there, then goes on
// from the record's last change, exempting and un-exempting users and
// changing the record's reason (as a state change does), one change after
// another, until it is killed.
func campaignCrashChild(t *testing.T, dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := enginetest.StartIn(t, dir)
	cs, audit := campaignStores(t, ctx, e.JS)
	fmt.Println("changing")
	next := landedOps(t, ctx, cs)
	if next < 0 {
		c := testAuditedCampaign(crashCampaignName)
		c.LastOp = crashOp(-1)
		if _, err := cs.CreateAudited(ctx, audit, c, migrate.AuditEvent{Kind: migrate.AuditCampaign, Actor: "test", To: "draft", Result: migrate.ResultOK}); err != nil {
			t.Fatal(err)
		}
		next = 0
	}
	for i := next; i < next+campaignCrashOps; i++ {
		change := exemptChange("u"+strconv.Itoa(i%7), i%2 == 1)
		if i%5 == 4 {
			change = func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
				c.Reason = "step " + strconv.Itoa(i)
				return c, migrate.AuditEvent{Kind: migrate.AuditCampaign, Actor: "test", From: string(c.State), To: string(c.State), Result: migrate.ResultOK}, nil
			}
		}
		if _, err := cs.ModifyAudited(ctx, audit, crashCampaignName, crashOp(i), change); err != nil {
			t.Fatal(err)
		}
	}
	<-ctx.Done()
}
