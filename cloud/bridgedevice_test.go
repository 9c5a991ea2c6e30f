package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestBridgedDeviceSend: a bridge send naming a device of a cloud-home
// user is stored as that user's, from that device, once ActForDevice
// allows it: the recipient gets it, and so does the user's own cloud
// device, as their own sent message; a resend is a duplicate. Refusals
// (the hook says no, no hook, a user session naming a device) write
// nothing.
func TestBridgedDeviceSend(t *testing.T) {
	const legacyDev = "12D3KooWGzBkMkHBnWgHqkfvt9gSjK7PrUB8V5q4TfGqTEBZtC4S"
	f := newFixture(t, func(c *Config) {
		c.ActFor = func(_ context.Context, user string) error {
			if user == "vera" {
				return errors.New("vera is a cloud user")
			}
			return nil
		}
		c.ActForDevice = func(_ context.Context, user, device string) error {
			if user != "vera" || device != legacyDev {
				return errors.New("not vera's legacy device")
			}
			return nil
		}
	})
	ctx := context.Background()
	web := f.dial(t, "vera", "vera-web", 0)
	vera := collect(web)
	walt := collect(f.dial(t, "walt", "walt-web", 0))
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	collect(br)

	id := msgID(t)
	ack, err := br.Send(ctx, cloudwire.Send{As: "vera", Device: legacyDev, To: "walt", MsgID: id, Text: "from my old phone"})
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []*collector{vera, walt} {
		evs := col.waitN(t, 1)
		ev := evs[0]
		if ev.MsgID != id || ev.From != "vera" || ev.FromDevice != legacyDev || ev.To != "walt" {
			t.Errorf("%s got %+v, want vera's message from %s", ev.User, ev, legacyDev)
		}
	}
	again, err := br.Send(ctx, cloudwire.Send{As: "vera", Device: legacyDev, To: "walt", MsgID: id, Text: "from my old phone"})
	if err != nil || !again.Duplicate || again.Seq != ack.Seq {
		t.Errorf("resend = %+v, %v; want a duplicate of seq %d", again, err, ack.Seq)
	}
	page, err := web.History(ctx, cloudwire.History{Conv: ack.Conv, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Msgs) != 1 || page.Msgs[0].MsgID != id {
		t.Errorf("vera's history: %+v, want her message once", page.Msgs)
	}

	before := streamCounts(t, f.svc.store)
	for _, tc := range []struct {
		name string
		c    *Client
		send cloudwire.Send
	}{
		{"device not allowed", br, cloudwire.Send{As: "vera", Device: "12D3KooWother", To: "walt", MsgID: msgID(t), Text: "x"}},
		{"user not allowed", br, cloudwire.Send{As: "walt", Device: legacyDev, To: "vera", MsgID: msgID(t), Text: "x"}},
		{"cloud user without device", br, cloudwire.Send{As: "vera", To: "walt", MsgID: msgID(t), Text: "x"}},
		{"user session naming a device", web, cloudwire.Send{As: "vera", Device: legacyDev, To: "walt", MsgID: msgID(t), Text: "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Send(ctx, tc.send)
			serverError(t, err, cloudwire.CodeForbidden)
		})
	}
	if after := streamCounts(t, f.svc.store); after != before {
		t.Errorf("refused sends wrote: %v -> %v", before, after)
	}
}

// TestBridgedDeviceNoHook: without ActForDevice the service takes no
// send naming a device.
func TestBridgedDeviceNoHook(t *testing.T) {
	f := newFixture(t, nil)
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	collect(br)
	_, err := br.Send(context.Background(), cloudwire.Send{As: "vera", Device: "12D3KooWGzBkMkHBnWgHqkfvt9gSjK7PrUB8V5q4TfGqTEBZtC4S", To: "walt", MsgID: msgID(t), Text: "x"})
	serverError(t, err, cloudwire.CodeForbidden)
}

// TestBridgedDevicePresence: a device the bridge shows for a user is in
// the snapshot of the user's contacts, reaches them live as it goes
// offline, never rings, and goes offline for everyone when the bridge's
// node lease expires.
func TestBridgedDevicePresence(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeLease = testLease })
	ctx := context.Background()
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	alice := &liveCollector{ch: a1.Live()}
	send(t, a1, "bob", "hi") // alice and bob share a conversation

	devs := NewBridgeDevices(f.eng.JS, "test")
	if _, err := devs.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.store.lease.refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if n, alive := f.svc.store.lease.count(), f.svc.store.lease.alive(ctx, "bridge-test"); n != 1 || !alive {
		t.Errorf("nodes counted: %d, bridge alive: %v; want 1 (a bridge is no cloud node) and true", n, alive)
	}
	if err := devs.Set(ctx, "bob", "bob-old-phone", BridgedDevice{ClientVersion: "7.4.1", State: cloudwire.PresenceActive, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	alice.next(t, presenceOf("bob", "bob-old-phone", cloudwire.PresenceActive))
	a2 := f.dial(t, "alice", "a2", 0)
	collect(a2)
	if diff := cmp.Diff([]string{"alice/a1/active", "bob/bob-old-phone/active"}, snapshotOf(t, &liveCollector{ch: a2.Live()})); diff != "" {
		t.Errorf("a2 snapshot (-want +got):\n%s", diff)
	}
	if ring, err := f.svc.calleeDevices(ctx, "bob"); err != nil || len(ring) != 0 {
		t.Errorf("bob's devices a call would ring: %v, %v; want none (a legacy device takes no cloud call)", ring, err)
	}
	var rec deviceRecord
	e, err := f.svc.store.devices.Get(ctx, subjectToken("bob")+"."+subjectToken("bob-old-phone"))
	if err == nil {
		err = json.Unmarshal(e.Value(), &rec)
	}
	if err != nil || rec.Platform != BridgedPlatform || rec.ClientVersion != "7.4.1" || rec.Node != "bridge-test" {
		t.Errorf("device record %+v, %v; want platform legacy, version 7.4.1, node bridge-test", rec, err)
	}

	if err := devs.Set(ctx, "bob", "bob-old-phone", BridgedDevice{ClientVersion: "7.4.1", State: cloudwire.PresenceOffline, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	alice.next(t, presenceOf("bob", "bob-old-phone", cloudwire.PresenceOffline))

	// Shown again, then the bridge stops heartbeating: its lease expires
	// and the cloud marks the device offline.
	if err := devs.Set(ctx, "bob", "bob-old-phone", BridgedDevice{ClientVersion: "7.4.1", State: cloudwire.PresenceActive, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	alice.next(t, presenceOf("bob", "bob-old-phone", cloudwire.PresenceActive))
	if shown, err := devs.Shown(ctx, "bob", "bob-old-phone"); err != nil || !shown {
		t.Errorf("Shown = %v, %v; want true", shown, err)
	}
	alice.next(t, presenceOf("bob", "bob-old-phone", cloudwire.PresenceOffline))
	if shown, err := devs.Shown(ctx, "bob", "bob-old-phone"); err != nil || shown {
		t.Errorf("Shown after the lease expired = %v, %v; want false (the bridge shows it again)", shown, err)
	}
}
