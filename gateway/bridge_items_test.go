package main

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// versionedPhone is a legacy device speaking chat up to a given version,
// recording the messages and receipts it gets.
type versionedPhone struct {
	*legacyPhone
	receipts chan legacywire.Receipt
}

func newVersionedPhone(t *testing.T, ta *testAgent, user string, maxVersion int) *versionedPhone {
	t.Helper()
	return newVersionedPhoneWith(t, ta, user, maxVersion, nil)
}

// newVersionedPhoneWith is newVersionedPhone with hook, when not nil,
// adding to the device's configuration (more callbacks) before it starts.
func newVersionedPhoneWith(t *testing.T, ta *testAgent, user string, maxVersion int, hook func(*legacy.DeviceConfig)) *versionedPhone {
	t.Helper()
	h, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var cert legacywire.Certificate
	req := certRequest{PeerID: h.ID().String(), User: user, Platform: "desktop", ClientVersion: "7.4.1"}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert); err != nil {
		t.Fatal(err)
	}
	p := &versionedPhone{
		legacyPhone: &legacyPhone{host: h, recv: make(chan legacywire.ChatMessage, 64)},
		receipts:    make(chan legacywire.Receipt, 64),
	}
	dc := legacy.DeviceConfig{
		Host:           h,
		Cert:           cert,
		Authority:      agentAuthority(t, ta),
		Supernode:      ta.supernode(t),
		MaxChatVersion: maxVersion,
		OnMessage: func(m legacywire.ChatMessage) {
			select {
			case p.recv <- m:
			default:
			}
		},
		OnReceipt: func(r legacywire.Receipt) {
			select {
			case p.receipts <- r:
			default:
			}
		},
	}
	if hook != nil {
		hook(&dc)
	}
	p.dev, err = legacy.NewDevice(dc)
	if err != nil {
		t.Fatal(err)
	}
	p.dir = legacy.NewDirectory(h, cert, ta.supernode(t))
	if err := p.dev.Register(ctx); err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	return p
}

func (p *versionedPhone) nextMsg(t *testing.T) legacywire.ChatMessage {
	t.Helper()
	select {
	case m := <-p.recv:
		return m
	case <-time.After(within):
		t.Fatal("no message reached the legacy device")
	}
	return legacywire.ChatMessage{}
}

func (p *versionedPhone) nextReceipt(t *testing.T) legacywire.Receipt {
	t.Helper()
	select {
	case r := <-p.receipts:
		return r
	case <-time.After(within):
		t.Fatal("no receipt reached the legacy device")
	}
	return legacywire.Receipt{}
}

// nextReceiptEvent returns the next receipt event on d that is not a
// delivered receipt of msgID by skipBy (the legacy device's own delivery ack).
func nextReceiptStatus(t *testing.T, d *cloudDevice, status string) cloudwire.Event {
	t.Helper()
	for {
		ev, _ := d.next(t, cloudwire.KindReceipt)
		if ev.Status == status {
			return ev
		}
	}
}

// waitMetric waits until the agent's /metrics has line with a value of at
// least 1.
func waitMetric(t *testing.T, ta *testAgent, series string) {
	t.Helper()
	waitUntil(t, within, func() bool {
		for _, line := range strings.Split(scrape(t, ta), "\n") {
			if v, ok := strings.CutPrefix(line, series+" "); ok && v != "0" {
				return true
			}
		}
		return false
	}, func() string { return series + " never counted" })
}

