package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// drainFor returns every event d gets during wait: what arrived once must
// not arrive again meanwhile. It is not a timing assertion.
func (d *cloudDevice) drainFor(t *testing.T, wait time.Duration) []cloudwire.Event {
	t.Helper()
	var out []cloudwire.Event
	timeout := time.After(wait)
	for {
		select {
		case ev, ok := <-d.c.Events():
			if !ok {
				t.Fatalf("cloud connection ended: %v", d.c.Err())
			}
			out = append(out, ev)
		case <-timeout:
			return out
		}
	}
}

// TestUndeliverableReachesEverySenderDevice: a cloud message to a legacy
// user whose device never comes back expires in the bridge's outbox; its
// cloud sender gets an undeliverable event naming the message, on the
// device connected at the time and on one that connects later (by sync),
// each exactly once, and no notice message in the conversation.
func TestUndeliverableReachesEverySenderDevice(t *testing.T) {
	cfg := agentPorts(t)
	cfg.BridgeOutboxTTL = time.Second
	ta := startAgent(t, t.TempDir(), cfg)
	setPhases(t, ta.admin(), "cleo", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	web := dialCloud(t, ta, "cleo", "cleo-web", 0)
	lena := newLegacyPhone(t, ta, "lena")
	lena.host.Close() // lena's device goes away and never comes back

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	id := uuid.Must(uuid.NewV7()).String()
	ack, err := web.c.Send(ctx, cloudwire.Send{To: "lena", MsgID: id, Text: "still there?"})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, device string, evs []cloudwire.Event) {
		t.Helper()
		n := 0
		for _, ev := range evs {
			switch {
			case ev.Kind == cloudwire.KindUndeliverable:
				n++
				if ev.User != "cleo" || ev.MsgID != id || ev.Conv != ack.Conv || ev.Seq != ack.Seq ||
					ev.From != "cleo" || ev.To != "lena" || ev.Reason != cloudwire.UndeliverableExpired || ev.At.IsZero() {
					t.Fatalf("%s: undeliverable event %+v, want message %s (seq %d) to lena, expired", device, ev, id, ack.Seq)
				}
			case ev.Kind == cloudwire.KindMsg && ev.From != "cleo":
				t.Fatalf("%s: got a message %+v; the undeliverable notice message is gone since v8", device, ev)
			}
		}
		if n != 1 {
			t.Fatalf("%s: %d undeliverable events, want 1: %+v", device, n, evs)
		}
	}

	first, skipped := web.next(t, cloudwire.KindUndeliverable)
	check(t, "cleo-web", append(append(skipped, first), web.drainFor(t, time.Second)...))
	waitUntil(t, within, func() bool {
		return metricValues(t, ta, "gateway_bridge_undeliverable_reports_total")["cloud/ok"] == 1
	}, func() string { return "the report was not counted once" })

	laptop := dialCloud(t, ta, "cleo", "cleo-laptop", 0) // offline when it happened: gets it by sync
	check(t, "cleo-laptop", laptop.drainFor(t, time.Second))
}
