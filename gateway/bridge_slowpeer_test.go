package main

import (
	"context"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestBridgeSlowDeviceHoldsUpNoOne: carol's legacy device is alive but reads
// each incoming chat stream a second late (well inside the bridge's 5 s
// delivery timeout, so nothing fails or goes to the outbox). bob (cloud)
// sends her 10 messages, all acknowledged by the cloud first; then frank
// (cloud) sends dave (legacy) 20. Every one of dave's must arrive while
// some of carol's are still on their way: the bridge delivers to different
// recipients independently, not one message after another. Then carol gets
// all of hers, once each and in order.
func TestBridgeSlowDeviceHoldsUpNoOne(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	url := ta.a.cloudURL()
	for _, u := range []string{"bob", "frank"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	ck := newChecker()
	const slowN, fastN = 10, 20
	var slow *slowReader
	newVersionedPhoneWith(t, ta, "carol", 0, func(dc *legacy.DeviceConfig) {
		slow = &slowReader{Host: dc.Host}
		slow.release(time.Second) // every chat stream is read a second late
		dc.Host = slow
		dc.OnMessage = func(m legacywire.ChatMessage) { ck.receive(flowName(m.From, "carol"), m.ID) }
	})
	newVersionedPhoneWith(t, ta, "dave", 0, func(dc *legacy.DeviceConfig) {
		dc.OnMessage = func(m legacywire.ChatMessage) { ck.receive(flowName(m.From, "dave"), m.ID) }
	})
	bob := newCloudUser(t, ta, url, "bob", "carol", ck)
	frank := newCloudUser(t, ta, url, "frank", "dave", ck)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ck.plan(slowN + fastN)
	if err := sendCloud(ctx, ck, bob, "carol", slowN, 0); err != nil {
		t.Fatal(err)
	}
	if err := sendCloud(ctx, ck, frank, "dave", fastN, 0); err != nil {
		t.Fatal(err)
	}
	fast, slowFlow := flowName("frank", "dave"), flowName("bob", "carol")
	waitUntil(t, within, func() bool { return ck.caughtUpOn(fast) },
		func() string { return "dave's messages did not all arrive: " + ck.String() })
	_, got := ck.snapshot()
	t.Logf("when dave had all %d of his, carol had %d of her %d", fastN, len(got[slowFlow]), slowN)
	if len(got[slowFlow]) >= slowN {
		t.Errorf("dave's messages arrived only after every one of carol's: her slow device held them up")
	}
	ck.verify(t, time.Minute, 500*time.Millisecond, func() string { return "" })
}