// TestBridgeGroupMessage: a cloud group with a legacy-home member. The
// member's chat v2 device gets each group message with its id unchanged and
// the group's name before the text; its read receipt becomes a cloud read
// receipt in the group, by the legacy user.
func TestBridgeGroupMessage(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	for _, u := range []string{"carl", "cleo"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	lena := newVersionedPhone(t, ta, "lena", 2)
	lena.waitRoute(t, "carl", ta.a.brHost)
	carl := dialCloud(t, ta, "carl", "carl-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	gAck, err := carl.c.Group(ctx, cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: uuid.Must(uuid.NewV7()).String(),
		Name: "Team", Members: []string{"cleo", "lena"}})
	if err != nil {
		t.Fatal(err)
	}
	group := gAck.Conv
	var ids []string
	for _, text := range []string{"standup at ten", "bring coffee"} {
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := carl.c.Send(ctx, cloudwire.Send{Conv: group, MsgID: id, Text: text}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		m := lena.nextMsg(t)
		if m.ID != id || m.From != "carl" || m.To != "lena" || m.Text != "[Team] "+text {
			t.Fatalf("lena got %+v, want %s from carl reading %q", m, id, "[Team] "+text)
		}
	}
	// lena's device acked: a delivered receipt in the group.
	dv := nextReceiptStatus(t, carl, cloudwire.StatusDelivered)
	if dv.Conv != group || dv.By != "lena" {
		t.Fatalf("delivered receipt %+v, want by lena in %s", dv, group)
	}
	// lena reads the second message on her v2 device.
	if n, err := lena.dev.SendReceipt(ctx, "carl", ids[1], legacywire.ReceiptRead); err != nil || n != 1 {
		t.Fatalf("read receipt: %d devices, %v", n, err)
	}
	rd := nextReceiptStatus(t, carl, cloudwire.StatusRead)
	if rd.Conv != group || rd.By != "lena" || rd.MsgID != ids[1] {
		t.Fatalf("read receipt %+v, want lena's read of %s in %s", rd, ids[1], group)
	}
	waitMetric(t, ta, `gateway_bridge_items_total{direction="cloud_to_legacy",kind="group_msg",result="ok"}`)
	waitMetric(t, ta, `gateway_bridge_items_total{direction="legacy_to_cloud",kind="receipt",result="ok"}`)
	// Both group messages are in the id map (their conversations), so
	// the gauge read from its bucket counts at least those two.
	if n := seriesValue(t, ta, "gateway_bridge_id_map_entries"); n < float64(len(ids)) {
		t.Fatalf("gateway_bridge_id_map_entries %v, want at least the %d group messages carried", n, len(ids))
	}
}

// TestBridgeReceiptsDegrade: a chat v2 device and a chat v1 device talk to a
// cloud user. The v1 device yields "delivered" only and cannot claim "read";
// the cloud user's cumulative read receipt reaches the v2 sender as a
// per-message read receipt and is not sent to the v1 sender.
func TestBridgeReceiptsDegrade(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "cora", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	vera := newVersionedPhone(t, ta, "vera", 2)
	otto := newVersionedPhone(t, ta, "otto", 1)
	vera.waitRoute(t, "cora", ta.a.brHost)
	otto.waitRoute(t, "cora", ta.a.brHost)
	cora := dialCloud(t, ta, "cora", "cora-phone", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// cora → otto (v1): delivered, and otto's device has no way to say read.
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := cora.c.Send(ctx, cloudwire.Send{To: "otto", MsgID: id, Text: "hi otto"}); err != nil {
		t.Fatal(err)
	}
	if m := otto.nextMsg(t); m.ID != id {
		t.Fatalf("otto got %+v, want %s", m, id)
	}
	if ev := nextReceiptStatus(t, cora, cloudwire.StatusDelivered); ev.MsgID != id || ev.By != "otto" {
		t.Fatalf("receipt %+v, want delivered by otto", ev)
	}
	if _, err := otto.dev.SendReceipt(ctx, "cora", id, legacywire.ReceiptRead); !errors.Is(err, legacy.ErrNotSupported) {
		t.Fatalf("a v1 device sent a read receipt: %v", err)
	}

	// vera (v2) and otto (v1) each send cora a message; cora reads both
	// conversations up to their last message.
	for _, p := range []*versionedPhone{vera, otto} {
		sent, ack, err := p.dev.Send(ctx, "cora", "hello cora")
		if err != nil || ack.Status != legacywire.StatusDelivered {
			t.Fatalf("send to cora: %+v %v", ack, err)
		}
		ev, _ := cora.next(t, cloudwire.KindMsg)
		for ev.MsgID != sent.ID {
			ev, _ = cora.next(t, cloudwire.KindMsg)
		}
		if err := cora.c.Receipt(ctx, cloudwire.Receipt{Conv: ev.Conv, UpTo: ev.Seq, Status: cloudwire.StatusRead}); err != nil {
			t.Fatal(err)
		}
		if p == vera {
			r := vera.nextReceipt(t)
			if r.MsgID != sent.ID || r.Reader != "cora" || r.Sender != "vera" || r.Status != legacywire.ReceiptRead {
				t.Fatalf("vera got receipt %+v, want cora's read of %s", r, sent.ID)
			}
		}
	}
	waitMetric(t, ta, `gateway_bridge_items_total{direction="cloud_to_legacy",kind="receipt",result="unsupported"}`)
	select {
	case r := <-otto.receipts:
		t.Fatalf("the v1 device got a receipt %+v", r)
	default:
	}
	select {
	case r := <-vera.receipts:
		t.Fatalf("vera got a second receipt %+v", r)
	default:
	}
}
