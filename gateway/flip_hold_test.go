package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/migrate"
)

// TestFlipHoldsWhileCloudUnreachable: the bridge runs in its own agent
// and reaches the cloud through a proxy that is cut when ulla flips to the
// cloud. What lars sends her meanwhile is not refused: the bridge holds it
// durably and acknowledges it, and once the link heals (the cloud answers)
// the hold drains in order, and what lars sends next follows it. ulla's
// cloud device gets every message once, in order.
func TestFlipHoldsWhileCloudUnreachable(t *testing.T) {
	ta, tb, proxy := startSplitBridge(t, 0)
	ulla := newLegacyPhone(t, ta, "ulla")
	lars := newLegacyPhone(t, ta, "lars")
	setPhases(t, ta.admin(), "ulla", migrate.PhaseShadow, migrate.PhaseReady)
	waitDevice(t, ta, "ulla")
	waitUntil(t, within, func() bool { return tb.a.bridge.Status().Links[0].State == bridge.LinkConnected },
		func() string { return "the bridge's cloud link never came up" })

	proxy.Cut()
	setPhases(t, ta.admin(), "ulla", migrate.PhaseCloud)
	lars.waitRoute(t, "ulla", tb.a.brHost)

	ck := newChecker()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Each send is acknowledged although the cloud cannot be reached.
	if err := sendLegacy(ctx, ck, lars, "lars", "ulla", 10, 0); err != nil {
		t.Fatal(err)
	}
	ulla.mu.Lock()
	n := len(ulla.got)
	ulla.mu.Unlock()
	if n != 0 {
		t.Fatalf("ulla's legacy device got %d messages while the cloud was cut", n)
	}
	if held := gaugeOrCounter(t, tb.a.reg, "gateway_bridge_flip_held_total"); held != 10 {
		t.Fatalf("the bridge held %v messages, want 10", held)
	}
	proxy.Heal()
	if err := sendLegacy(ctx, ck, lars, "lars", "ulla", 10, 0); err != nil {
		t.Fatal(err)
	}
	newCloudUser(t, ta, ta.a.cloudURL(), "ulla", "lars", ck)
	ck.verify(t, within, 300*time.Millisecond, func() string { return "" })
}

// startSplitBridge starts an agent with the supernode and the cloud, and
// beside it, on the same data directory and NATS, an agent running only
// the bridge, whose cloud link goes through the returned proxy. outboxTTL
// is the bridge's queue expiry (0: the default).
func startSplitBridge(t *testing.T, outboxTTL time.Duration) (ta, tb *testAgent, proxy *faultProxy) {
	t.Helper()
	var dir string
	ta, dir = startCoreAgent(t)
	proxy = newFaultProxy(t, strings.TrimPrefix(strings.TrimSuffix(ta.a.cloudURL(), "/v1/ws"), "ws://"))
	sn := ta.supernode(t)
	addrs, err := peer.AddrInfoToP2pAddrs(&sn)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := agentPorts(t)
	bcfg.Roles = []string{roleBridge}
	bcfg.NatsURL = ta.natsURL()
	bcfg.CloudURL = "ws://" + proxy.addr() + "/v1/ws"
	bcfg.Supernode = addrs[0].String()
	bcfg.BridgeOutboxTTL = outboxTTL
	tb = startAgent(t, dir, bcfg)
	return ta, tb, proxy
}
