package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestExpiredReportedToCloudSender: a cloud message to a legacy user whose
// device never comes back expires in the bridge's outbox, and its cloud
// sender is told, in their conversation with the recipient, naming the
// message.
func TestExpiredReportedToCloudSender(t *testing.T) {
	cfg := agentPorts(t)
	cfg.BridgeOutboxTTL = time.Second
	ta := startAgent(t, t.TempDir(), cfg)
	setPhases(t, ta.admin(), "cleo", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	cleo := dialCloud(t, ta, "cleo", "cleo-web", 0)
	lena := newLegacyPhone(t, ta, "lena")
	lena.host.Close() // lena's device goes away and never comes back

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := cleo.c.Send(ctx, cloudwire.Send{To: "lena", MsgID: id, Text: "still there?"}); err != nil {
		t.Fatal(err)
	}
	for {
		ev, _ := cleo.next(t, cloudwire.KindMsg)
		if ev.From != "lena" {
			continue // cleo's own copy
		}
		if !strings.Contains(ev.Text, id) || !strings.Contains(ev.Text, "not delivered") {
			t.Fatalf("cleo got %q from lena, want the undeliverable notice for %s", ev.Text, id)
		}
		break
	}
	waitUntil(t, within, func() bool {
		return metricValues(t, ta, "gateway_bridge_undeliverable_reports_total")["cloud/ok"] == 1
	}, func() string { return "the report was not counted" })
}

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
