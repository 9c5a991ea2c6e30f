package main

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalsStopTheAgent builds the real binary, starts `gateway agent` and
// checks that SIGINT and SIGTERM each stop it cleanly (exit 0) within its
// stop deadline.
func TestSignalsStopTheAgent(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ports := agentPorts(t)
			p := startProcess(t, bin, "agent", "-data-dir", dir, "-stop-timeout", "10s",
				"-listen", ports.Listen, "-admin-listen", ports.AdminListen,
				"-legacy-listen", ports.LegacyListen, "-bridge-listen", ports.BridgeListen)
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if err := p.wait(t, 20*time.Second); err != nil {
				t.Fatalf("agent exit after %s: %v\n%s", sig, err, p.stderr.String())
			}
			if !strings.Contains(p.stderr.String(), "msg=stopped") {
				t.Fatalf("no clean stop in the log:\n%s", p.stderr.String())
			}
		})
	}
}
