package main

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/migrate"
)

// TestFaultNATSRestart runs the embedded NATS server (the agent's engine,
// JetStream on a data directory) on its own, with an in-process agent
// (supernode, cloud) and a bridge process as its clients, and restarts it
// on the same directory and port while alice (legacy) and bob (cloud)
// stream at each other. Every part must reconnect on its own and the
// checker must pass.
func TestFaultNATSRestart(t *testing.T) {
	bin := buildGateway(t)
	natsDir, natsAddr := t.TempDir(), freeAddr(t)
	startNATS := func() *engine.Engine {
		t.Helper()
		eng, err := engine.Start(engine.Config{DataDir: natsDir, Listen: natsAddr, Name: "fault-nats"})
		if err != nil {
			t.Fatalf("start nats: %v", err)
		}
		return eng
	}
	eng := startNATS()
	t.Cleanup(func() { eng.Close() })

	dir := t.TempDir()
	cfg := agentPorts(t)
	cfg.Roles = []string{roleSupernode, roleCloud}
	cfg.NatsURL = "nats://" + natsAddr
	ta := startAgent(t, dir, cfg)
	bridgeProc := startProcess(t, bin, bridgeProcessArgs(t, ta, dir, cfg.NatsURL, ta.a.cloudURL())...)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	ck := newChecker()
	bob := newCloudUser(t, ta, ta.a.cloudURL(), "bob", "alice", ck)

	n, rounds := 80, 2
	if longFaults() {
		n, rounds = 400, 8
	}
	exchange(t, ck, alice, bob, n, 10*time.Millisecond, func(context.Context) {
		for range rounds { // every round, even when the streams are done
			time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
			eng.Close()
			time.Sleep(time.Duration(100+rand.IntN(400)) * time.Millisecond)
			eng = startNATS()
		}
		t.Logf("embedded NATS restarted %d times", rounds)
	}, func() string { return "\nbridge log:\n" + bridgeProc.stderr.String() })
	tallyFault(t, "restart_nats", rounds)
}
