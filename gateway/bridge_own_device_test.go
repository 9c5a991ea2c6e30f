package main

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/host"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestBridgeOwnLegacyDevice: vera is in phase cloud and still uses her
// chat v3 legacy phone. What the phone sends to walt (a cloud user)
// crosses the bridge as vera, from that phone: walt gets it once, and so
// does vera's own cloud device, as her own sent message; a file then a
// text reach both in that order. The phone shows in the cloud's presence
// as one of vera's devices while the bridge reaches it, and goes offline
// when it goes away; a file walt sends vera is mirrored to the phone,
// which fetches the bytes. Her message to lars, a legacy user, goes phone
// to phone, once; the bridge reads it back from the phone into her cloud
// history, and the cloud's copy to lars is a repeat his phone drops.
func TestBridgeOwnLegacyDevice(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	phone := newFilePhone(t, ta, "vera", 3)
	lars := newLegacyPhone(t, ta, "lars")
	flipWithPhone(t, ta, phone, "vera", "walt")
	web := dialCloud(t, ta, "vera", "vera-web", 0)
	walt := dialCloud(t, ta, "walt", "walt-web", 0)
	waltLive := walt.c.Live()
	device := phone.host.ID().String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	msg, ack, err := phone.dev.Send(ctx, "walt", "from my old phone")
	if err != nil || !ack.Delivered() {
		t.Fatalf("send to walt: %+v, %v", ack, err)
	}
	for _, d := range []*cloudDevice{walt, web} {
		ev, _ := d.next(t, cloudwire.KindMsg)
		if ev.MsgID != msg.ID || ev.From != "vera" || ev.FromDevice != device || ev.To != "walt" || ev.Text != msg.Text {
			t.Fatalf("%s got %+v, want vera's message %s from her phone %s", ev.User, ev, msg.ID, device)
		}
	}
	// The phone was shown online as vera flipped, before walt was her
	// contact: a device of walt's that connects now has it in its
	// snapshot.
	tab := dialCloud(t, ta, "walt", "walt-tab", 0)
	waitSnapshot(t, tab.c.Live(), "vera", device, cloudwire.PresenceActive)

	// A file, then a text: the text waits for the file's transfer.
	path := filepath.Join(t.TempDir(), "photo.jpg")
	data := patterned(120 << 10)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	offer, res, err := phone.dev.OfferFile(ctx, "walt", path)
	if err != nil || res.Offered != 1 {
		t.Fatalf("OfferFile: %+v, %v", res, err)
	}
	text, ack, err := phone.dev.Send(ctx, "walt", "did the photo arrive?")
	if err != nil || !ack.Delivered() {
		t.Fatalf("text after the file: %+v, %v", ack, err)
	}
	for _, d := range []*cloudDevice{walt, web} {
		first, _ := d.next(t, cloudwire.KindMsg)
		second, _ := d.next(t, cloudwire.KindMsg)
		if first.MsgID != offer.ID || first.File == nil || first.FromDevice != device || second.MsgID != text.ID {
			t.Fatalf("%s got %s (file %v) then %s; want the file %s, then the text %s",
				first.User, first.MsgID, first.File, second.MsgID, offer.ID, text.ID)
		}
	}

	// To a legacy user: device to device, once.
	hi, ack, err := phone.dev.Send(ctx, "lars", "hi lars")
	if err != nil || !ack.Delivered() {
		t.Fatalf("send to lars: %+v, %v", ack, err)
	}
	if got := (&versionedPhone{legacyPhone: lars}).nextMsg(t); got.ID != hi.ID || got.From != "vera" {
		t.Fatalf("lars got %+v, want %s", got, hi.ID)
	}
	// The bridge reads it back from the phone's history (at its next
	// probe, made now) into vera's cloud history; the cloud's copy reaches
	// lars's phone through the bridge, which drops it as a repeat and
	// acknowledges it: a delivery receipt, and still one message for lars.
	ta.a.bridge.ProbeOwnDevices("vera")
	ev, _ := web.next(t, cloudwire.KindMsg)
	if ev.MsgID != hi.ID || ev.From != "vera" || ev.FromDevice != device || ev.To != "lars" {
		t.Fatalf("vera's cloud device got %+v, want her message %s to lars from her phone", ev, hi.ID)
	}
	if rc := nextReceiptStatus(t, web, cloudwire.StatusDelivered); rc.MsgID != hi.ID || rc.By != "lars" {
		t.Fatalf("receipt %+v, want lars's delivery of %s", rc, hi.ID)
	}

	// walt's file to vera reaches her phone as an offer (mirrored).
	file, err := cloud.UploadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "walt"),
		cloud.FileUpload{To: "vera", Name: "plan.png", MIME: "image/png", Data: data[:9000]})
	if err != nil {
		t.Fatal(err)
	}
	fid := uuid.Must(uuid.NewV7()).String()
	if _, err := walt.c.Send(ctx, cloudwire.Send{To: "vera", MsgID: fid, Text: "plan.png", File: &file}); err != nil {
		t.Fatal(err)
	}
	if o := phone.nextOffer(t); o.ID != fid || o.From != "walt" || o.Name != "plan.png" {
		t.Fatalf("vera's phone got offer %+v, want walt's file %s", o, fid)
	}
	out := filepath.Join(t.TempDir(), "plan.png")
	if err := phone.dev.AcceptFile(ctx, fid, out); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(out); err != nil || string(got) != string(data[:9000]) {
		t.Fatalf("vera's phone fetched %d bytes, %v", len(got), err)
	}

	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="msg",result="ok"}`)
	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="file",result="ok"}`)
	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="history",result="ok"}`)
	lars.mu.Lock()
	n := len(lars.got)
	lars.mu.Unlock()
	if n != 1 {
		t.Errorf("lars got %d messages, want 1", n)
	}

	phone.host.Close() // the phone goes away without a word
	waitPresence(t, waltLive, "vera", device, cloudwire.PresenceOffline)
}

// TestBridgeOwnLegacyDeviceFinalized: once uma is finalized, her legacy
// phone's sends through the bridge are refused with upgrade_required (a
// clear notice, counted) and nothing reaches the cloud.
func TestBridgeOwnLegacyDeviceFinalized(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	phone := newLegacyPhone(t, ta, "uma")
	waitDevice(t, ta, "uma")
	setPhases(t, ta.admin(), "uma", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud, migrate.PhaseFinalized)
	setPhases(t, ta.admin(), "walt", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	phone.waitRoute(t, "walt", ta.a.brHost)
	walt := dialCloud(t, ta, "walt", "walt-web", 0)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	_, _, err := phone.dev.Send(ctx, "walt", "still here?")
	var refused *legacy.RefusedError
	if !errors.As(err, &refused) || refused.Code != legacywire.CodeUpgradeRequired || refused.Message == "" {
		t.Fatalf("send of a finalized user's phone: %v, want upgrade_required with a notice", err)
	}
	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="msg",result="finalized"}`)
	walt.quiet(t, time.Second)
}

