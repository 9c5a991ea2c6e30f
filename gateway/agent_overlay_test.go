package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/legacy"
)

// TestAgentsReplicateDirectory runs two agents, each with only its
// supernode, pointed at each other with -supernode-peers: a device that
// registers at one is found by a lookup at the other, in both directions.
func TestAgentsReplicateDirectory(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two agents")
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	// One overlay: both agents share the authority key. The supernode keys
	// are made first so that each agent can name the other's peer ID.
	auth, err := legacy.LoadOrCreateAuthority(filepath.Join(dirA, "authority.key"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dirA, "authority.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dirB, "authority.key"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfgA, cfgB := agentPorts(t), agentPorts(t)
	idA, idB := supernodeID(t, dirA), supernodeID(t, dirB)
	cfgA.Roles, cfgB.Roles = []string{roleSupernode}, []string{roleSupernode}
	cfgA.SupernodePeers = []string{cfgB.LegacyListen + "/p2p/" + idB.String()}
	cfgB.SupernodePeers = []string{cfgA.LegacyListen + "/p2p/" + idA.String()}
	a := startAgent(t, dirA, cfgA)
	bAgent := startAgent(t, dirB, cfgB)
	snA := peer.AddrInfo{ID: idA, Addrs: a.a.snHost.Addrs()}
	snB := peer.AddrInfo{ID: idB, Addrs: bAgent.a.snHost.Addrs()}

	device := func(user string, sn peer.AddrInfo) *legacy.Directory {
		t.Helper()
		h, err := legacy.NewHost(legacy.HostConfig{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		cert, err := auth.Certify(h.ID(), user, "linux", "2.0.0", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return legacy.NewDirectory(h, cert, sn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, tc := range []struct {
		name         string
		registerAt   peer.AddrInfo
		lookupAt     peer.AddrInfo
		user, lookup string
	}{
		{"a to b", snA, snB, "alice", "bob"},
		{"b to a", snB, snA, "carol", "dave"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := device(tc.user, tc.registerAt).Register(ctx); err != nil {
				t.Fatalf("register %s: %v", tc.user, err)
			}
			other := device(tc.lookup, tc.lookupAt)
			for i := 0; ; i++ {
				look, err := other.Lookup(ctx, tc.user)
				if err != nil {
					t.Fatalf("lookup: %v", err)
				}
				if len(look.Devices) == 1 && look.Devices[0].Cert.User == tc.user {
					break
				}
				if i == 200 {
					t.Fatalf("%s registered at one supernode is not found at the other after %d lookups", tc.user, i)
				}
				select {
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}

	for _, ta := range []*testAgent{a, bAgent} {
		pushed, dropped := ta.a.supernode.ReplicationStats()
		if pushed == 0 || dropped != 0 {
			t.Errorf("replication stats: pushed %d, dropped %d; want pushed > 0, none dropped", pushed, dropped)
		}
		if n := gaugeOrCounter(t, ta.a.reg, "gateway_legacy_replication_pushed_total"); n != float64(pushed) {
			t.Errorf("gateway_legacy_replication_pushed_total = %v, want %d", n, pushed)
		}
	}
}

// supernodeID makes (or loads) the supernode key of data directory dir and
// returns its peer ID.
func supernodeID(tb testing.TB, dir string) peer.ID {
	tb.Helper()
	key, err := loadPeerKey(filepath.Join(dir, "supernode.key"))
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// gaugeOrCounter returns the value of the unlabelled gauge or counter name
// in reg.
func gaugeOrCounter(tb testing.TB, reg *prometheus.Registry, name string) float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			return c.GetValue()
		}
		return m.GetGauge().GetValue()
	}
	tb.Fatalf("no single series %s", name)
	return 0
}
