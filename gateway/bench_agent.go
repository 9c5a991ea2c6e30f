package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// benchAgent is a whole agent (engine, supernode, cloud service, bridge) in
// the bench process, on loopback ports of its own and a temporary data
// directory: what the bridge benchmarks measure.
type benchAgent struct {
	a    *agent
	stop func() error
}

func startBenchAgent(ctx context.Context) (*benchAgent, error) {
	dir, err := os.MkdirTemp("", "ferry-bench-agent-*")
	if err != nil {
		return nil, err
	}
	cfg := agentConfig{
		DataDir:      dir,
		Listen:       "127.0.0.1:0",
		AdminListen:  "127.0.0.1:0",
		LegacyListen: "/ip4/127.0.0.1/tcp/0",
		BridgeListen: "/ip4/127.0.0.1/tcp/0",
		StopTimeout:  15 * time.Second,
		// The bridge's per-peer chat limit runs on every stream and frame,
		// as in production (where -bridge-peer-rate defaults to
		// defaultBridgePeerRate), so its cost is measured; a bench device's
		// thousands of messages a second are no flood, so none is refused.
		BridgePeerRate: 1e6,
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan *agent, 1)
	go func() { done <- runAgent(runCtx, cfg, func(a *agent) { ready <- a }) }()
	ba := &benchAgent{stop: func() error {
		cancel()
		return errors.Join(<-done, os.RemoveAll(dir))
	}}
	select {
	case ba.a = <-ready:
		return ba, nil
	case err := <-done:
		cancel()
		return nil, errors.Join(fmt.Errorf("agent did not start: %w", err), os.RemoveAll(dir))
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), ba.stop())
	}
}

// toCloud moves users to phase cloud, as an operator would one step at a
// time.
func (ba *benchAgent) toCloud(ctx context.Context, users ...string) error {
	for _, u := range users {
		for _, p := range []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud} {
			if _, err := ba.a.store.Transition(ctx, u, migrate.Op{ID: "bench-" + u + "-" + string(p), To: p, Reason: "benchmark"}); err != nil {
				return fmt.Errorf("move %s to %s: %w", u, p, err)
			}
		}
	}
	return nil
}

// legacyDevice starts a registered legacy device on a host of its own,
// with the identity key and certificate the bench process made for it. The
// caller closes the host.
func legacyDevice(ctx context.Context, key crypto.PrivKey, cert legacywire.Certificate, authority ed25519.PublicKey, sn peer.AddrInfo) (*legacy.Device, host.Host, error) {
	h, err := legacy.NewHost(legacy.HostConfig{PrivKey: key})
	if err != nil {
		return nil, nil, err
	}
	d, err := legacy.NewDevice(legacy.DeviceConfig{Host: h, Cert: cert, Authority: authority, Supernode: sn})
	if err == nil {
		err = d.Register(ctx)
	}
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("register %s: %w", cert.User, err)
	}
	return d, h, nil
}

// waitRoute waits until a lookup of user from d resolves to the bridge.
func waitRoute(ctx context.Context, d *legacy.Device, user string, bridge peer.ID) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		look, err := d.Directory().Lookup(lctx, user)
		cancel()
		if err == nil && look.Route != nil && !look.Route.Withdrawn && look.Route.PeerID == bridge.String() {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("a lookup of %s did not resolve to the bridge within 30s", user)
}

// cloudClient dials the cloud service at url with the token tok and waits
// for its sync to finish.
func cloudClient(ctx context.Context, url, tok string) (*cloud.Client, error) {
	c, err := cloud.Dial(ctx, cloud.ClientConfig{URL: url, Token: tok,
		Hello: cloudwire.Hello{Device: "bench", Platform: "bench", ClientVersion: version}})
	if err != nil {
		return nil, fmt.Errorf("dial cloud: %w", err)
	}
	select {
	case <-c.Synced():
		return c, nil
	case <-time.After(30 * time.Second):
		c.Close()
		return nil, errors.New("cloud sync did not finish within 30s")
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// stampText is a message text carrying the time it was due, so that its
// recipient can tell its latency without a shared map.
func stampText(due time.Time) string { return "t=" + strconv.FormatInt(due.UnixNano(), 10) }

// stampAge is how long ago a stampText text was due.
func stampAge(text string) (time.Duration, bool) {
	ns, err := strconv.ParseInt(strings.TrimPrefix(text, "t="), 10, 64)
	if err != nil || !strings.HasPrefix(text, "t=") {
		return 0, false
	}
	return time.Since(time.Unix(0, ns)), true
}

// latencyLog collects the latencies recipients see during one run; the
// bench swaps a fresh one in at the start of each run.
type latencyLog struct {
	mu sync.Mutex
	xs []time.Duration
}

func (l *latencyLog) add(d time.Duration) {
	l.mu.Lock()
	l.xs = append(l.xs, d)
	l.mu.Unlock()
}

func (l *latencyLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.xs)
}

// quantile returns the q quantile (0..1) of what was logged, 0 when
// nothing was.
func (l *latencyLog) quantile(q float64) time.Duration {
	l.mu.Lock()
	xs := slices.Clone(l.xs)
	l.mu.Unlock()
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	return xs[min(len(xs)-1, int(q*float64(len(xs))))]
}

// waitFor waits, bounded, until l holds n latencies.
func (l *latencyLog) waitFor(ctx context.Context, n int) {
	deadline := time.Now().Add(5 * time.Second)
	for l.count() < n && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// recordLatencies reads c's events until it closes and logs the latency of
// every stamped message into the log current holds at the time.
func recordLatencies(c *cloud.Client, current *atomic.Pointer[latencyLog]) {
	for ev := range c.Events() {
		if ev.Kind != cloudwire.KindMsg {
			continue
		}
		if d, ok := stampAge(ev.Text); ok {
			if l := current.Load(); l != nil {
				l.add(d)
			}
		}
	}
}

// openLoop calls send(k) for k = 0, 1, ... at perSec a second for d, each
// in its own goroutine, whatever the earlier ones are doing (open-loop
// load: a slow server does not slow the schedule down), and returns once
// every call has returned. send gets the time its call was due.
func openLoop(ctx context.Context, d time.Duration, perSec float64, send func(k int, due time.Time) error) error {
	interval := time.Duration(float64(time.Second) / perSec)
	start := time.Now()
	var (
		wg    sync.WaitGroup
		errMu sync.Mutex
		first error
	)
	k := 0
	for ctx.Err() == nil {
		now := time.Now()
		if now.Sub(start) >= d {
			break
		}
		// Everything due by now goes out now: the schedule, not the
		// timer's precision, sets the rate.
		for ; start.Add(time.Duration(k) * interval).Before(now); k++ {
			n, due := k, start.Add(time.Duration(k)*interval)
			wg.Go(func() {
				if err := send(n, due); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
				}
			})
		}
		time.Sleep(min(interval, time.Millisecond))
	}
	wg.Wait()
	return first
}
