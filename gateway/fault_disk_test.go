package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// diskVolume is the size of the tmpfs the drill runs the agent's data
// directory on: room for JetStream's files and the agent's keys, small
// enough to fill in a moment.
const diskVolume = 64 << 20

// TestFaultDiskFull runs an agent (supernode, cloud, bridge, embedded
// NATS) with its data directory on a small tmpfs and fills that file
// system while alice (legacy) and bob (cloud) stream at each other. While
// it is full, a send that cannot be made durable is refused (the cloud
// client gets an error, the legacy sender no delivered ack) and /healthz
// answers 503 with the reason; nothing is acknowledged and then lost, and
// the agent keeps running. Once the filler is removed, the engine restarts
// JetStream by itself, /healthz is ok again, every retried message gets
// through and the checker passes. Then the agent is stopped and started
// on the same directory: a new cloud device of bob's syncing from cursor 0
// sees every acknowledged message of both directions exactly once, in
// order. It needs root (mount); without it the test is skipped, and it
// fails when CI is set.
func TestFaultDiskFull(t *testing.T) {
	vol := enginetest.SmallVolume(t, diskVolume)
	dir := filepath.Join(vol, "data")
	cfg := agentPorts(t)
	// The cloud's default byte bounds (1 GiB a stream) are reservations
	// JetStream refuses on a 64 MiB volume: no bound, as an operator on a
	// small disk would set them (-cloud-log-max-bytes -1).
	cfg.CloudRetention.LogMaxBytes, cfg.CloudRetention.InboxMaxBytes = -1, -1
	ta := startAgent(t, dir, cfg)
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, ta.admin(), "carol", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	waitAnyRoute(t, alice, "bob")
	waitAnyRoute(t, alice, "carol")
	ck := newChecker()
	bob := newCloudUser(t, ta, ta.a.cloudURL(), "bob", "alice", ck)

	n, rounds := 60, 1
	if longFaults() {
		n, rounds = 300, 3 // each round is about 45 s of a full disk
	}
	injected := 0
	exchange(t, ck, alice, bob, n, 20*time.Millisecond, func(ctx context.Context) {
		for round := range rounds { // the first round always; more while the streams run
			if !sleepCtx(ctx, 300*time.Millisecond) && round > 0 {
				t.Logf("streams done after %d rounds", round)
				return
			}
			diskFullRound(t, ta, vol, ck, alice, bob)
			injected++
		}
	}, func() string { return "" })
	select {
	case err := <-ta.done:
		t.Fatalf("the agent stopped during the drill: %v", err)
	default:
	}
	tallyFault(t, "disk_full", injected)

	// A clean restart on the same directory: the streams load, and a new
	// device syncing from cursor 0 sees what was acknowledged, once, in order.
	acked, _ := ck.snapshot()
	ta.stop()
	ta = startAgent(t, dir, cfg)
	if code, body := healthz(t, ta); code != http.StatusOK {
		t.Fatalf("after restart /healthz: %d %s", code, body)
	}
	history := syncHistory(t, ta, "bob", len(acked[flowName("alice", "bob")])+len(acked[flowName("bob", "alice")]))
	for _, f := range []string{flowName("alice", "bob"), flowName("bob", "alice")} {
		if got, want := history[f], acked[f]; !slices.Equal(got, want) {
			t.Errorf("after restart, %s in bob's history differs from what was acknowledged (%d vs %d ids):\ngot  %v\nwant %v", f, len(got), len(want), got, want)
		}
	}
}

