package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/migrate"
)

// TestCampaignWatchAndStepRollback follows a two-step campaign with
// `campaign status -watch -format json` (a stream of JSON lines that ends
// when the campaign completes), then rolls back its last step only through
// the CLI: step 1's users return to shadow, step 0's stay in cloud, the
// campaign pauses at step 1, and every move back is audited.
func TestCampaignWatchAndStepRollback(t *testing.T) {
	const n = 600
	ta, ctx, cli := startCampaignAgent(t, "w", n, []string{"android"})
	file := filepath.Join(t.TempDir(), "c.json")
	def := `{"name":"watched","salt":"s1","steps":[{"target_bp":2000},{"target_bp":5000}],"pace":{"per_minute":1000000}}`
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("campaign", "create", "-f", file); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	if _, err := cli("campaign", "status", "watched", "-watch", "-interval", "1ms"); err == nil {
		t.Fatal("an interval under the minimum was accepted")
	}
	if out, err := cli("campaign", "start", "watched", "-yes", "-reason", "go"); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	out, err := cli("campaign", "status", "watched", "-watch", "-interval", "20ms", "-for", "90s", "-format", "json")
	if err != nil {
		t.Fatalf("watch: %v\n%s", err, out)
	}
	var lines []campaignStatus
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var st campaignStatus
		if err := json.Unmarshal(sc.Bytes(), &st); err != nil {
			t.Fatalf("watch line %d is not one JSON status: %v\n%s", len(lines), err, sc.Text())
		}
		lines = append(lines, st)
	}
	if len(lines) < 2 {
		t.Fatalf("watch printed %d statuses, want a stream", len(lines))
	}
	for i, st := range lines[:len(lines)-1] {
		if st.Campaign.State != migrate.CampaignRunning {
			t.Errorf("status %d: %s before the end of the watch", i, st.Campaign.State)
		}
	}
	if last := lines[len(lines)-1]; last.Campaign.State != migrate.CampaignCompleted {
		t.Fatalf("watch ended at %s, want completed", last.Campaign.State)
	}
	count := func(maxBP int) int {
		k := 0
		for i := range n {
			if migrate.Bucket("s1", fmt.Sprintf("w-%04d", i)) < maxBP {
				k++
			}
		}
		return k
	}
	if got, want := ta.a.state.Snapshot().Count(migrate.PhaseCloud), count(5000); got != want {
		t.Fatalf("%d in cloud after completion, want %d", got, want)
	}

	if _, err := cli("campaign", "rollback", "watched", "-step"); err == nil {
		t.Fatal("unconfirmed step rollback was accepted")
	}
	if out, err := cli("campaign", "rollback", "watched", "-step", "-yes", "-reason", "errors after step 1"); err != nil {
		t.Fatalf("step rollback: %v\n%s", err, out)
	}
	// Paused is not an end for -watch: poll the status instead.
	st := waitCampaignState(ctx, t, cli, "watched", migrate.CampaignPaused)
	sn := ta.a.state.Snapshot()
	if got, want := sn.Count(migrate.PhaseCloud), count(2000); got != want {
		t.Errorf("%d in cloud after the step rollback, want step 0's %d", got, want)
	}
	if got, want := sn.Count(migrate.PhaseShadow), count(5000)-count(2000); got != want {
		t.Errorf("%d in shadow after the step rollback, want step 1's %d", got, want)
	}
	if st.Campaign.Step != 1 {
		t.Errorf("paused at step %d, want 1", st.Campaign.Step)
	}
	out, err = cli("audit", "-campaign", "watched", "-format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var audit map[string][]migrate.AuditEvent
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		t.Fatal(err)
	}
	back, cmds := 0, 0
	for _, e := range audit["events"] {
		switch {
		case e.Kind == migrate.AuditTransition && e.To == string(migrate.PhaseShadow) && strings.Contains(e.OpID, "/rollback/step1/"):
			back++
		case e.Kind == migrate.AuditCampaign && e.To == string(migrate.CampaignRollingBack) && e.Reason == "errors after step 1":
			cmds++
		}
	}
	if back != count(5000)-count(2000) || cmds != 1 {
		t.Errorf("audit: %d moves back and %d rollback commands, want %d and 1", back, cmds, count(5000)-count(2000))
	}
}
