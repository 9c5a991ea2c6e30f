package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// The misbehaving release of the bad-version drill.
const (
	badPlatform = "android"
	badVersion  = "4.2.0"
)

// TestFaultBadVersion is the "bad version" drill with one agent (supernode,
// cloud, bridge, embedded NATS) and real devices. Three devices of client
// version android 4.2.0 misbehave: one floods a healthy user's device with
// chat messages, one re-registers in a tight loop (a client that crashes
// and reconnects), one opens chat streams to the bridge and stalls in
// them. Meanwhile frank (cloud) and dave (legacy) talk both ways through
// the bridge, erin and gina (android 5.1.0: same platform, another
// version) message dave on the overlay, and erin looks dave up all along.
//
// The abuse limits isolate the flood (dave's per-peer chat limiter refuses
// it, counted); then the operator blocks android 4.2.0 with the real CLI
// (`gateway versions block`), after which every registration of the bad
// devices is refused with legacywire.CodeUpgradeRequired and a notice,
// while gina (android 5.1.0) still registers. The checker must pass for
// every healthy flow over both phases, and every lookup made during the
// drill must have been answered.
func TestFaultBadVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("a population of real devices; skipped with -short")
	}
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	url := ta.a.cloudURL()
	setPhases(t, ta.admin(), "frank", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)

	ck := newChecker()
	record := func(user string) func(*legacy.DeviceConfig) {
		return func(dc *legacy.DeviceConfig) {
			dc.OnMessage = func(m legacywire.ChatMessage) { ck.receive(flowName(m.From, user), m.ID) }
		}
	}
	daveLimit, err := legacy.NewPeerLimiter(legacy.RateLimit{})
	if err != nil {
		t.Fatal(err)
	}
	dave := newVersionedPhoneWith(t, ta, "dave", 0, func(dc *legacy.DeviceConfig) {
		record("dave")(dc)
		dc.ChatLimiter = daveLimit // the device's own abuse limit
	}).legacyPhone
	erin := newVersionedPhoneWith(t, ta, "erin", 0, record("erin")).legacyPhone
	var ginaCert legacywire.Certificate
	gina := newVersionedPhoneWith(t, ta, "gina", 0, certifyAs(t, ta, badPlatform, "5.1.0", &ginaCert)).legacyPhone
	waitAnyRoute(t, dave, "frank")
	frank := newCloudUser(t, ta, url, "frank", "dave", ck)

	bad := make([]*legacyPhone, 3)
	badCerts := make([]legacywire.Certificate, 3)
	for i := range bad {
		bad[i] = newVersionedPhoneWith(t, ta, fmt.Sprintf("bad%d", i), 0, certifyAs(t, ta, badPlatform, badVersion, &badCerts[i])).legacyPhone
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// erin looks dave up all along: the overlay must answer every time.
	var looked, lookFailed atomic.Int64
	var lookErr atomic.Value
	probeCtx, stopProbe := context.WithCancel(ctx)
	var probe sync.WaitGroup
	probe.Go(func() {
		for sleepCtx(probeCtx, 50*time.Millisecond) {
			lctx, cancel := context.WithTimeout(probeCtx, 5*time.Second)
			look, err := erin.dir.Lookup(lctx, "dave")
			cancel()
			switch {
			case probeCtx.Err() != nil:
			case err != nil || len(look.Devices) == 0:
				lookFailed.Add(1)
				lookErr.Store(fmt.Sprintf("%v (%d devices)", err, len(look.Devices)))
			default:
				looked.Add(1)
			}
		}
	})
	defer func() { stopProbe(); probe.Wait() }()

	n, pace := 40, 10*time.Millisecond
	if longFaults() {
		n, pace = 300, 5*time.Millisecond
	}
	// talk sends k messages on every healthy flow at once.
	talk := func(k int) {
		t.Helper()
		ck.plan(4 * k)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		wg.Go(func() { errs[0] = sendCloud(ctx, ck, frank, "dave", k, pace) })
		wg.Go(func() { errs[1] = sendLegacy(ctx, ck, dave, "dave", "frank", k, pace) })
		wg.Go(func() { errs[2] = sendLegacy(ctx, ck, erin, "erin", "dave", k, pace) })
		wg.Go(func() { errs[3] = sendLegacy(ctx, ck, gina, "gina", "dave", k, pace) })
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%v\n%s", err, ck)
		}
	}

	// Phase 1: the bad version misbehaves while everyone else talks.
	var st badStats
	misCtx, stopMis := context.WithCancel(ctx)
	var mis sync.WaitGroup
	daveAddr := peer.AddrInfo{ID: dave.host.ID(), Addrs: dave.host.Addrs()}
	for range 4 {
		mis.Go(func() { floodChat(misCtx, bad[0], badCerts[0], daveAddr, "dave", &st) })
	}
	mis.Go(func() { registerLoop(misCtx, bad[1], &st) })
	mis.Go(func() {
		stallStreams(misCtx, bad[2], peer.AddrInfo{ID: ta.a.brHost.ID(), Addrs: ta.a.brHost.Addrs()}, 64, &st)
	})
	talk(n)
	stopMis()
	mis.Wait()
	daveRefused, _ := daveLimit.Stats()
	t.Logf("bad version misbehaving: %s; dave's chat limiter refused %d", st.String(), daveRefused)
	if st.floodRefused.Load() == 0 || daveRefused == 0 {
		t.Errorf("the flood was never rate-limited: %s, limiter refused %d", st.String(), daveRefused)
	}

	// The operator blocks the exact version with the CLI.
	out, err := campaignCLI(ctx, ta)("versions", "block", "-platform", badPlatform, "-version", badVersion,
		"-reason", "4.2.0 floods peers and crash-loops", "-yes")
	if err != nil {
		t.Fatalf("gateway versions block: %v\n%s", err, out)
	}
	t.Logf("gateway versions block:\n%s", out)

	// Phase 2: every bad device is refused at registration with the code
	// and a notice, however often it comes back; gina, same platform and
	// another version, still registers; the healthy flows carry on.
	refused := 0
	for round := range 3 {
		for i, p := range bad {
			rctx, cancel := context.WithTimeout(ctx, within)
			err := p.dev.Register(rctx)
			cancel()
			var up *legacy.UpgradeRequiredError // legacywire.CodeUpgradeRequired
			if !errors.As(err, &up) || !strings.Contains(up.Notice, badVersion) {
				t.Fatalf("round %d: bad%d registration after the block: %v, want %s with a notice naming %s", round, i, err, legacywire.CodeUpgradeRequired, badVersion)
			}
			refused++
		}
	}
	t.Logf("after the block: %d registrations of %s %s refused with %s", refused, badPlatform, badVersion, legacywire.CodeUpgradeRequired)
	rctx, rcancel := context.WithTimeout(ctx, within)
	err = gina.dev.Register(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("gina (%s 5.1.0) refused after the block of %s: %v", badPlatform, badVersion, err)
	}
	talk(n)
	ck.verify(t, time.Minute, 500*time.Millisecond, func() string { return "" })

	stopProbe()
	probe.Wait()
	t.Logf("lookups during the drill: %d answered, %d failed", looked.Load(), lookFailed.Load())
	if lookFailed.Load() > 0 || looked.Load() == 0 {
		t.Errorf("the overlay did not answer every lookup: %d answered, %d failed (last: %v)", looked.Load(), lookFailed.Load(), lookErr.Load())
	}
	t.Logf("version decisions: %v", metricValues(t, ta, "gateway_versions_decisions_total"))
	tally("attacks_refused", int(daveRefused)+refused)
	if !t.Failed() {
		tally("fault_scenarios", 1)
		tally("fault_bad_version", 1)
	}
}

