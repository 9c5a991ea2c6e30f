package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// Size of the SIGKILL test: messages each way and bridge kills.
const (
	killMessages = 120
	killRounds   = 4
	killPace     = 8 * time.Millisecond
)

// TestBridgeSurvivesSIGKILL runs the bridge as its own process beside an
// in-process agent (supernode, cloud, embedded NATS served on loopback) and
// kills it with SIGKILL at random points while alice (legacy) and bob
// (cloud) stream messages at each other. Each side must end up with every
// acknowledged message of the other exactly once, in the order it was sent.
func TestBridgeSurvivesSIGKILL(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	cfg := agentPorts(t)
	cfg.Roles = []string{roleSupernode, roleCloud}
	cfg.NatsListen = freeAddr(t)
	ta := startAgent(t, dir, cfg)
	sn := ta.supernode(t)
	snAddrs, err := peer.AddrInfoToP2pAddrs(&sn)
	if err != nil {
		t.Fatal(err)
	}
	bridgeArgs := []string{"agent", "-data-dir", dir, "-roles", roleBridge,
		"-nats-url", "nats://" + cfg.NatsListen, "-cloud-url", ta.a.cloudURL(),
		"-supernode", snAddrs[0].String(), "-admin-listen", freeAddr(t),
		"-bridge-listen", "/ip4/127.0.0.1/tcp/" + freePort(t), "-log-level", "warn"}
	bridgeProc := startProcess(t, bin, bridgeArgs...)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	bob := dialCloud(t, ta, "bob", "bob-laptop", 0)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var aliceSent, bobSent []string
	var sendErr error
	var errMu sync.Mutex
	fail := func(err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if sendErr == nil {
			sendErr = err
		}
	}
	wg.Go(func() { // alice retries each message, same id, until the bridge acks it
		for i := range killMessages {
			msg := legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: "alice", To: "bob", Text: fmt.Sprintf("a%d", i), SentAt: time.Now().UTC()}
			for {
				actx, acancel := context.WithTimeout(ctx, 3*time.Second)
				ack, err := alice.dev.SendMessage(actx, msg)
				acancel()
				if err == nil && ack.Status == legacywire.StatusDelivered {
					break
				}
				if ctx.Err() != nil {
					fail(fmt.Errorf("alice's message %d never acknowledged: %v %+v", i, err, ack))
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			aliceSent = append(aliceSent, msg.ID)
			time.Sleep(killPace)
		}
	})
	wg.Go(func() {
		for i := range killMessages {
			id := uuid.Must(uuid.NewV7()).String()
			if _, err := bob.c.Send(ctx, cloudwire.Send{To: "alice", MsgID: id, Text: fmt.Sprintf("b%d", i)}); err != nil {
				fail(fmt.Errorf("bob's message %d: %w", i, err))
				return
			}
			bobSent = append(bobSent, id)
			time.Sleep(killPace)
		}
	})
	for round := range killRounds {
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		if err := bridgeProc.cmd.Process.Kill(); err != nil {
			t.Fatalf("kill %d: %v", round, err)
		}
		bridgeProc.wait(t, 10*time.Second)
		bridgeProc = startProcess(t, bin, bridgeArgs...)
	}
	wg.Wait()
	if sendErr != nil {
		t.Fatal(sendErr)
	}

	// bob's device: every message alice had acknowledged, once, in order.
	var bobGot []string
	deadline := time.After(time.Minute)
	for len(bobGot) < len(aliceSent) {
		select {
		case ev, ok := <-bob.c.Events():
			if !ok {
				t.Fatalf("bob's session ended: %v", bob.c.Err())
			}
			if ev.Kind == cloudwire.KindMsg && ev.From == "alice" {
				bobGot = append(bobGot, ev.MsgID)
			}
		case <-deadline:
			t.Fatalf("bob got %d of %d messages", len(bobGot), len(aliceSent))
		}
	}
	if !slices.Equal(bobGot, aliceSent) {
		t.Fatalf("bob's view differs from what alice sent (lost, doubled or reordered):\ngot  %v\nwant %v", bobGot, aliceSent)
	}
	// alice's device: every message bob sent, once, in order.
	waitUntil(t, time.Minute, func() bool {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return len(alice.got) >= len(bobSent)
	}, func() string {
		alice.mu.Lock()
		defer alice.mu.Unlock()
		return fmt.Sprintf("alice got %d of %d messages; bridge log:\n%s", len(alice.got), len(bobSent), bridgeProc.stderr.String())
	})
	bob.quiet(t, 500*time.Millisecond)
	alice.mu.Lock()
	defer alice.mu.Unlock()
	var aliceGot []string
	for _, m := range alice.got {
		aliceGot = append(aliceGot, m.ID)
	}
	if !slices.Equal(aliceGot, bobSent) {
		t.Fatalf("alice's view differs from what bob sent:\ngot  %v\nwant %v", aliceGot, bobSent)
	}
}

// waitAnyRoute waits until a lookup of user resolves to a live route record.
func waitAnyRoute(t *testing.T, p *legacyPhone, user string) {
	t.Helper()
	waitUntil(t, within, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		look, err := p.dir.Lookup(ctx, user)
		return err == nil && look.Route != nil && !look.Route.Withdrawn
	}, func() string { return "no route to " + user })
}

// waitUntil polls cond until it holds, or fails the test with why().
func waitUntil(t *testing.T, d time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, why())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
