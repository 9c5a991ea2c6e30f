package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestBridgeOwnDeviceReadReceipt: vera is in phase cloud and still reads
// on her chat v2 legacy phone. walt's cloud message reaches the phone as a
// mirror copy; the phone's read receipt crosses the bridge as vera's, from
// that phone: walt and vera's cloud device see it once, a repeat of it
// changes nothing, and the phone gets nothing back.
func TestBridgeOwnDeviceReadReceipt(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	phone := newVersionedPhone(t, ta, "vera", 2)
	flipWithPhone(t, ta, phone, "vera", "walt")
	web := dialCloud(t, ta, "vera", "vera-web", 0)
	walt := dialCloud(t, ta, "walt", "walt-web", 0)
	device := phone.host.ID().String()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	id := uuid.Must(uuid.NewV7()).String()
	if _, err := walt.c.Send(ctx, cloudwire.Send{To: "vera", MsgID: id, Text: "lunch?"}); err != nil {
		t.Fatal(err)
	}
	if m := phone.nextMsg(t); m.ID != id || m.From != "walt" {
		t.Fatalf("vera's phone got %+v, want the mirror copy of %s", m, id)
	}
	for range 2 { // the second is a repeat: the cloud takes it once
		if n, err := phone.dev.SendReceipt(ctx, "walt", id, legacywire.ReceiptRead); err != nil || n != 1 {
			t.Fatalf("read receipt: %d devices, %v", n, err)
		}
	}
	for _, d := range []*cloudDevice{walt, web} {
		rc := nextReceiptStatus(t, d, cloudwire.StatusRead)
		if rc.MsgID != id || rc.By != "vera" || rc.FromDevice != device {
			t.Fatalf("%s got receipt %+v, want vera's read of %s from her phone %s", rc.User, rc, id, device)
		}
	}
	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="receipt",result="ok"}`)
	// Nothing more: no second read receipt in the cloud, none back to the phone.
	timeout := time.After(time.Second)
	for done := false; !done; {
		select {
		case ev := <-walt.c.Events():
			if ev.Kind == cloudwire.KindReceipt && ev.Status == cloudwire.StatusRead {
				t.Fatalf("walt got a second read receipt %+v", ev)
			}
		case r := <-phone.receipts:
			t.Fatalf("vera's phone got a receipt back: %+v", r)
		case <-timeout:
			done = true
		}
	}
}

// TestBridgeOwnDeviceShadowCopy: vera is in phase cloud and writes from
// her chat v2 legacy phone to lars, who is in shadow. The phone's shadow
// copy to lars's mirror is written into the cloud at once as vera's, from
// that phone: her cloud device sees it without waiting for the bridge's
// next read of the phone's history, lars's phone gets it once (the
// cloud's copy is not carried to it again), a resend writes nothing new,
// and lars's shadow summary counts one matching sample.
func TestBridgeOwnDeviceShadowCopy(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	vera := newShadowPhone(t, ta, "vera")
	lars := newShadowPhone(t, ta, "lars")
	waitDevice(t, ta, "vera")
	waitDevice(t, ta, "lars")
	setPhases(t, ta.admin(), "vera", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, ta.admin(), "lars", migrate.PhaseShadow)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	vera.waitMirror(t, ctx, "lars", true)
	waitShadowStats(t, ta, "lars", func(st bridge.ShadowStats) bool { return st.BackfillDone })
	web := dialCloud(t, ta, "vera", "vera-web", 0)
	device := vera.host.ID().String()

	msg := vera.newMsg("lars", "from my old phone, live")
	if !vera.send(t, ctx, msg) {
		t.Fatal("the mirror never got vera's shadow copy")
	}
	if got := lars.nextMsg(t); got.ID != msg.ID || got.From != "vera" {
		t.Fatalf("lars got %+v, want %s", got, msg.ID)
	}
	ev, _ := web.next(t, cloudwire.KindMsg)
	if ev.MsgID != msg.ID || ev.From != "vera" || ev.FromDevice != device || ev.To != "lars" || ev.Text != msg.Text {
		t.Fatalf("vera's cloud device got %+v, want her message %s to lars from her phone %s", ev, msg.ID, device)
	}
	waitMetric(t, ta, `gateway_bridge_own_device_items_total{kind="mirror",result="ok"}`)
	st := waitShadowStats(t, ta, "lars", func(st bridge.ShadowStats) bool { return st.Samples >= 1 })
	if st.Samples != 1 || st.Mismatches != 0 || st.Missing != 0 {
		t.Fatalf("lars's shadow summary %+v, want one matching sample", st)
	}

	// A resend: lars's phone drops it, the mirror counts a repeat, the
	// cloud holds the message once.
	if !vera.send(t, ctx, msg) {
		t.Fatal("the mirror never got the resent copy")
	}
	web.quiet(t, time.Second)
	select {
	case m := <-lars.recv:
		t.Fatalf("lars got a second copy %+v", m)
	default:
	}
	if st, _ := ta.a.bridge.ShadowStats("lars"); st.Samples != 1 || st.Mismatches != 0 || st.Missing != 0 {
		t.Fatalf("after the resend lars's shadow summary is %+v, want one matching sample", st)
	}
}
