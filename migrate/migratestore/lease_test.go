package migratestore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

var _ migrate.LeaseStore = (*Leases)(nil)

func TestLeaseCompareAndSet(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cs, err := NewCampaigns(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	l := cs.Leases()
	// Racing for a free lease: exactly one of eight wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_, err := l.Acquire(ctx, fmt.Sprintf("agent-%d", i), t0, time.Minute)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, migrate.ErrLeaseHeld):
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d winners", wins.Load())
	}
	cur, err := l.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The holder renews, keeping its acquisition time; others are refused
	// until the expiry, and told who holds it.
	ren, err := l.Acquire(ctx, cur.Holder, t0.Add(30*time.Second), time.Minute)
	if err != nil || !ren.Acquired.Equal(t0) || !ren.Expires.Equal(t0.Add(90*time.Second)) {
		t.Fatalf("renewal: %+v %v", ren, err)
	}
	got, err := l.Acquire(ctx, "other", t0.Add(89*time.Second), time.Minute)
	if !errors.Is(err, migrate.ErrLeaseHeld) || got.Holder != cur.Holder {
		t.Fatalf("before expiry: %+v %v", got, err)
	}
	if got, err = l.Acquire(ctx, "other", t0.Add(90*time.Second), time.Minute); err != nil || got.Holder != "other" {
		t.Fatalf("after expiry: %+v %v", got, err)
	}
	// Release by a former holder changes nothing; by the holder, frees it.
	if err := l.Release(ctx, cur.Holder); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, cur.Holder, t0.Add(91*time.Second), time.Minute); !errors.Is(err, migrate.ErrLeaseHeld) {
		t.Fatalf("stale release freed the lease: %v", err)
	}
	if err := l.Release(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, cur.Holder, t0.Add(92*time.Second), time.Minute); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

// agentDriver is one agent's driver over a shared JetStream: its own user
// store and State, campaign bucket handle and lease store.
type agentDriver struct {
	d     *migrate.Driver
	st    *migrate.State
	moves atomic.Int64
}

func newAgentDriver(t *testing.T, ctx context.Context, js jetstream.JetStream, holder string, now func() time.Time, tick, ttl time.Duration) *agentDriver {
	t.Helper()
	users := startStore(t, ctx, js, Config{})
	cs, audit := campaignStores(t, ctx, js)
	a := &agentDriver{st: users.st}
	var err error
	a.d, err = migrate.NewDriver(migrate.DriverConfig{State: users.st, Users: users.Store, Campaigns: DriverCampaigns{cs, audit}, Audit: audit,
		Leases: cs.Leases(), Holder: holder, LeaseTTL: ttl, Tick: tick, Now: now, MaxPerTick: 20,
		OnTransition: func(_, _ migrate.Phase, result string) {
			if result == migrate.ResultOK {
				a.moves.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// seedCampaign stores n users and a running campaign that moves all of them.
func seedCampaign(t *testing.T, ctx context.Context, js jetstream.JetStream, n int) {
	t.Helper()
	users := startStore(t, ctx, js, Config{})
	for i := range n {
		if _, err := users.SeeDevice(ctx, fmt.Sprintf("u%03d", i), migrate.Device{ID: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := NewCampaigns(ctx, js, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := migrate.Campaign{Name: "l", Steps: []migrate.Step{{TargetBP: migrate.BasisPoints}}, Pace: migrate.Pace{PerMinute: 1 << 30}}
	c, _ = c.Lifecycle(migrate.CmdStart, "test", "salt", t0)
	if _, err := cs.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	users.stop()
}

// TestLeaseTwoDrivers runs two agents' drivers on one embedded JetStream
// with a fake clock: only the lease holder moves anyone; when it dies (stops
// renewing) the other takes over after the TTL and finishes the campaign;
// the dead one, back, moves nobody.
func TestLeaseTwoDrivers(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	const n = 100
	seedCampaign(t, ctx, e.JS, n)
	clock := &fakeClock{t: t0}
	const ttl = 15 * time.Second
	a := newAgentDriver(t, ctx, e.JS, "agent-a", clock.Now, time.Second, ttl)
	b := newAgentDriver(t, ctx, e.JS, "agent-b", clock.Now, time.Second, ttl)
	tick := func(ad *agentDriver) {
		t.Helper()
		if err := ad.d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		tick(a)
		tick(b)
		clock.Advance(time.Second)
	}
	if a.moves.Load() == 0 || b.moves.Load() != 0 {
		t.Fatalf("both drive: a moved %d, b moved %d", a.moves.Load(), b.moves.Load())
	}
	if l := b.d.Lease(); l.Holder != "agent-a" {
		t.Fatalf("b sees the lease as %+v", l)
	}
	// a dies: it stops renewing. Within the TTL b still waits.
	aMoves := a.moves.Load()
	for range 10 {
		clock.Advance(time.Second)
		tick(b)
	}
	if b.moves.Load() != 0 {
		t.Fatalf("b moved %d users before a's lease expired", b.moves.Load())
	}
	clock.Advance(ttl)
	cloud := func(st *migrate.State) int { return st.Snapshot().Count(migrate.PhaseCloud) }
	for i := 0; cloud(b.st) < n; i++ {
		if i > 1000 {
			t.Fatalf("b did not finish: %d in cloud", cloud(b.st))
		}
		tick(b)
		clock.Advance(time.Second)
		if i == 0 {
			tick(a) // a comes back: b holds the lease now
		}
	}
	if b.moves.Load() == 0 || a.moves.Load() != aMoves {
		t.Errorf("after the takeover: a moved %d more, b moved %d", a.moves.Load()-aMoves, b.moves.Load())
	}
	if l := a.d.Lease(); l.Holder != "agent-b" {
		t.Errorf("a sees the lease as %+v", l)
	}
	if got := a.moves.Load() + b.moves.Load(); got != 3*n {
		t.Errorf("%d moves in all, want %d (each user three edges, once)", got, 3*n)
	}
}

// TestLeaseReleasedOnStop: with a TTL too long to wait out, a driver that
// stops cleanly releases the lease and the other agent's driver takes over
// at its next tick.
func TestLeaseReleasedOnStop(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	seedCampaign(t, ctx, e.JS, 10)
	const tick, ttl = 10 * time.Millisecond, time.Hour
	a := newAgentDriver(t, ctx, e.JS, "agent-a", time.Now, tick, ttl)
	b := newAgentDriver(t, ctx, e.JS, "agent-b", time.Now, tick, ttl)
	run := func(ad *agentDriver) (stop func()) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ad.d.Run(rctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}
	stopA := run(a)
	waitFor(t, ctx, "a to hold the lease", func() bool { return a.d.Lease().Holder == "agent-a" && a.d.Lease().HeldAt(time.Now()) })
	stopB := run(b)
	defer stopB()
	waitFor(t, ctx, "b to see a's lease", func() bool { return b.d.Lease().Holder == "agent-a" })
	stopA()
	waitFor(t, ctx, "b to take over", func() bool { return b.d.Lease().Holder == "agent-b" })
}
