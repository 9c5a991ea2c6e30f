package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestBridgeRateLimitsAFloodingPeer: a legacy device that floods the
// bridge with messages for a cloud user (from four goroutines, as fast as
// the bridge answers) is refused rate_limited over -bridge-peer-rate,
// counted in gateway_bridge_rate_limited_total, while another legacy user's
// paced messages to a cloud user all arrive once and in order.
func TestBridgeRateLimitsAFloodingPeer(t *testing.T) {
	cfg := agentPorts(t)
	cfg.BridgePeerRate = 20
	ta := startAgent(t, t.TempDir(), cfg)
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, ta.admin(), "zed", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)

	var mCert legacywire.Certificate
	mallory := newVersionedPhoneWith(t, ta, "mallory", 0, certifyAs(t, ta, "android", "5.0.0", &mCert)).legacyPhone
	carol := newLegacyPhone(t, ta, "carol")
	waitAnyRoute(t, carol, "bob")
	ck := newChecker()
	newCloudUser(t, ta, ta.a.cloudURL(), "bob", "carol", ck)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	floodCtx, stopFlood := context.WithCancel(ctx)
	var st badStats
	var flood sync.WaitGroup
	bridgeAddr := peer.AddrInfo{ID: ta.a.brHost.ID(), Addrs: ta.a.brHost.Addrs()}
	for range 4 {
		flood.Go(func() { floodChat(floodCtx, mallory, mCert, bridgeAddr, "zed", &st) })
	}
	const n = 30
	ck.plan(n)
	err := sendLegacy(ctx, ck, carol, "carol", "bob", n, 30*time.Millisecond)
	// Keep flooding until the limiter has refused something (bounded by
	// ctx): on a slow machine the flood may not pass the rate at first.
	for st.floodRefused.Load() == 0 && floodCtx.Err() == nil {
		sleepCtx(floodCtx, 50*time.Millisecond)
	}
	stopFlood()
	flood.Wait()
	if err != nil {
		t.Fatalf("carol's sends: %v\n%s", err, ck)
	}
	ck.verify(t, time.Minute, 500*time.Millisecond, func() string { return st.String() })
	t.Logf("flood: %s", &st)
	if st.floodRefused.Load() == 0 {
		t.Fatalf("the flood was never refused: %s", &st)
	}
	if got := metricValues(t, ta, "gateway_bridge_rate_limited_total")[""]; got < float64(st.floodRefused.Load()) {
		t.Errorf("gateway_bridge_rate_limited_total = %v, want at least the %d refusals the flooder saw", got, st.floodRefused.Load())
	}
	tally("attacks_refused", int(st.floodRefused.Load()))
}
