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
	cfg := agentPorts(t)
	cfg.CampaignTick = 20 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 3000
	for i := range n {
		platform := []string{"android", "ios", "mac"}[i%3]
		if _, err := ta.a.store.SeeDevice(ctx, fmt.Sprintf("pop-%04d", i), migrate.Device{ID: "d", Platform: platform, ClientVersion: "5.1.0"}); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", ta.a.adminURL(), "-token", ta.a.adminToken)
		err := run(ctx, args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
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
	var st campaignStatus
	for st.Campaign.State != migrate.CampaignCompleted {
		select {
		case <-ctx.Done():
			t.Fatalf("campaign not completed: %+v", st)
		case <-time.After(50 * time.Millisecond):
		}
		out, err := cli("campaign", "status", "spring", "-format", "json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
	}
	sn := ta.a.state.Snapshot()
	if got := sn.Count(migrate.PhaseCloud); got != want-1 {
		t.Errorf("%d users in cloud, want %d (the plan's moves but the held user)", got, want-1)
	}
	if st.HeldBack[migrate.HeldHeld] != 1 {
		t.Errorf("held back %v", st.HeldBack)
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
