package main

import (
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/migrate"
)

// TestBridgeFailsOverToAnotherSupernode runs the bridge in its own agent
// whose -supernode names a supernode that is not there, with the live one in
// -supernode-fallbacks: the bridge's route for a cloud user must still reach
// the directory, so a lookup resolves to the bridge.
func TestBridgeFailsOverToAnotherSupernode(t *testing.T) {
	ta, dir := startCoreAgent(t)
	live := ta.supernode(t)
	liveAddrs, err := peer.AddrInfoToP2pAddrs(&live)
	if err != nil {
		t.Fatal(err)
	}
	deadKey, err := loadPeerKey(filepath.Join(t.TempDir(), "dead.key"))
	if err != nil {
		t.Fatal(err)
	}
	deadID, err := peer.IDFromPrivateKey(deadKey)
	if err != nil {
		t.Fatal(err)
	}

	bcfg := agentPorts(t)
	bcfg.Roles = []string{roleBridge}
	bcfg.NatsURL = ta.natsURL()
	bcfg.CloudURL = ta.a.cloudURL()
	bcfg.Supernode = "/ip4/127.0.0.1/tcp/" + freePort(t) + "/p2p/" + deadID.String()
	bcfg.SupernodeFallbacks = []string{liveAddrs[0].String()}
	tb := startAgent(t, dir, bcfg)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	alice.waitRoute(t, "bob", tb.a.brHost)
}