// diskFullRound fills vol while the streams run, checks that sends are
// refused and the agent reports it, then frees the space and waits for the
// agent to take writes again. The checks' bounds are hang detectors, not
// speed targets.
func diskFullRound(t *testing.T, ta *testAgent, vol string, ck *checker, alice *legacyPhone, bob *cloudUser) {
	t.Helper()
	filler := enginetest.Fill(t, vol)
	full := time.Now()
	// The engine learns of the full disk from the first write that fails;
	// the streams write all the time.
	waitUntil(t, 30*time.Second, func() bool { return ta.a.eng.StorageErr() != nil },
		func() string { return "the engine never reported the full disk: " + ck.String() })
	reason := ta.a.eng.StorageErr()
	if !errors.Is(reason, engine.ErrStorage) {
		t.Errorf("StorageErr = %v, want an engine.ErrStorage", reason)
	}
	if code, body := healthz(t, ta); code != http.StatusServiceUnavailable || !strings.Contains(body, "cannot write") {
		t.Errorf("/healthz on a full disk: %d %q, want 503 with the reason", code, body)
	}
	if v := metricValues(t, ta, "gateway_engine_storage_failing"); v[""] != 1 {
		t.Errorf("gateway_engine_storage_failing on a full disk = %v, want 1", v)
	}
	// Sends to carol (in the cloud, outside the checker's flows) cannot
	// be made durable: the cloud client gets an error frame once the
	// service gives up on the store, alice no delivered ack. Each probe
	// has a fresh id; none may be acknowledged.
	var probes sync.WaitGroup
	probes.Go(func() {
		c := bob.client()
		if c == nil {
			return // between sessions: sendCloud's retries cover this case
		}
		// The service gives up on the store after its own timeouts
		// (about 30 s for a send); the client waits longer than that.
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
		defer cancel()
		_, err := c.Send(ctx, cloudwire.Send{To: "carol", MsgID: uuid.Must(uuid.NewV7()).String(), Text: "on a full disk"})
		var se *cloud.ServerError
		switch {
		case err == nil:
			t.Error("a cloud send was acknowledged on a full disk")
		case errors.As(err, &se):
			t.Logf("cloud send on a full disk: error frame %q: %s", se.Code, se.Message)
		default:
			t.Logf("cloud send on a full disk: no answer (%v)", err)
		}
	})
	probes.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ack, err := alice.dev.SendMessage(ctx, legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: "alice", To: "carol", Text: "on a full disk", SentAt: time.Now().UTC()})
		if err == nil && ack.Status == legacywire.StatusDelivered {
			t.Error("a legacy send was acknowledged as delivered on a full disk")
		} else {
			t.Logf("legacy send on a full disk: not delivered: %v %+v", err, ack)
		}
	})
	probes.Wait()
	before := ck.received()

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitUntil(t, 60*time.Second, func() bool { return ta.a.eng.StorageErr() == nil },
		func() string { return "the engine never recovered after space returned: " + ck.String() })
	recovered := time.Since(freed)
	if code, body := healthz(t, ta); code != http.StatusOK {
		t.Errorf("/healthz after space returned: %d %q", code, body)
	}
	if v := metricValues(t, ta, "gateway_engine_storage_failing"); v[""] != 0 {
		t.Errorf("gateway_engine_storage_failing after space returned = %v, want 0", v)
	}
	if v := metricValues(t, ta, "gateway_engine_storage_recoveries_total"); v[""] < 1 {
		t.Errorf("gateway_engine_storage_recoveries_total after space returned = %v, want at least 1", v)
	}
	if ck.pending() {
		waitUntil(t, 60*time.Second, func() bool { return ck.received() > before || !ck.pending() },
			func() string { return "no delivery after space returned: " + ck.String() })
	}
	t.Logf("disk full for %s (%v); the engine took writes again %s after space returned, delivery moved again after %s",
		freed.Sub(full).Round(time.Millisecond), reason, recovered.Round(time.Millisecond), time.Since(freed).Round(time.Millisecond))
}

// healthz returns the status and body of the agent's /healthz.
func healthz(t *testing.T, ta *testAgent) (int, string) {
	t.Helper()
	resp, err := http.Get(ta.a.adminURL() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// syncHistory connects a new device of user's, syncing from cursor 0,
// and returns the ids of the messages user sent and received, per flow
// ("alice→bob"), once it has synced and has at least want of them.
func syncHistory(t *testing.T, ta *testAgent, user string, want int) map[string][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := cloud.Dial(ctx, cloud.ClientConfig{
		URL: ta.a.cloudURL(), Token: userToken(t, ta, user),
		Hello: cloudwire.Hello{Device: user + "-new-device", Platform: "web", ClientVersion: "1.0.0"},
	})
	if err != nil {
		t.Fatalf("%s's new device: %v", user, err)
	}
	defer c.Close()
	history := map[string][]string{}
	got, synced := 0, c.Synced()
	for synced != nil || got < want {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("%s's new device lost its session after %d messages: %v", user, got, c.Err())
			}
			if f := flowName(ev.From, ev.To); ev.Kind == cloudwire.KindMsg && (ev.From == user || ev.To == user) {
				history[f] = append(history[f], ev.MsgID)
				got++
			}
		case <-synced:
			synced = nil
		case <-ctx.Done():
			t.Fatalf("%s's new device synced %d of %d messages", user, got, want)
		}
	}
	return history
}
