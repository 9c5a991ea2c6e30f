package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestCampaignEndToEnd runs a campaign over 3,000 users through the CLI and
// the admin API: create, plan, a refused unconfirmed start, start, progress
// to completion, holds, exemptions, the freeze and the audit log.
func TestCampaignEndToEnd(t *testing.T) {
	const n = 3000
	ta, ctx, cli := startCampaignAgent(t, "pop", n, []string{"android", "ios", "mac"})
	def := `{"name":"spring","filter":{"platforms":["android","ios"]},"steps":[{"target_bp":1000},{"target_bp":3000}],"pace":{"per_minute":1000000}}`
	file := filepath.Join(t.TempDir(), "spring.json")
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("campaign", "create", "-f", file); err != nil || !strings.Contains(out, "draft") {
		t.Fatalf("create: %v\n%s", err, out)
	}
	// Hold one user before the plan: the plan counts it as held back.
	held := ""
	out, err := cli("campaign", "plan", "spring", "-format", "json")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	var p migrate.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatal(err)
	}
	if p.Users != n || p.Ineligible != n/3 || len(p.Steps) != 2 {
		t.Fatalf("plan: %+v", p)
	}
	want := p.Steps[0].Move + p.Steps[1].Move
	for i := range n {
		id := fmt.Sprintf("pop-%04d", i)
		if i%3 != 2 && migrate.Bucket(p.Salt, id) < 1000 {
			held = id
			break
		}
	}
	if out, err := cli("users", "hold", held, "-reason", "vip", "-op", "hold-1"); err != nil || !strings.Contains(out, "held") {
		t.Fatalf("hold: %v\n%s", err, out)
	}
	if _, err := cli("campaign", "start", "spring"); !errors.Is(err, errUsage) {
		t.Fatalf("unconfirmed start: %v", err)
	}
	if out, err := cli("campaign", "start", "spring", "-yes", "-reason", "go"); err != nil || !strings.Contains(out, "running") {
		t.Fatalf("start: %v\n%s", err, out)
	}
	st := waitCampaignState(ctx, t, cli, "spring", migrate.CampaignCompleted)
	sn := ta.a.state.Snapshot()
	if got := sn.Count(migrate.PhaseCloud); got != want-1 {
		t.Errorf("%d users in cloud, want %d (the plan's moves but the held user)", got, want-1)
	}
	if st.HeldBack[migrate.HeldHeld] != 1 {
		t.Errorf("held back %v", st.HeldBack)
	}
	if v := seriesValue(t, ta, `gateway_campaign_held_back_users{campaign="spring",reason="held"}`); v != 1 {
		t.Errorf("gateway_campaign_held_back_users for held = %v, want 1", v)
	}
	if out, err := cli("users", "resume", held, "-reason", "done"); err != nil || !strings.Contains(out, "legacy") {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if out, err := cli("freeze", "on", "-reason", "holiday"); err != nil || !strings.Contains(out, "on=true") {
		t.Fatalf("freeze: %v\n%s", err, out)
	}
	if out, err := cli("users", "exempt", held, "-campaign", "spring", "-reason", "ceo"); err != nil {
		t.Fatalf("exempt: %v\n%s", err, out)
	}
	out, err = cli("audit", "-user", held, "-format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var audit map[string][]migrate.AuditEvent
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range audit["events"] {
		kinds = append(kinds, e.Kind+":"+e.To)
	}
	if strings.Join(kinds, " ") != "transition:held transition:legacy exempt:exempt" {
		t.Errorf("audit of %s: %v", held, kinds)
	}
	out, err = cli("audit", "-campaign", "spring", "-format", "json")
	if err != nil {
		t.Fatal(err)
	}
	audit = nil
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		t.Fatal(err)
	}
	transitions := 0
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditTransition && e.Result == migrate.ResultOK {
			transitions++
			if e.Actor != migrate.ActorDriver || e.OpID == "" || e.Thresholds["target_bp"] == 0 {
				t.Fatalf("transition event lacks its context: %+v", e)
			}
		}
	}
	if transitions != 3*(want-1) {
		t.Errorf("%d transitions audited, want %d", transitions, 3*(want-1))
	}
	// Rollback needs confirmation too, and brings the cohort back to shadow.
	if out, err := cli("campaign", "rollback", "spring", "-yes"); err != nil {
		t.Fatalf("rollback: %v\n%s", err, out)
	}
	for ta.a.state.Snapshot().Count(migrate.PhaseCloud) != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("rollback incomplete: %d in cloud", ta.a.state.Snapshot().Count(migrate.PhaseCloud))
		case <-time.After(50 * time.Millisecond):
		}
	}
	if out, err := cli("campaign", "list"); err != nil || !strings.Contains(out, "spring") {
		t.Errorf("list: %v\n%s", err, out)
	}
}

// campaignCLI runs gateway commands against the test agent, returning what
// they printed on stdout and stderr together.
func campaignCLI(ctx context.Context, ta *testAgent) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", ta.a.adminURL(), "-token", ta.a.adminToken)
		err := run(ctx, args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
}

// startCampaignAgent starts an agent whose campaign driver ticks every 20 ms
// with n users, prefix-0000 and on, each with one device of the platforms
// in turn; it returns the agent, a context bounding the test to two minutes
// and the CLI.
func startCampaignAgent(t *testing.T, prefix string, n int, platforms []string) (*testAgent, context.Context, func(args ...string) (string, error)) {
	t.Helper()
	cfg := agentPorts(t)
	cfg.CampaignTick = 20 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	for i := range n {
		d := migrate.Device{ID: "d", Platform: platforms[i%len(platforms)], ClientVersion: "5.1.0"}
		if _, err := ta.a.store.SeeDevice(ctx, fmt.Sprintf("%s-%04d", prefix, i), d); err != nil {
			t.Fatal(err)
		}
	}
	return ta, ctx, campaignCLI(ctx, ta)
}

// waitCampaignState polls `campaign status NAME -format json` until the
// campaign is in state, and returns that status; it fails the test when ctx
// ends first.
func waitCampaignState(ctx context.Context, t *testing.T, cli func(args ...string) (string, error), name string, state migrate.CampaignState) campaignStatus {
	t.Helper()
	var st campaignStatus
	for st.Campaign.State != state {
		select {
		case <-ctx.Done():
			t.Fatalf("campaign %s not %s: %+v", name, state, st)
		case <-time.After(50 * time.Millisecond):
		}
		out, err := cli("campaign", "status", name, "-format", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
	}
	return st
}
