package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// livePhone is a legacy device that also records the typing and presence
// frames, calls and file offers it gets.
type livePhone struct {
	*versionedPhone
	typing   chan legacywire.Typing
	presence chan legacywire.Presence
	incoming chan *legacy.Call
	offers   chan legacywire.FileOffer
}

func newLivePhone(t *testing.T, ta *testAgent, user string, maxVersion int) *livePhone {
	t.Helper()
	p := &livePhone{typing: make(chan legacywire.Typing, 64), presence: make(chan legacywire.Presence, 64), incoming: make(chan *legacy.Call, 8),
		offers: make(chan legacywire.FileOffer, 8)}
	p.versionedPhone = newVersionedPhoneWith(t, ta, user, maxVersion, func(c *legacy.DeviceConfig) {
		c.OnFileOffer = func(o legacywire.FileOffer) {
			select {
			case p.offers <- o:
			default:
			}
		}
		c.OnCall = func(call *legacy.Call) {
			select {
			case p.incoming <- call:
			default:
			}
		}
		c.OnTyping = func(x legacywire.Typing) {
			select {
			case p.typing <- x:
			default:
			}
		}
		c.OnPresence = func(x legacywire.Presence) {
			select {
			case p.presence <- x:
			default:
			}
		}
	})
	return p
}

// nextTyping waits for a typing frame from user.
func (p *livePhone) nextTyping(t *testing.T, from string) legacywire.Typing {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case x := <-p.typing:
			if x.From == from {
				return x
			}
		case <-timeout:
			t.Fatalf("no typing from %s reached the legacy device", from)
		}
	}
}

// nextPresence waits for user's presence with status.
func (p *livePhone) nextPresence(t *testing.T, user, status string) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case x := <-p.presence:
			if x.User == user && x.Status == status {
				return
			}
		case <-timeout:
			t.Fatalf("%s's presence %s never reached the legacy device", user, status)
		}
	}
}

// nextLive waits for a live frame on d that match accepts.
func (d *cloudDevice) nextLive(t *testing.T, what string, match func(cloudwire.Frame) bool) {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case f, ok := <-d.c.Live():
			if !ok {
				t.Fatalf("cloud connection ended: %v", d.c.Err())
			}
			if match(f) {
				return
			}
		case <-timeout:
			t.Fatalf("no %s reached the cloud device", what)
		}
	}
}

// publishUntilSeen publishes a legacy device's presence until the cloud
// device d sees it: the bridge subscribes to a legacy user's devices once
// it has carried their traffic, which happens asynchronously.
func publishUntilSeen(t *testing.T, p *livePhone, d *cloudDevice, status string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	seen := make(chan struct{})
	go func() {
		d.nextLive(t, p.dev.User()+"'s presence", func(f cloudwire.Frame) bool {
			pr, ok := f.(cloudwire.Presence)
			return ok && pr.User == p.dev.User() && pr.State == status && strings.HasPrefix(pr.Device, "legacy-")
		})
		close(seen)
	}()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := p.dev.PublishPresence(ctx, status); err != nil {
			t.Logf("publish presence: %v", err)
		}
		select {
		case <-seen:
			return
		case <-ctx.Done():
			t.Fatalf("%s's presence %s never reached the cloud", p.dev.User(), status)
		case <-tick.C:
		}
	}
}

// seriesValue reads one series from the agent's /metrics (0 when absent).
func seriesValue(t *testing.T, ta *testAgent, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape(t, ta), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestBridgeTypingAndPresence: a chat v2 legacy user and a cloud user see
// each other type and each other's presence across the boundary; a chat v1
// device gets neither, and nothing fails for it.
func TestBridgeTypingAndPresence(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "cid", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	lia := newLivePhone(t, ta, "lia", 2)
	leo := newLivePhone(t, ta, "leo", 1)
	lia.waitRoute(t, "cid", ta.a.brHost)
	leo.waitRoute(t, "cid", ta.a.brHost)
	cid := dialCloud(t, ta, "cid", "cid-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Both legacy users message cid: they now share a conversation.
	for _, p := range []*livePhone{lia, leo} {
		sent, ack, err := p.dev.Send(ctx, "cid", "hi cid")
		if err != nil || ack.Status != legacywire.StatusDelivered {
			t.Fatalf("send to cid: %+v %v", ack, err)
		}
		for ev, _ := cid.next(t, cloudwire.KindMsg); ev.MsgID != sent.ID; ev, _ = cid.next(t, cloudwire.KindMsg) {
		}
	}
	liaConv := cloudwire.DirectConversationID("lia", "cid")

	// lia types to cid.
	if n, err := lia.dev.SendTyping(ctx, "cid", true); err != nil || n != 1 {
		t.Fatalf("typing to cid: %d devices, %v", n, err)
	}
	cid.nextLive(t, "lia's typing", func(f cloudwire.Frame) bool {
		ty, ok := f.(cloudwire.Typing)
		return ok && ty.User == "lia" && ty.Conv == liaConv && ty.Typing
	})
	// lia's presence reaches cid, as one more device of lia's.
	publishUntilSeen(t, lia, cid, legacywire.PresenceIdle)

	// cid types in the conversation with lia.
	if err := cid.c.SetTyping(ctx, liaConv, true); err != nil {
		t.Fatal(err)
	}
	if ty := lia.nextTyping(t, "cid"); ty.To != "lia" || !ty.Active {
		t.Fatalf("lia got typing %+v", ty)
	}
	// lia watches cid's presence through the bridge.
	if n, err := lia.dev.SubscribePresence(ctx, "cid"); err != nil || n != 1 {
		t.Fatalf("subscribe to cid: %d devices, %v", n, err)
	}
	if err := cid.c.SetPresence(ctx, cloudwire.PresenceIdle); err != nil {
		t.Fatal(err)
	}
	lia.nextPresence(t, "cid", legacywire.PresenceIdle)
	if err := cid.c.SetPresence(ctx, cloudwire.PresenceActive); err != nil {
		t.Fatal(err)
	}
	lia.nextPresence(t, "cid", legacywire.PresenceActive)

	// leo's v1 device: cid's typing is not sent to it (degradation, counted).
	if err := cid.c.SetTyping(ctx, cloudwire.DirectConversationID("leo", "cid"), true); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, ta, `gateway_bridge_items_total{direction="cloud_to_legacy",kind="typing",result="unsupported"}`)
	for _, series := range []string{
		`gateway_bridge_items_total{direction="legacy_to_cloud",kind="typing",result="ok"}`,
		`gateway_bridge_items_total{direction="legacy_to_cloud",kind="presence",result="ok"}`,
		`gateway_bridge_items_total{direction="cloud_to_legacy",kind="typing",result="ok"}`,
		`gateway_bridge_items_total{direction="cloud_to_legacy",kind="presence",result="ok"}`,
		`gateway_bridge_route_decisions_total{kind="typing",path="interop"}`,
		`gateway_bridge_route_decisions_total{kind="presence",path="interop"}`,
	} {
		if seriesValue(t, ta, series) < 1 {
			t.Errorf("%s not counted", series)
		}
	}
	select {
	case x := <-leo.typing:
		t.Fatalf("the v1 device got typing %+v", x)
	case x := <-leo.presence:
		t.Fatalf("the v1 device got presence %+v", x)
	default:
	}
}
