package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalsStopTheAgent builds the real binary, starts `gateway agent` and
// checks that SIGINT and SIGTERM each stop it cleanly (exit 0) within its
// stop deadline.
func TestSignalsStopTheAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			ports := agentPorts(t)
			cmd := exec.Command(bin, "agent", "-data-dir", dir, "-stop-timeout", "10s",
				"-listen", ports.Listen, "-admin-listen", ports.AdminListen,
				"-legacy-listen", ports.LegacyListen, "-bridge-listen", ports.BridgeListen)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			running := make(chan bool, 1)
			go func() {
				sc := bufio.NewScanner(stdout)
				found := false
				for sc.Scan() {
					if !found && strings.Contains(sc.Text(), "is running") {
						found = true
						running <- true
					}
				}
				if !found {
					running <- false
				}
			}()
			select {
			case ok := <-running:
				if !ok {
					cmd.Wait()
					t.Fatalf("agent exited before it was running:\n%s", stderr.String())
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Fatal("agent did not start within 60s")
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("agent exit after %s: %v\n%s", sig, err, stderr.String())
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("agent still running 20s after %s", sig)
			}
			if !strings.Contains(stderr.String(), "stopped") {
				t.Fatalf("no clean stop in the log:\n%s", stderr.String())
			}
		})
	}
}
