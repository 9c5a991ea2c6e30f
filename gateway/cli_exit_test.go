package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/migrate"
)

// TestExitCodeSaysWhy checks the documented exit codes and that a usage
// error carrying its own message prints it: before, "-reason is required"
// and "not confirmed (pass -yes ...)" exited 2 with nothing on stderr.
func TestExitCodeSaysWhy(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code int
		say  string
	}{
		{"ok", nil, 0, ""},
		{"bare usage", errUsage, 2, ""},
		{"not confirmed", errNotConfirmed, 2, "gateway: not confirmed (pass -yes when stdin is not a terminal)\n"},
		{"refused", errors.New("campaign not found"), 1, "gateway: campaign not found\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := exitCode(tc.err, &stderr); got != tc.code || stderr.String() != tc.say {
				t.Errorf("exitCode(%v) = %d, %q; want %d, %q", tc.err, got, stderr.String(), tc.code, tc.say)
			}
		})
	}
}

// TestCommandLineErrorsExitTwo runs commands whose command line is wrong
// before any agent is asked: they must be usage errors (exit 2), not
// failures (exit 1), and say why.
func TestCommandLineErrorsExitTwo(t *testing.T) {
	t.Setenv("FERRY_ADDR", "http://127.0.0.1:1")
	t.Setenv("FERRY_TOKEN", "x")
	for _, tc := range []struct {
		name string
		args []string
		say  string
	}{
		{"set-phase without reason", []string{"users", "set-phase", "alice", "shadow"}, "-reason is required"},
		{"bad format", []string{"users", "list", "-format", "yaml"}, "-format must be text or json"},
		{"hold without reason", []string{"users", "hold", "alice"}, "-reason is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			err := run(context.Background(), tc.args, &bytes.Buffer{}, &bytes.Buffer{})
			if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.say) {
				t.Errorf("%v: exit %d, %q; want 2 and %q", tc.args, code, stderr.String(), tc.say)
			}
		})
	}
}

// TestNullDeviceIsNotATerminal: stdin from </dev/null (cron, systemd, CI) is
// a character device, and was taken for a terminal, so a destructive command
// prompted and read EOF instead of asking for -yes.
func TestNullDeviceIsNotATerminal(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Errorf("isTerminal(%s) = true", os.DevNull)
	}
	old := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = old }()
	var stderr bytes.Buffer
	if err := confirm(false, &stderr, "start campaign x"); !errors.Is(err, errNotConfirmed) || stderr.Len() != 0 {
		t.Errorf("confirm with stdin %s = %v, prompt %q; want errNotConfirmed and no prompt", os.DevNull, err, stderr.String())
	}
}

// TestFreezeLine: fields the agent leaves unset are left out, not <nil>.
func TestFreezeLine(t *testing.T) {
	got := freezeLine(map[string]any{"on": true, "reason": nil, "actor": "admin", "since": "2026-11-24T07:27:21Z"})
	if want := "on=true actor=admin since=2026-11-24T07:27:21Z"; got != want {
		t.Errorf("freezeLine = %q, want %q", got, want)
	}
	if got := freezeLine(map[string]any{"on": false}); got != "on=false" {
		t.Errorf("freezeLine(off) = %q", got)
	}
}

// TestPrintStatusNumbersSteps: the step being rolled back is numbered like
// the "step N of M" line above it (it printed the 0-based index), and the
// users held back print by reason, not as a Go map.
func TestPrintStatusNumbersSteps(t *testing.T) {
	rb := 1
	st := campaignStatus{
		Campaign: migrate.Campaign{Name: "spring", State: migrate.CampaignRollingBack, Step: 1, RollbackStep: &rb, Steps: make([]migrate.Step, 3)},
		HeldBack: map[string]int{"gate:device_capability": 1, "held": 2},
	}
	var out bytes.Buffer
	printStatus(&out, st)
	for _, want := range []string{"step 2 of 3", "rolling back step 2 only", "held back gate:device_capability=1,held=2,"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}
