package legacy

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
)

// relayNet is a supernode whose host runs a relay guarded by RelayAccess,
// as the agent runs it.
type relayNet struct {
	auth   *Authority
	sn     *Supernode
	relay  peer.AddrInfo
	access *RelayAccess
	stats  *NetStats
}

func newRelayNet(t *testing.T, trusted ...peer.ID) *relayNet {
	t.Helper()
	n := &relayNet{auth: newTestAuthority(t), access: NewRelayAccess(trusted...), stats: NewNetStats()}
	h := newNetHost(t, HostConfig{Relay: &RelayConfig{Access: n.access}, Stats: n.stats})
	sn, err := NewSupernode(h, SupernodeConfig{Authority: n.auth.PublicKey()})
	if err != nil {
		t.Fatalf("NewSupernode: %v", err)
	}
	n.access.UseDevices(sn)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Supernode.Run = %v", err)
		}
	})
	n.sn, n.relay = sn, addrInfoOf(h)
	return n
}

// device registers a certified device of user on its own relay-client host.
func (n *relayNet) device(t *testing.T, user string) (*Device, host.Host) {
	t.Helper()
	h := newNetHost(t, HostConfig{RelayClient: true})
	d, err := NewDevice(DeviceConfig{Host: h, Cert: certify(t, n.auth, h, user), Authority: n.auth.PublicKey(), Supernode: n.relay})
	if err != nil {
		t.Fatalf("NewDevice: %v", err)
	}
	if err := d.Register(testCtx(t)); err != nil {
		t.Fatalf("Register %s: %v", user, err)
	}
	return d, h
}

func (n *relayNet) refused() int64 { return n.stats.Snapshot().CircuitsRefused[RefusedPermission] }

// wantRefused checks the relay's permission_denied count. The relay sends
// its refusal before its tracer counts it, so the client can see the error
// first: wait (bounded) for the count to reach want, then require exactly
// want.
func (n *relayNet) wantRefused(t *testing.T, want int64) {
	t.Helper()
	if want > 0 {
		eventually(t, "relay counts its refusals", func() bool { return n.refused() >= want })
	}
	if got := n.refused(); got != want {
		t.Errorf("permission_denied refusals = %d, want %d", got, want)
	}
}

// dialVia connects from to target through the relay only.
func (n *relayNet) dialVia(ctx context.Context, from host.Host, target peer.ID) error {
	addrs, err := CircuitAddrs([]peer.AddrInfo{n.relay})
	if err != nil {
		return err
	}
	return from.Connect(ctx, peer.AddrInfo{ID: target, Addrs: addrs})
}

// TestRelayAccessReserve: a certified device registered at the supernode
// reserves a slot; an uncertified peer, a peer whose certificate belongs to
// a foreign authority, and a revoked device are refused and counted.
func TestRelayAccessReserve(t *testing.T) {
	n := newRelayNet(t)
	ctx := testCtx(t)
	d, alice := n.device(t, "alice")
	if _, err := Reserve(ctx, alice, n.relay); err != nil {
		t.Fatalf("certified device: Reserve = %v, want a slot", err)
	}
	if got := n.stats.Snapshot().Reservations; got != 1 {
		t.Errorf("reservations = %d, want 1", got)
	}

	stranger := newNetHost(t, HostConfig{RelayClient: true})
	if _, err := Reserve(ctx, stranger, n.relay); err == nil {
		t.Error("uncertified peer: Reserve succeeded, want a refusal")
	}
	n.wantRefused(t, 1)

	// A device of another authority registers nowhere here: refused too.
	foreign := newTestAuthority(t)
	fh := newNetHost(t, HostConfig{RelayClient: true})
	fd, err := NewDevice(DeviceConfig{Host: fh, Cert: certify(t, foreign, fh, "mallory"), Authority: n.auth.PublicKey(), Supernode: n.relay})
	if err != nil {
		t.Fatal(err)
	}
	if err := fd.Register(ctx); err == nil {
		t.Fatal("foreign-authority device registered")
	}
	if _, err := Reserve(ctx, fh, n.relay); err == nil {
		t.Error("foreign-authority device: Reserve succeeded, want a refusal")
	}

	// Revoked: the registration goes, and so does the right to reserve.
	if err := n.sn.Revoke(n.auth.Revoke(d.cfg.Cert, "stolen")); err != nil {
		t.Fatal(err)
	}
	if _, err := Reserve(ctx, alice, n.relay); err == nil {
		t.Error("revoked device: Reserve succeeded, want a refusal")
	}
	n.wantRefused(t, 3)
}

// TestRelayAccessTrusted: our own bridge (a trusted peer, not registered
// as a device) reserves and opens circuits.
func TestRelayAccessTrusted(t *testing.T) {
	bridge := newNetHost(t, HostConfig{RelayClient: true})
	n := newRelayNet(t, bridge.ID())
	ctx := testCtx(t)
	if _, err := Reserve(ctx, bridge, n.relay); err != nil {
		t.Fatalf("trusted bridge: Reserve = %v", err)
	}
	_, bob := n.device(t, "bob")
	if _, err := Reserve(ctx, bob, n.relay); err != nil {
		t.Fatalf("bob: Reserve = %v", err)
	}
	if err := n.dialVia(ctx, bridge, bob.ID()); err != nil {
		t.Fatalf("bridge to bob through the relay: %v", err)
	}
	n.wantRefused(t, 0)
}

// TestRelayAccessConnect: a certified device opens a circuit to another
// one; an uncertified peer cannot reach a device through the relay, and
// nobody reaches a device whose certificate was revoked after it
// reserved.
func TestRelayAccessConnect(t *testing.T) {
	n := newRelayNet(t)
	ctx := testCtx(t)
	bobDev, bob := n.device(t, "bob")
	if _, err := Reserve(ctx, bob, n.relay); err != nil {
		t.Fatalf("bob: Reserve = %v", err)
	}
	_, alice := n.device(t, "alice")
	if err := n.dialVia(ctx, alice, bob.ID()); err != nil {
		t.Fatalf("alice to bob through the relay: %v", err)
	}
	if got := n.stats.Snapshot().CircuitsOpened; got != 1 {
		t.Errorf("circuits opened = %d, want 1", got)
	}

	stranger := newNetHost(t, HostConfig{RelayClient: true})
	if err := n.dialVia(ctx, stranger, bob.ID()); err == nil {
		t.Error("uncertified peer reached bob through the relay")
	}
	n.wantRefused(t, 1)

	if err := n.sn.Revoke(n.auth.Revoke(bobDev.cfg.Cert, "lost phone")); err != nil {
		t.Fatal(err)
	}
	_, carol := n.device(t, "carol")
	if err := n.dialVia(ctx, carol, bob.ID()); err == nil {
		t.Error("carol reached revoked bob through the relay")
	}
	n.wantRefused(t, 2)
}

func TestRelayAccessZeroRefuses(t *testing.T) {
	var a RelayAccess
	id := newNetHost(t, HostConfig{}).ID()
	if a.AllowReserve(id, nil) || a.AllowConnect(id, nil, id) {
		t.Error("zero RelayAccess let a peer in")
	}
	a.Trust(id)
	if !a.AllowReserve(id, nil) || !a.AllowConnect(id, nil, id) {
		t.Error("trusted peer refused")
	}
}
