package main

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// buildGateway builds the real binary once per test.
func buildGateway(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// agentProcess is `gateway agent` running as a child process.
type agentProcess struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startProcess starts bin with args and waits until the agent says it is
// running. The process is killed at cleanup if it is still there.
func startProcess(t *testing.T, bin string, args ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{cmd: exec.Command(bin, args...), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	running := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "is running") {
				close(running)
				break
			}
		}
		for sc.Scan() {
		}
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	select {
	case <-running:
		return p
	case err := <-p.done:
		t.Fatalf("agent exited before it was running (%v):\n%s", err, p.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("agent did not start within 60s:\n%s", p.stderr.String())
	}
	return nil
}

// wait waits for the process to exit and returns its error.
func (p *agentProcess) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		return err
	case <-time.After(within):
		p.cmd.Process.Kill()
		t.Fatalf("agent still running after %s:\n%s", within, p.stderr.String())
		return nil
	}
}

// bridgeProcessArgs are the arguments of a bridge running as its own process
// beside the in-process agent ta: the shared data directory, NATS at
// natsURL, the cloud at cloudURL, ta's supernode, fresh loopback ports.
func bridgeProcessArgs(t *testing.T, ta *testAgent, dir, natsURL, cloudURL string) []string {
	t.Helper()
	sn := ta.supernode(t)
	addrs, err := peer.AddrInfoToP2pAddrs(&sn)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"agent", "-data-dir", dir, "-roles", roleBridge,
		"-nats-url", natsURL, "-cloud-url", cloudURL,
		"-supernode", addrs[0].String(), "-admin-listen", freeAddr(t),
		"-bridge-listen", "/ip4/127.0.0.1/tcp/" + freePort(t), "-log-level", "warn"}
}
