package legacy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// testMesh is n supernodes replicating to each other, each on its own host.
type testMesh struct {
	nodes []*Supernode
	hosts []host.Host
	infos []peer.AddrInfo
	stop  []func() // stops node i's Run and closes its host
}

func startMesh(t *testing.T, auth *Authority, n int) *testMesh {
	t.Helper()
	m := &testMesh{}
	for range n {
		h := newTestHost(t)
		m.hosts = append(m.hosts, h)
		m.infos = append(m.infos, addrInfoOf(h))
	}
	for i, h := range m.hosts {
		var peers []peer.AddrInfo
		for j, info := range m.infos {
			if j != i {
				peers = append(peers, info)
			}
		}
		cert := certify(t, auth, h, "supernode", legacywire.CapSupernode)
		sn, err := NewSupernode(h, SupernodeConfig{Authority: auth.PublicKey(), Peers: peers, Cert: &cert})
		if err != nil {
			t.Fatalf("NewSupernode %d: %v", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- sn.Run(ctx) }()
		stopped := false
		stop := func() {
			if stopped {
				return
			}
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Supernode %d Run = %v", i, err)
			}
			_ = h.Close()
		}
		t.Cleanup(stop)
		m.nodes = append(m.nodes, sn)
		m.stop = append(m.stop, stop)
	}
	return m
}

// waitFor polls cond until it holds or the test context ends: replication is
// asynchronous.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestReplicationSurvivesLosingASupernode(t *testing.T) {
	auth := newTestAuthority(t)
	m := startMesh(t, auth, 3)

	// A device registers at supernode 0 only.
	bob, bobBox := newTestDevice(t, auth, m.infos[0], "bob")
	for i := 1; i < 3; i++ {
		waitFor(t, "bob's record at supernode "+string(rune('0'+i)), func() bool {
			devs, _ := m.nodes[i].Lookup("bob")
			return len(devs) == 1
		})
	}

	// A route published at supernode 1 and a revocation at supernode 2
	// reach every supernode too.
	bridgeHost := newTestHost(t)
	route := auth.SignRoute(legacywire.RouteRecord{User: "carol", PeerID: bridgeHost.ID().String(), Seq: 3, NotAfter: time.Now().Add(time.Hour)})
	if err := NewDirectory(bob.cfg.Host, bob.cfg.Cert, m.infos[1]).PublishRoute(testCtx(t), route); err != nil {
		t.Fatal(err)
	}
	lost, _ := newTestDevice(t, auth, m.infos[2], "dave")
	rev := auth.Revoke(lost.cfg.Cert, "lost")
	if err := NewDirectory(bob.cfg.Host, bob.cfg.Cert, m.infos[2]).Revoke(testCtx(t), rev); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		waitFor(t, "route and revocation everywhere", func() bool {
			devs, r := m.nodes[i].Lookup("dave")
			_, cr := m.nodes[i].Lookup("carol")
			return len(devs) == 0 && m.nodes[i].Revocations().Revoked(lost.cfg.Host.ID().String()) && cr != nil && cr.Seq == 3 && r == nil
		})
	}

	// Supernode 0 goes away. A client that lists it first fails over and
	// still finds bob, carol's route and dave's revocation.
	m.stop[0]()
	aliceHost := newTestHost(t)
	alice, err := NewDevice(DeviceConfig{
		Host: aliceHost, Cert: certify(t, auth, aliceHost, "alice"), Authority: auth.PublicKey(),
		Supernode: m.infos[0], Fallbacks: m.infos[1:],
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Register(testCtx(t)); err != nil {
		t.Fatalf("register with supernode 0 down: %v", err)
	}
	if got := alice.Directory().Supernode().ID; got == m.infos[0].ID {
		t.Error("directory client still prefers the lost supernode")
	}
	look, err := alice.Directory().Lookup(testCtx(t), "bob")
	if err != nil || len(look.Devices) != 1 || look.Devices[0].Cert.PeerID != bob.cfg.Host.ID().String() {
		t.Fatalf("lookup bob after losing supernode 0: %+v, %v", look, err)
	}
	if look, err := alice.Directory().Lookup(testCtx(t), "carol"); err != nil || look.Route == nil {
		t.Errorf("lookup carol: route %v, err %v", look.Route, err)
	}
	if err := NewDirectory(lost.cfg.Host, lost.cfg.Cert, m.infos[1]).Register(testCtx(t)); !isRefusal(err, legacywire.CodeRevoked) {
		t.Errorf("revoked device registering at supernode 1: %v, want revoked", err)
	}
	// And a message still gets through.
	if _, ack, err := alice.Send(testCtx(t), "bob", "hello"); err != nil || !ack.Delivered() {
		t.Fatalf("send after failover: %+v, %v", ack, err)
	}
	select {
	case <-bobBox.got:
	case <-testCtx(t).Done():
		t.Fatal("bob got nothing")
	}
	// Supernode 1's registration of alice reached supernode 2 as well.
	waitFor(t, "alice at supernode 2", func() bool {
		devs, _ := m.nodes[2].Lookup("alice")
		return len(devs) == 1
	})
}

func TestReplicaRefusedFromNonSupernode(t *testing.T) {
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	h := newTestHost(t)
	cert := certify(t, auth, h, "mallory")
	victim := newTestHost(t)
	rec := legacywire.DeviceRecord{
		Cert:    certify(t, auth, victim, "victim"),
		Addrs:   []string{"/ip4/127.0.0.1/tcp/1"},
		Expires: time.Now().Add(time.Minute),
	}
	_, err := NewDirectory(h, cert, snInfo).roundTrip(testCtx(t), legacywire.DirRequest{Op: legacywire.OpReplicate, Cert: &cert, Record: &rec})
	if !isRefusal(err, legacywire.CodeNotSupernode) {
		t.Fatalf("replicate from a device = %v, want not_supernode", err)
	}
	if devs, _ := sn.Lookup("victim"); len(devs) != 0 {
		t.Errorf("record taken from a non-supernode: %+v", devs)
	}

	// A supernode certificate does not make a forged device certificate good.
	scert := certify(t, auth, h, "supernode", legacywire.CapSupernode)
	forged := rec
	forged.Cert.User = "someone-else"
	_, err = NewDirectory(h, scert, snInfo).roundTrip(testCtx(t), legacywire.DirRequest{Op: legacywire.OpReplicate, Cert: &scert, Record: &forged})
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("replicate a forged record = %v, want a refusal", err)
	}
}

func TestSupernodeConfigNeedsCertForPeers(t *testing.T) {
	auth := newTestAuthority(t)
	cfg := SupernodeConfig{Authority: auth.PublicKey(), Peers: []peer.AddrInfo{{ID: "x"}}}
	if err := cfg.Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate without Cert = %v, want ErrInvalidConfig", err)
	}
}
