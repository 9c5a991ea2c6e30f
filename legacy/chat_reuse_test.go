package legacy

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// TestDeviceKeepsRouteAndStream checks that a device sending a run of
// messages to a user behind a route makes one lookup and opens one chat
// stream for them all; that a kept stream the other end dropped costs a
// fresh one, not the message; and that a route that moved (the peer
// answers not_here) is looked up again and the message delivered where
// the user now is.
func TestDeviceKeepsRouteAndStream(t *testing.T) {
	ctx := testCtx(t)
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _ := newTestDevice(t, auth, snInfo, "alice")

	bridgeHost := newTestHost(t)
	var (
		streams, delivered atomic.Int64
		gone               atomic.Bool
	)
	c := &chatHandler{cfg: ChatConfig{
		Authority: auth.PublicKey(),
		Now:       time.Now,
		Deliver: func(_ context.Context, _ legacywire.Certificate, m legacywire.ChatMessage) legacywire.ChatAck {
			if gone.Load() {
				return refusedAck(m.ID, CodeNotHere, "look the user up again")
			}
			delivered.Add(1)
			return legacywire.ChatAck{ID: m.ID, Status: legacywire.StatusDelivered}
		},
	}, log: componentLogger(nil, "test"), certs: legacywire.NewCertCache(0)}
	for v, id := range map[int]string{2: legacywire.ChatV2ProtocolID, 3: legacywire.ChatV3ProtocolID} {
		bridgeHost.SetStreamHandler(protocol.ID(id), func(s network.Stream) {
			streams.Add(1)
			c.serveFrames(s, v)
		})
	}
	dir := NewDirectory(bridgeHost, certify(t, auth, bridgeHost, "ferry-bridge", legacywire.CapBridge), snInfo)
	publish := func(seq uint64, withdrawn bool) {
		t.Helper()
		if err := dir.PublishRoute(ctx, auth.SignRoute(legacywire.RouteRecord{
			User: "bob", PeerID: bridgeHost.ID().String(), Addrs: []string{bridgeHost.Addrs()[0].String()},
			Seq: seq, NotAfter: time.Now().Add(time.Hour), Withdrawn: withdrawn,
		})); err != nil {
			t.Fatal(err)
		}
	}
	publish(1, false)
	send := func(n int) {
		t.Helper()
		for i := range n {
			if _, ack, err := alice.Send(ctx, "bob", fmt.Sprint("hi ", i)); err != nil || !ack.Delivered() {
				t.Fatalf("send %d: %+v %v", i, ack, err)
			}
		}
	}

	lookups := sn.lookups.Load()
	send(5)
	if got := sn.lookups.Load() - lookups; got != 1 {
		t.Errorf("5 messages to a routed user made %d lookups, want 1", got)
	}
	if got := streams.Load(); got != 1 {
		t.Errorf("5 messages in a row opened %d chat streams, want 1", got)
	}

	// The other end drops the connection: the kept stream is dead, the
	// next message goes out on a fresh one.
	if err := bridgeHost.Network().ClosePeer(alice.cfg.Host.ID()); err != nil {
		t.Fatal(err)
	}
	send(2)
	if got := delivered.Load(); got != 7 {
		t.Errorf("delivered %d, want 7", got)
	}
	if got := streams.Load(); got != 2 {
		t.Errorf("after the connection dropped: %d streams in all, want 2", got)
	}

	// bob's route moves away (withdrawn; bob is on a device of his own):
	// the remembered route answers not_here, the device looks again and
	// delivers to bob's device.
	_, bobBox := newTestDevice(t, auth, snInfo, "bob")
	publish(2, true)
	gone.Store(true)
	lookups = sn.lookups.Load()
	msg, ack, err := alice.Send(ctx, "bob", "where are you")
	if err != nil || !ack.Delivered() {
		t.Fatalf("send after the route moved: %+v %v", ack, err)
	}
	if got := sn.lookups.Load() - lookups; got != 1 {
		t.Errorf("send after the route moved made %d lookups, want 1", got)
	}
	if got := bobBox.all(); len(got) != 1 || got[0].ID != msg.ID {
		t.Errorf("bob's device got %+v, want the message", got)
	}
	// A lookup that names devices is not remembered.
	send(1)
	if got := sn.lookups.Load() - lookups; got != 2 {
		t.Errorf("a second send to bob's devices made %d lookups in all, want 2", got)
	}
}

// TestRouteCache checks what a device remembers of a lookup, and for how
// long: only a live route, at most RouteCacheTTL and never past the
// route's NotAfter; a lookup without one forgets the user.
func TestRouteCache(t *testing.T) {
	now := time.Now()
	route := func(notAfter time.Time, withdrawn bool) Lookup {
		return Lookup{Route: &legacywire.RouteRecord{User: "bob", PeerID: "p", NotAfter: notAfter, Withdrawn: withdrawn}}
	}
	for _, tc := range []struct {
		name  string
		look  Lookup
		at    time.Duration // after now
		found bool
	}{
		{"live route", route(now.Add(time.Hour), false), RouteCacheTTL - time.Millisecond, true},
		{"past the TTL", route(now.Add(time.Hour), false), RouteCacheTTL, false},
		{"past the route's NotAfter", route(now.Add(time.Second), false), time.Second, false},
		{"withdrawn route", route(now.Add(time.Hour), true), 0, false},
		{"devices only", Lookup{Devices: []legacywire.DeviceRecord{{}}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c routeCache
			c.put("bob", tc.look, now)
			if _, ok := c.get("bob", now.Add(tc.at)); ok != tc.found {
				t.Errorf("get = %v, want %v", ok, tc.found)
			}
		})
	}
	var c routeCache
	c.put("bob", route(now.Add(time.Hour), false), now)
	c.put("bob", Lookup{}, now) // the user's route went away
	if _, ok := c.get("bob", now); ok {
		t.Error("a lookup without a route did not forget the remembered one")
	}
}
