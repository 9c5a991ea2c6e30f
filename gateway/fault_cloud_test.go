package main

import (
	"context"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestFaultCloudRestart runs the cloud service and the bridge each as its
// own process (the supernode and the embedded NATS stay in this process)
// and restarts the cloud service while alice (legacy) and bob (cloud)
// stream at each other: alternately a graceful stop (SIGTERM) and a crash
// (SIGKILL), with sessions open and messages in flight. bob's device and
// the bridge reconnect on their own; the checker must pass.
func TestFaultCloudRestart(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	cfg := agentPorts(t)
	cfg.Roles = []string{roleSupernode}
	cfg.NatsListen = freeAddr(t)
	ta := startAgent(t, dir, cfg)
	cloudListen := freeAddr(t)
	cloudURL := "ws://" + cloudListen + "/v1/ws"
	cloudArgs := []string{"agent", "-data-dir", dir, "-roles", roleCloud,
		"-nats-url", "nats://" + cfg.NatsListen, "-listen", cloudListen,
		"-admin-listen", freeAddr(t), "-log-level", "warn"}
	cloudProc := startProcess(t, bin, cloudArgs...)
	bridgeProc := startProcess(t, bin, bridgeProcessArgs(t, ta, dir, "nats://"+cfg.NatsListen, cloudURL)...)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	ck := newChecker()
	bob := newCloudUser(t, ta, cloudURL, "bob", "alice", ck)

	n, rounds := 80, 2
	if longFaults() {
		n, rounds = 400, 8
	}
	exchange(t, ck, alice, bob, n, 10*time.Millisecond, func(context.Context) {
		for round := range rounds { // every round, even when the streams are done
			time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
			sig := syscall.SIGTERM
			if round%2 == 1 {
				sig = syscall.SIGKILL
			}
			if err := cloudProc.cmd.Process.Signal(sig); err != nil {
				t.Fatalf("signal %d: %v", round, err)
			}
			cloudProc.wait(t, 30*time.Second)
			cloudProc = startProcess(t, bin, cloudArgs...)
		}
		t.Logf("cloud service restarted %d times (SIGTERM and SIGKILL alternately)", rounds)
	}, func() string {
		return "\ncloud log:\n" + cloudProc.stderr.String() + "\nbridge log:\n" + bridgeProc.stderr.String()
	})
	tallyFault(t, "restart_cloud", rounds)
}
