package main

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// Size of the SIGKILL test (short tier): messages each way and bridge kills.
const (
	killMessages = 120
	killRounds   = 4
	killPace     = 8 * time.Millisecond
)

// TestBridgeSurvivesSIGKILL runs the bridge as its own process beside an
// in-process agent (supernode, cloud, embedded NATS served on loopback) and
// kills it with SIGKILL at random points while alice (legacy) and bob
// (cloud) stream messages at each other. Each side must end up with every
// acknowledged message of the other exactly once, in the order it was sent.
func TestBridgeSurvivesSIGKILL(t *testing.T) {
	bin := buildGateway(t)
	ta, dir := startCoreAgent(t)
	bridgeArgs := bridgeProcessArgs(t, ta, dir, ta.natsURL(), ta.a.cloudURL())
	bridgeProc := startProcess(t, bin, bridgeArgs...)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	ck := newChecker()
	bob := newCloudUser(t, ta, ta.a.cloudURL(), "bob", "alice", ck)

	n, rounds := killMessages, killRounds
	if longFaults() {
		n, rounds = 4*killMessages, 4*killRounds
	}
	exchange(t, ck, alice, bob, n, killPace, func(context.Context) {
		for round := range rounds { // every round, even when the streams are done
			time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
			if err := bridgeProc.cmd.Process.Kill(); err != nil {
				t.Fatalf("kill %d: %v", round, err)
			}
			bridgeProc.wait(t, 10*time.Second)
			bridgeProc = startProcess(t, bin, bridgeArgs...)
		}
		t.Logf("bridge killed with SIGKILL %d times", rounds)
	}, func() string { return "\nbridge log:\n" + bridgeProc.stderr.String() })
	tallyFault(t, "kill_bridge", rounds)
}

// waitAnyRoute waits until a lookup of user resolves to a live route record.
func waitAnyRoute(t *testing.T, p *legacyPhone, user string) {
	t.Helper()
	waitUntil(t, within, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		look, err := p.dir.Lookup(ctx, user)
		return err == nil && look.Route != nil && !look.Route.Withdrawn
	}, func() string { return "no route to " + user })
}

// waitUntil polls cond until it holds, or fails the test with why().
func waitUntil(t *testing.T, d time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