// flipWithPhone moves user, whose legacy phone is recording, and their
// contact peer to the cloud, and waits until the phone's lookup of peer
// reaches the bridge.
func flipWithPhone(t *testing.T, ta *testAgent, phone interface {
	waitRoute(*testing.T, string, host.Host)
}, user, peer string) {
	t.Helper()
	waitDevice(t, ta, user)
	setPhases(t, ta.admin(), user, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, ta.admin(), peer, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	phone.waitRoute(t, peer, ta.a.brHost)
}

// waitPresence waits for a live presence frame of user's device in state.
func waitPresence(t *testing.T, live <-chan cloudwire.Frame, user, device, state string) {
	t.Helper()
	waitLive(t, live, "presence "+state+" of "+user+"/"+device, func(f cloudwire.Frame) bool {
		p, ok := f.(cloudwire.Presence)
		return ok && p.User == user && p.Device == device && p.State == state
	})
}

// waitSnapshot waits for the presence snapshot and requires user's device
// in it, in state.
func waitSnapshot(t *testing.T, live <-chan cloudwire.Frame, user, device, state string) {
	t.Helper()
	var snap cloudwire.PresenceSnapshot
	waitLive(t, live, "presence snapshot", func(f cloudwire.Frame) bool {
		s, ok := f.(cloudwire.PresenceSnapshot)
		snap = s
		return ok
	})
	for _, p := range snap.Presences {
		if p.User == user && p.Device == device && p.State == state {
			return
		}
	}
	t.Fatalf("presence snapshot %+v lacks %s/%s %s", snap.Presences, user, device, state)
}

// waitLive waits for a live frame that match accepts, skipping others.
func waitLive(t *testing.T, live <-chan cloudwire.Frame, what string, match func(cloudwire.Frame) bool) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case f, ok := <-live:
			if !ok {
				t.Fatal("live channel closed")
			}
			if match(f) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s within %s", what, within)
		}
	}
}
