package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestFaultSlowCloud runs the bridge as its own process with its cloud link
// through a faultProxy that holds every chunk for a while in both
// directions (a slow cloud), while alice (legacy) and bob (cloud) stream at
// each other faster than the link turns around. The checker must pass, and
// the bridge's resident memory must stay within a generous bound of what it
// was before the stream: back-pressure, not an unbounded queue.
func TestFaultSlowCloud(t *testing.T) {
	bin := buildGateway(t)
	ta, dir := startCoreAgent(t)
	proxy := newFaultProxy(t, strings.TrimPrefix(strings.TrimSuffix(ta.a.cloudURL(), "/v1/ws"), "ws://"))
	bridgeProc := startProcess(t, bin, bridgeProcessArgs(t, ta, dir, ta.natsURL(), "ws://"+proxy.addr()+"/v1/ws")...)
	why := func() string { return "\nbridge log:\n" + bridgeProc.stderr.String() }

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	ck := newChecker()
	bob := newCloudUser(t, ta, ta.a.cloudURL(), "bob", "alice", ck)

	// Warm up on a fast link so the baseline includes the bridge's
	// steady-state buffers, then slow the link down. The warm-up messages
	// count in the checker like the others.
	ck.pullFrom(flowName("bob", "alice"), alice)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sendCloud(ctx, ck, bob, "alice", 5, 0); err != nil {
		t.Fatal(err)
	}
	if err := sendLegacy(ctx, ck, alice, "alice", "bob", 5, 0); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, within, ck.caughtUp, func() string { return "warm-up: " + ck.String() + why() })
	before := vmRSS(t, bridgeProc.cmd.Process.Pid)

	n, delay := 150, 15*time.Millisecond
	if longFaults() {
		n, delay = 1500, 40*time.Millisecond
	}
	proxy.SetDelay(delay)
	exchange(t, ck, alice, bob, n, 0, func(context.Context) {}, why)
	proxy.SetDelay(0)

	after := vmRSS(t, bridgeProc.cmd.Process.Pid)
	t.Logf("bridge VmRSS: %d KiB before, %d KiB after %d messages each way over a link with %s per chunk", before, after, n, delay)
	// Generous: the Go runtime and the NATS and WebSocket buffers grow a
	// little under load; a queue that grew with the backlog would not stay
	// under twice the start plus 64 MiB.
	if limit := 2*before + 64<<10; after > limit {
		t.Errorf("bridge VmRSS grew from %d KiB to %d KiB (limit %d KiB)%s", before, after, limit, why())
	}
	tallyFault(t, "slow_cloud", 1)
}

// vmRSS reads a process's resident set size, in KiB, from /proc.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read memory from: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kib
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
