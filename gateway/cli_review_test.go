package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestCLIOperatorCommands walks the control plane's commands as an
// operator would, and checks what a review of them found:
//   - the CLI sent no X-Ferry-Actor, so every change was audited as plain
//     "admin" (API.md says the CLI sends $USER); a login name with a dot
//     was refused too;
//   - campaign commands, the freeze and exempt had no -op flag, though the
//     API takes op_id and the docs say a retry with the same id changes
//     and audits nothing;
//   - the plan's text numbered steps from 0 while status and list number
//     them from 1;
//   - POST /v1/admin/freeze without "on" lifted the freeze.
func TestCLIOperatorCommands(t *testing.T) {
	t.Setenv("USER", "ann.lee")
	ta, ctx, cli := startCampaignAgent(t, "op", 30, []string{"android"})
	file := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(file, []byte(`{"name":"c","steps":[{"target_bp":10},{"target_bp":20}],"pace":{"per_minute":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("campaign", "create", "-f", file); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	out, err := cli("campaign", "plan", "c")
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "1 ") || !strings.HasPrefix(lines[3], "2 ") {
		t.Errorf("plan's steps are not numbered 1 and 2 like status (\"step 1 of 2\"):\n%s", out)
	}
	if out, err := cli("campaign", "start", "c", "-yes", "-op", "start-1"); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	// Each command twice: the retry changes and audits nothing.
	for _, args := range [][]string{
		{"campaign", "pause", "c", "-op", "pause-1", "-reason", "look"},
		{"freeze", "on", "-op", "freeze-1", "-reason", "holiday"},
		{"users", "exempt", "op-0001", "-campaign", "c", "-reason", "vip", "-op", "exempt-1"},
	} {
		for range 2 {
			if out, err := cli(args...); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, out)
			}
		}
	}
	if out, err := cli("users", "hold", "op-0002", "-reason", "support ticket"); err != nil {
		t.Fatalf("hold: %v\n%s", err, out)
	}

	// A freeze request without "on" is refused and changes nothing.
	var f map[string]any
	err = ta.admin().do(ctx, http.MethodPost, "/v1/admin/freeze", map[string]string{"reason": "holiday"}, &f)
	var re *remoteError
	if !errors.As(err, &re) || re.Status != http.StatusBadRequest || re.Code != "bad_request" {
		t.Errorf("freeze without on: %v, want 400 bad_request", err)
	}
	if out, err := cli("freeze", "status", "-format", "json"); err != nil || json.Unmarshal([]byte(out), &f) != nil || f["on"] != true {
		t.Errorf("freeze after a request without on: %v\n%s", err, out)
	}

	out, err = cli("audit", "-format", "json")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	var evs struct{ Events []migrate.AuditEvent }
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		t.Fatal(err)
	}
	byOp := map[string]int{}
	for _, ev := range evs.Events {
		if ev.Actor == migrate.ActorDriver {
			continue
		}
		if ev.Actor != "admin:ann.lee" {
			t.Errorf("%s event %s→%s audited as %q, want admin:ann.lee", ev.Kind, ev.From, ev.To, ev.Actor)
		}
		byOp[ev.OpID]++
	}
	for _, op := range []string{"start-1", "pause-1", "freeze-1", "exempt-1"} {
		if byOp[op] != 1 {
			t.Errorf("op %s: %d audit events, want 1 (ops: %v)", op, byOp[op], byOp)
		}
	}

	// The text audit prints "-" for an event not about a step.
	out, err = cli("audit", "-user", "op-0002")
	if err != nil {
		t.Fatalf("audit -user: %v\n%s", err, out)
	}
	if fields := strings.Fields(strings.Split(strings.TrimSpace(out), "\n")[1]); len(fields) < 5 || fields[3] != "-" {
		t.Errorf("a hold's step column is not \"-\":\n%s", out)
	}
}

// TestExemptNeedsCampaign: `users exempt` without -campaign went to the
// agent and came back as an invalid campaign name "" (exit 1); it is a
// command-line error (exit 2) that names the flag.
func TestExemptNeedsCampaign(t *testing.T) {
	t.Setenv("FERRY_ADDR", "http://127.0.0.1:1")
	t.Setenv("FERRY_TOKEN", "x")
	var stderr bytes.Buffer
	err := run(t.Context(), []string{"users", "exempt", "alice", "-reason", "vip"}, &bytes.Buffer{}, &bytes.Buffer{})
	if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "-campaign is required") {
		t.Errorf("exempt without -campaign: exit %d, %q; want 2 and -campaign is required", code, stderr.String())
	}
}

// TestPrintUserDevicesKeepColumns: a device's 52-character peer id, printed
// in the users' table, widened its USER column for every row.
func TestPrintUserDevicesKeepColumns(t *testing.T) {
	u := migrate.User{ID: "sim-3", Phase: migrate.PhaseShadow, Devices: []migrate.Device{{
		ID: "12D3KooWF8Rg9tsA3BNsXV9XrnecyB3ADcdKr59y4sP4bGwYWHKj", Platform: "android", ClientVersion: "6.2.1", LastSeen: time.Now()}}}
	var out bytes.Buffer
	if err := printUsers(&out, "text", u, []migrate.User{u}, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	if !strings.HasPrefix(lines[0], "USER   PHASE") || !strings.HasPrefix(lines[1], "sim-3  shadow") || !strings.Contains(lines[2], "device 12D3KooW") {
		t.Errorf("users table:\n%s", out.String())
	}
}
