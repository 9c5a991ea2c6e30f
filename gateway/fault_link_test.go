package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestFaultLinkCut runs the bridge as its own process with its cloud link
// through a faultProxy, and cuts the link silently (nothing delivered,
// nothing closed) several times while alice (legacy) and bob (cloud) stream
// at each other. After each heal, delivery must resume within a generous
// bound (30 s, a hang detector, not a speed target); the time from heal until
// the backlog moves again is only logged, not asserted. The checker must
// pass at the end.
func TestFaultLinkCut(t *testing.T) {
	bin := buildGateway(t)
	ta, dir := startCoreAgent(t)
	proxy := newFaultProxy(t, strings.TrimPrefix(strings.TrimSuffix(ta.a.cloudURL(), "/v1/ws"), "ws://"))
	bridgeProc := startProcess(t, bin, bridgeProcessArgs(t, ta, dir, ta.natsURL(), "ws://"+proxy.addr()+"/v1/ws")...)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	ck := newChecker()
	bob := newCloudUser(t, ta, ta.a.cloudURL(), "bob", "alice", ck)

	// Short tier: two cuts of 1.5 s. Long tier: more cuts, and one longer
	// than the cloud's 60 s pong wait, so the link is declared dead and
	// redialled through a proxy that is still cut.
	n, pace := 60, 40*time.Millisecond
	cuts := []time.Duration{1500 * time.Millisecond, 1500 * time.Millisecond}
	if longFaults() {
		n = 400
		cuts = []time.Duration{2 * time.Second, 3 * time.Second, 65 * time.Second, time.Second, 4 * time.Second, 2 * time.Second}
	}
	injected := 0
	exchange(t, ck, alice, bob, n, pace, func(ctx context.Context) {
		for i, d := range cuts {
			if !sleepCtx(ctx, 300*time.Millisecond) {
				t.Logf("streams done after %d cuts", i)
				return
			}
			proxy.Cut()
			time.Sleep(d)
			before, pending := ck.received(), ck.pending()
			healed := time.Now()
			proxy.Heal()
			injected++
			if !pending {
				t.Logf("cut %d (%s): nothing was pending at heal", i, d)
				continue
			}
			// Delivery resumes: something more arrives (the backlog or new sends).
			waitUntil(t, 30*time.Second, func() bool { return ck.received() > before || !ck.pending() },
				func() string {
					return "no delivery after heal: " + ck.String() + "\nbridge log:\n" + bridgeProc.stderr.String()
				})
			t.Logf("cut %d (%s): delivery resumed %s after heal", i, d, time.Since(healed).Round(time.Millisecond))
		}
	}, func() string { return "\nbridge log:\n" + bridgeProc.stderr.String() })
	tallyFault(t, "cut_link", injected)
}
