package legacy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestPeerLimiterBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	var cut []peer.ID
	l, err := NewPeerLimiter(RateLimit{
		Rate: 2, Burst: 3, MaxPeers: 2, CutAfter: 4,
		OnCut: func(p peer.ID) { cut = append(cut, p) },
		Now:   func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	a, b, c := peer.ID("a"), peer.ID("b"), peer.ID("c")
	for i := range 3 {
		if !l.Allow(a) {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	if l.Allow(a) {
		t.Fatal("request over the burst allowed")
	}
	if !l.Allow(b) {
		t.Fatal("another peer refused while a is over its limit")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if !l.Allow(a) || l.Allow(a) {
		t.Fatal("refill: want exactly one more request after half a second")
	}
	// Three more refusals in a row reach CutAfter (4, counting the one above).
	for range 3 {
		l.Allow(a)
	}
	if len(cut) != 1 || cut[0] != a {
		t.Fatalf("cut = %v, want [a] once", cut)
	}
	if refused, cuts := l.Stats(); refused != 5 || cuts != 1 {
		t.Errorf("Stats = %d refused, %d cut; want 5, 1", refused, cuts)
	}
	// The map is bounded: a third peer evicts the least recently seen (b).
	l.Allow(c)
	if n := l.Tracked(); n != 2 {
		t.Errorf("Tracked = %d, want 2 (MaxPeers)", n)
	}
	if !l.Allow(b) {
		t.Error("evicted peer came back without a full bucket")
	}
}

func TestGaterBlocksUntilExpiry(t *testing.T) {
	g := NewGater(time.Minute)
	now := time.Unix(1000, 0)
	g.now = func() time.Time { return now }
	p := peer.ID("p")
	g.Cut(p)
	if g.InterceptPeerDial(p) || g.InterceptSecured(0, p, nil) {
		t.Fatal("cut peer allowed")
	}
	now = now.Add(time.Minute)
	if !g.InterceptPeerDial(p) {
		t.Error("peer still blocked after its block expired")
	}
	if g.Cuts() != 1 {
		t.Errorf("Cuts = %d, want 1", g.Cuts())
	}
}

// abusiveServer is a supernode host with a gater and per-peer directory
// limits that cut a flooding peer.
func abusiveServer(t *testing.T, auth *Authority) (*Supernode, peer.AddrInfo, *Gater, *PeerLimiter) {
	t.Helper()
	gater := NewGater(time.Minute)
	h, err := NewHost(HostConfig{MaxConns: 128, Gater: gater, LimitLoopback: true, MaxConnsPerIP: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	lim, err := NewPeerLimiter(RateLimit{Rate: 5, Burst: 10, CutAfter: 20, OnCut: gater.Cut})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := NewSupernode(h, SupernodeConfig{Authority: auth.PublicKey(), Limiter: lim})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return sn, addrInfoOf(h), gater, lim
}

func TestDirectoryFloodIsCutOff(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo, gater, lim := abusiveServer(t, auth)
	good, _ := newTestDevice(t, auth, snInfo, "good")
	floodHost := newTestHost(t)
	flood := NewDirectory(floodHost, certify(t, auth, floodHost, "flood"), snInfo)

	var limited, afterCut int
	for i := 0; i < 500 && afterCut < 3; i++ {
		_, err := flood.Lookup(testCtx(t), "good")
		switch {
		case isRefusal(err, legacywire.CodeRateLimited):
			limited++
		case err != nil && gater.Cuts() > 0:
			afterCut++ // connection closed and refused at the gater
		case err != nil:
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	if limited == 0 || afterCut == 0 {
		t.Fatalf("flooder: %d rate_limited refusals, %d failures after the cut; want both > 0", limited, afterCut)
	}
	if !gater.Blocked(floodHost.ID()) {
		t.Error("flooder not blocked at the gater")
	}
	if _, err := flood.Lookup(testCtx(t), "good"); err == nil || isRefusal(err, legacywire.CodeRateLimited) {
		t.Errorf("cut-off peer still served: %v", err)
	}
	if refused, cuts := lim.Stats(); refused == 0 || cuts != 1 {
		t.Errorf("limiter stats: %d refused, %d cuts; want > 0 and 1", refused, cuts)
	}
	// The well-behaved peer kept its own bucket and still works.
	for i := range 5 {
		if _, err := good.Directory().Lookup(testCtx(t), "flood"); err != nil {
			t.Fatalf("good lookup %d after the flood: %v", i, err)
		}
	}
}

func TestChatFloodIsCutOff(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	gater := NewGater(time.Minute)
	h, err := NewHost(HostConfig{MaxConns: 128, Gater: gater, LimitLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	lim, err := NewPeerLimiter(RateLimit{Rate: 5, Burst: 10, CutAfter: 20, OnCut: gater.Cut})
	if err != nil {
		t.Fatal(err)
	}
	box := newInbox()
	target, err := NewDevice(DeviceConfig{
		Host: h, Cert: certify(t, auth, h, "target"), Authority: auth.PublicKey(),
		Supernode: snInfo, OnMessage: box.add, ChatLimiter: lim,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := target.Register(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	good, _ := newTestDevice(t, auth, snInfo, "good")
	floodHost := newTestHost(t)
	floodCert := certify(t, auth, floodHost, "flood")

	// The flooder keeps one chat v2 stream open and writes frames as fast
	// as the acks come back, then opens new streams once the first dies.
	var limited, afterCut int
	for i := 0; i < 500 && afterCut < 3; i++ {
		msg := legacywire.ChatMessage{ID: fmt.Sprintf("flood-%d", i), From: "flood", To: "target", Text: "x"}
		frame := legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg}
		ack, _, err := SendChatFrame(testCtx(t), floodHost, floodCert, addrInfoOf(h), 0, frame)
		switch {
		case err == nil && ack.Code == legacywire.CodeRateLimited:
			limited++
		case err != nil && gater.Cuts() > 0:
			afterCut++
		case err != nil:
			t.Fatalf("flood %d: %v", i, err)
		}
	}
	if limited == 0 || afterCut == 0 {
		t.Fatalf("flooder: %d rate_limited acks, %d failures after the cut; want both > 0", limited, afterCut)
	}
	if !gater.Blocked(floodHost.ID()) {
		t.Error("flooder not blocked")
	}
	_, ack, err := good.Send(testCtx(t), "target", "still here")
	if err != nil || !ack.Delivered() {
		t.Fatalf("good send after the flood: ack %+v, err %v", ack, err)
	}
	select {
	case <-box.got:
	case <-testCtx(t).Done():
		t.Fatal("message of the well-behaved peer not received")
	}
}

// TestLoopbackIsNotExempt shows the per-IP connection cap applying on
// 127.0.0.1 when LimitLoopback is set, and go-libp2p's exemption without it.
func TestLoopbackIsNotExempt(t *testing.T) {
	for _, tc := range []struct {
		name      string
		limit     bool
		wantRefus bool
	}{
		{name: "limited", limit: true, wantRefus: true},
		{name: "default exemption", limit: false, wantRefus: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := NewHost(HostConfig{MaxConns: 128, LimitLoopback: tc.limit, MaxConnsPerIP: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			srv.SetStreamHandler(testProto, func(s network.Stream) {
				_ = legacywire.WriteFrame(s, "ok")
				_ = s.Close()
			})
			var refused int
			for range 5 {
				c := newTestHost(t)
				if err := connectOnce(c, srv); err != nil {
					refused++
				}
			}
			if got := refused > 0; got != tc.wantRefus {
				t.Errorf("%d of 5 connections refused; want refusals: %v", refused, tc.wantRefus)
			}
			if tc.limit && refused != 2 {
				t.Errorf("%d of 5 refused with a cap of 3, want 2", refused)
			}
		})
	}
}

const testProto = "/ferry/test/ok"

// connectOnce connects c to srv and reads one frame of testProto: a
// connection refused at the resource manager or the gater is closed right
// after the handshake, so the read fails.
func connectOnce(c, srv host.Host) error {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := c.Connect(ctx, addrInfoOf(srv)); err != nil {
		return err
	}
	s, err := c.NewStream(ctx, srv.ID(), testProto)
	if err != nil {
		return err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(testTimeout))
	var got string
	if err := legacywire.ReadFrame(bufio.NewReader(s), &got); err != nil {
		return err
	}
	if got != "ok" {
		return errors.New("unexpected answer")
	}
	return nil
}
