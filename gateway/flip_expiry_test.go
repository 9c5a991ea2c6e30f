package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestExpiredReportedToLegacySender: a legacy message held while its
// recipient flips, with the cloud unreachable for longer than the queue
// expiry, is dropped and its legacy sender gets a notice naming it.
func TestExpiredReportedToLegacySender(t *testing.T) {
	ta, tb, proxy := startSplitBridge(t, time.Second)
	lars := newLegacyPhone(t, ta, "lars")
	newLegacyPhone(t, ta, "ulla")
	setPhases(t, ta.admin(), "ulla", migrate.PhaseShadow, migrate.PhaseReady)
	waitUntil(t, within, func() bool { return tb.a.bridge.Status().Links[0].State == bridge.LinkConnected },
		func() string { return "the bridge's cloud link never came up" })
	proxy.Cut()
	setPhases(t, ta.admin(), "ulla", migrate.PhaseCloud)
	lars.waitRoute(t, "ulla", tb.a.brHost)

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	msg, ack, err := lars.dev.Send(ctx, "ulla", "hello before the flip ends")
	if err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("send: %+v %v", ack, err)
	}
	select {
	case m := <-lars.recv:
		if m.From != "ulla" || !strings.Contains(m.Text, msg.ID) {
			t.Fatalf("lars got %+v, want the undeliverable notice for %s", m, msg.ID)
		}
	case <-time.After(within):
		t.Fatal("lars was never told")
	}
	proxy.Heal()
}
