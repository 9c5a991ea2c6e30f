package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestFaultSlowLegacy runs the bridge as its own process while a cloud user
// (bob) streams messages to a legacy device (carol's) that stops reading its
// incoming chat streams, and other users keep talking: frank (cloud) and
// dave (legacy) both ways through the bridge, erin → dave natively on the
// overlay. While carol reads nothing, every message of the healthy flows
// must arrive (they do not wait for her); once she reads again, slowly,
// everything bob sent her arrives exactly once and in order (the bridge's
// outbox held it and retried); the checker must pass for every flow. The
// bridge process's resident memory and goroutines must stay within a
// generous bound of what they were before: the bridge keeps no buffer or
// goroutine per message waiting for a stuck peer.
func TestFaultSlowLegacy(t *testing.T) {
	bin := buildGateway(t)
	ta, dir := startCoreAgent(t)
	url := ta.a.cloudURL()
	bridgeArgs := bridgeProcessArgs(t, ta, dir, ta.natsURL(), url)
	bridgeProc := startProcess(t, bin, bridgeArgs...)
	bridgeAdmin := "http://" + bridgeArgs[slices.Index(bridgeArgs, "-admin-listen")+1]
	why := func() string { return "\nbridge log:\n" + bridgeProc.stderr.String() }

	for _, u := range []string{"bob", "frank"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	ck := newChecker()
	var slow *slowReader
	newVersionedPhoneWith(t, ta, "carol", 0, func(dc *legacy.DeviceConfig) {
		slow = &slowReader{Host: dc.Host}
		dc.Host = slow
		dc.OnMessage = func(m legacywire.ChatMessage) { ck.receive(flowName(m.From, "carol"), m.ID) }
	})
	dave := newLegacyPhone(t, ta, "dave")
	erin := newLegacyPhone(t, ta, "erin")
	waitAnyRoute(t, dave, "frank")
	bob := newCloudUser(t, ta, url, "bob", "carol", ck)
	frank := newCloudUser(t, ta, url, "frank", "dave", ck)
	pullSender(ck, flowName("frank", "dave"), dave, "frank")
	pullSender(ck, flowName("erin", "dave"), dave, "erin")

	n, pace := 60, 10*time.Millisecond
	if longFaults() {
		n, pace = 400, 5*time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// stream sends k messages on every flow at once and waits for the
	// senders' acknowledgements.
	stream := func(k int) {
		t.Helper()
		ck.plan(4 * k)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		wg.Go(func() { errs[0] = sendCloud(ctx, ck, bob, "carol", k, pace) })
		wg.Go(func() { errs[1] = sendCloud(ctx, ck, frank, "dave", k, pace) })
		wg.Go(func() { errs[2] = sendLegacy(ctx, ck, dave, "dave", "frank", k, pace) })
		wg.Go(func() { errs[3] = sendLegacy(ctx, ck, erin, "erin", "dave", k, pace) })
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%v\n%s%s", err, ck, why())
		}
	}

	// Warm up with carol reading, so the baseline includes the bridge's
	// steady-state buffers.
	stream(5)
	waitUntil(t, within, ck.caughtUp, func() string { return "warm-up: " + ck.String() + why() })
	rssBefore, gorBefore := vmRSS(t, bridgeProc.cmd.Process.Pid), goroutines(t, bridgeAdmin)

	// carol stops reading while everyone streams.
	slow.stall()
	stream(n)
	healthy := []string{flowName("frank", "dave"), flowName("dave", "frank"), flowName("erin", "dave")}
	waitUntil(t, time.Minute, func() bool { return ck.caughtUpOn(healthy...) },
		func() string { return "healthy flows while carol reads nothing: " + ck.String() + why() })
	_, got := ck.snapshot()
	stuck := 5 + n - len(got[flowName("bob", "carol")])
	rssStuck, gorStuck := vmRSS(t, bridgeProc.cmd.Process.Pid), goroutines(t, bridgeAdmin)
	t.Logf("carol read nothing while %d streams waited unread at her device; %d of bob's messages not delivered yet; healthy flows all delivered", slow.held.Load(), stuck)
	if stuck == 0 {
		t.Errorf("every message reached carol while she read nothing: the stall did not hold")
	}

	// carol reads again, slowly; the outbox drains to her in order.
	slow.release(20 * time.Millisecond)
	ck.verify(t, 2*time.Minute, 500*time.Millisecond, why)
	rssAfter, gorAfter := vmRSS(t, bridgeProc.cmd.Process.Pid), goroutines(t, bridgeAdmin)
	t.Logf("bridge VmRSS: %d KiB before, %d KiB with %d messages held for carol, %d KiB after; goroutines %d, %d, %d",
		rssBefore, rssStuck, stuck, rssAfter, gorBefore, gorStuck, gorAfter)
	// Generous, as in TestFaultSlowCloud: a queue or goroutine per waiting
	// message or stuck stream would not stay under these.
	if limit := 2*rssBefore + 64<<10; max(rssStuck, rssAfter) > limit {
		t.Errorf("bridge VmRSS grew from %d KiB to %d/%d KiB (limit %d KiB)%s", rssBefore, rssStuck, rssAfter, limit, why())
	}
	if limit := 2*gorBefore + 100; max(gorStuck, gorAfter) > limit {
		t.Errorf("bridge goroutines grew from %d to %d/%d (limit %d)%s", gorBefore, gorStuck, gorAfter, limit, why())
	}
	if !t.Failed() {
		tally("fault_scenarios", 1)
		tally("fault_slow_legacy", 1)
	}
}

// slowReader wraps a legacy device's host so that its chat streams are read
// late: while stalled, each new chat stream waits unread until release;
// after release each waits delay before its handler reads it. Only chat
// handlers are wrapped (the device's directory client and other protocols
// run as usual).
type slowReader struct {
	host.Host
	mu    sync.Mutex
	gate  chan struct{} // closed by release; nil when not stalled
	delay time.Duration
	held  atomic.Int64 // streams that waited at a closed gate
}

var _ host.Host = (*slowReader)(nil)

func (s *slowReader) SetStreamHandler(pid protocol.ID, h network.StreamHandler) {
	if !slices.Contains(legacy.ChatProtocolIDs(legacy.LatestChatVersion), pid) {
		s.Host.SetStreamHandler(pid, h)
		return
	}
	s.Host.SetStreamHandler(pid, func(st network.Stream) {
		s.mu.Lock()
		gate, delay := s.gate, s.delay
		s.mu.Unlock()
		if gate != nil {
			s.held.Add(1)
			<-gate
		}
		time.Sleep(delay)
		h(st)
	})
}

// stall makes new chat streams wait unread until release.
func (s *slowReader) stall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = make(chan struct{})
}

// release lets waiting and new streams through, each delay late.
func (s *slowReader) release(delay time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
	s.delay = delay
}

// caughtUpOn is caughtUp for the named flows only.
func (c *checker) caughtUpOn(flows ...string) bool {
	acked, got := c.snapshot()
	for _, f := range flows {
		if len(got[f]) < len(acked[f]) {
			return false
		}
	}
	return true
}

// goroutines reads go_goroutines from the /metrics of the agent whose admin
// listener is at base.
func goroutines(t *testing.T, base string) int64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("go_goroutines %q: %v", rest, err)
			}
			return int64(n)
		}
	}
	t.Fatalf("no go_goroutines at %s/metrics", base)
	return 0
}