// certifyAs is a device-config hook that certifies the device as platform
// and version instead of the test default, and stores the certificate in
// cert.
func certifyAs(t *testing.T, ta *testAgent, platform, version string, cert *legacywire.Certificate) func(*legacy.DeviceConfig) {
	return func(dc *legacy.DeviceConfig) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		req := certRequest{PeerID: dc.Host.ID().String(), User: dc.Cert.User, Platform: platform, ClientVersion: version}
		if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, cert); err != nil {
			t.Fatal(err)
		}
		dc.Cert = *cert
	}
}

// badStats counts what the misbehaving devices did and were told.
type badStats struct {
	floodSent, floodRefused  atomic.Int64 // chat messages acked / refused rate_limited
	floodFailed              atomic.Int64 // sends that failed in transport (cut off)
	registers, registersFail atomic.Int64
	stalled, stallRefused    atomic.Int64 // streams opened and left silent / refused at open
}

func (s *badStats) String() string {
	return fmt.Sprintf("flood %d delivered, %d rate-limited, %d failed; %d re-registrations (%d failed); %d streams stalled open, %d refused at open",
		s.floodSent.Load(), s.floodRefused.Load(), s.floodFailed.Load(), s.registers.Load(), s.registersFail.Load(), s.stalled.Load(), s.stallRefused.Load())
}

// floodChat sends chat messages for rcpt from p to the peer at to (a
// device or the bridge) as fast as it answers, until ctx ends.
func floodChat(ctx context.Context, p *legacyPhone, cert legacywire.Certificate, to peer.AddrInfo, rcpt string, st *badStats) {
	for ctx.Err() == nil {
		msg := legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: cert.User, To: rcpt, Text: "spam", SentAt: time.Now().UTC()}
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ack, err := legacy.SendChat(sctx, p.host, cert, to, msg)
		cancel()
		switch {
		case err != nil:
			st.floodFailed.Add(1)
			sleepCtx(ctx, 10*time.Millisecond)
		case ack.Status == legacywire.StatusDelivered:
			st.floodSent.Add(1)
		default:
			st.floodRefused.Add(1)
		}
	}
}

// registerLoop re-registers p in a tight loop, as a client that crashes
// and reconnects at once would, until ctx ends.
func registerLoop(ctx context.Context, p *legacyPhone, st *badStats) {
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := p.dev.Register(rctx)
		cancel()
		st.registers.Add(1)
		if err != nil && ctx.Err() == nil {
			st.registersFail.Add(1)
		}
	}
}

// stallStreams is a client that opens chat streams and says nothing on
// them: k at a time from p to the peer at to, reset and opened again every
// two seconds, until ctx ends.
func stallStreams(ctx context.Context, p *legacyPhone, to peer.AddrInfo, k int, st *badStats) {
	if err := p.host.Connect(ctx, to); err != nil {
		st.stallRefused.Add(1)
		return
	}
	for ctx.Err() == nil {
		var open []network.Stream
		for range k {
			s, err := p.host.NewStream(ctx, to.ID, legacy.ChatProtocolIDs(0)...)
			if err != nil {
				st.stallRefused.Add(1)
				continue
			}
			open = append(open, s)
			st.stalled.Add(1)
		}
		sleepCtx(ctx, 2*time.Second)
		for _, s := range open {
			_ = s.Reset()
		}
	}
}
