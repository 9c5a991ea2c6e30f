package legacy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// testTimeout bounds every network exchange in these tests.
const testTimeout = 10 * time.Second

func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// newTestHost returns a real libp2p host on 127.0.0.1, closed at cleanup.
func newTestHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := NewHost(HostConfig{MaxConns: 128})
	if err != nil {
		tb.Fatalf("NewHost: %v", err)
	}
	tb.Cleanup(func() {
		if err := h.Close(); err != nil {
			tb.Errorf("close host: %v", err)
		}
	})
	return h
}

func newTestAuthority(tb testing.TB) *Authority {
	tb.Helper()
	a, err := GenerateAuthority()
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

func addrInfoOf(h host.Host) peer.AddrInfo {
	return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()}
}

// startSupernode runs a supernode trusting auth on its own host until
// cleanup, which checks that Run returns nil.
func startSupernode(tb testing.TB, auth *Authority, cfg SupernodeConfig) (*Supernode, peer.AddrInfo) {
	tb.Helper()
	h := newTestHost(tb)
	cfg.Authority = auth.PublicKey()
	sn, err := NewSupernode(h, cfg)
	if err != nil {
		tb.Fatalf("NewSupernode: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Supernode.Run = %v, want nil", err)
		}
	})
	return sn, addrInfoOf(h)
}

func certify(tb testing.TB, auth *Authority, h host.Host, user string, caps ...string) legacywire.Certificate {
	tb.Helper()
	c, err := auth.Certify(h.ID(), user, "desktop", "6.2.1", caps, time.Hour)
	if err != nil {
		tb.Fatalf("Certify: %v", err)
	}
	return c
}

// inbox collects the messages a device receives.
type inbox struct {
	mu   sync.Mutex
	msgs []legacywire.ChatMessage
	got  chan struct{}
}

func newInbox() *inbox { return &inbox{got: make(chan struct{}, 100)} }

func (b *inbox) add(m legacywire.ChatMessage) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	b.got <- struct{}{}
}

func (b *inbox) all() []legacywire.ChatMessage {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]legacywire.ChatMessage(nil), b.msgs...)
}

// newTestDevice starts and registers a device of user with its own host.
func newTestDevice(tb testing.TB, auth *Authority, sn peer.AddrInfo, user string, caps ...string) (*Device, *inbox) {
	tb.Helper()
	h := newTestHost(tb)
	box := newInbox()
	d, err := NewDevice(DeviceConfig{
		Host:      h,
		Cert:      certify(tb, auth, h, user, caps...),
		Authority: auth.PublicKey(),
		Supernode: sn,
		OnMessage: box.add,
	})
	if err != nil {
		tb.Fatalf("NewDevice: %v", err)
	}
	if err := d.Register(testCtx(tb)); err != nil {
		tb.Fatalf("Register %s: %v", user, err)
	}
	return d, box
}
