package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestAdmissionShedsHandshakeFlood: with MaxHandshakes sessions stuck in
// their set-up (an admission check that does not answer), a flood of
// further handshakes is answered 503 with a Retry-After before any
// upgrade, counted as shed; the sessions open before keep working; once
// the stuck ones finish, a Link that was shed gets in after the
// Retry-After.
func TestAdmissionShedsHandshakeFlood(t *testing.T) {
	const slots, flood = 4, 64
	st := newStuckSetUp(t, func(c *Config) {
		c.MaxHandshakes = slots
		c.ShedRetry = time.Second
	})
	f, release := st.f, st.release

	// Healthy sessions, open and synced before the flood.
	alice := f.dial(t, "alice", "a1", 0)
	bob := f.dial(t, "bob", "b1", 0)
	waitSynced(t, alice)
	waitSynced(t, bob)
	bobEvs := collect(bob)
	collect(alice)

	// Fill every set-up slot with sessions stuck in admission.
	deadline := st.fill(t, slots)

	// The flood: every handshake is shed before the upgrade.
	var wg sync.WaitGroup
	var shed, other atomic.Int64
	for range flood {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, err := Dial(ctx, ClientConfig{URL: f.url, Token: token(t, "carol", cloudwire.RoleUser), Hello: cloudwire.Hello{Device: "c1"}})
			var de *DialError
			switch {
			case errors.As(err, &de) && de.StatusCode == http.StatusServiceUnavailable && de.RetryAfter == time.Second:
				shed.Add(1)
			default:
				if c != nil {
					c.Close()
				}
				other.Add(1)
				t.Errorf("flood dial: %v", err)
			}
		})
	}
	// Meanwhile the open sessions keep working.
	ack := send(t, alice, "bob", "during the flood")
	wg.Wait()
	if shed.Load() != flood {
		t.Fatalf("%d of %d flood handshakes shed (%d otherwise)", shed.Load(), flood, other.Load())
	}
	evs := bobEvs.waitN(t, 1)
	if evs[len(evs)-1].MsgID != ack.MsgID {
		t.Fatalf("bob got %v, want %s", msgIDs(evs), ack.MsgID)
	}
	if got := testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")); got != flood {
		t.Errorf("gateway_cloud_handshakes_total{result=shed} = %v, want %d", got, flood)
	}
	if got := testutil.ToFloat64(f.svc.m.settingUp); got != slots {
		t.Errorf("gateway_cloud_handshakes_in_flight = %v, want %d", got, slots)
	}

	// A Link shed now comes back after the Retry-After, once the stuck
	// sessions are through.
	connected := make(chan struct{}, 1)
	l, _ := runLink(t, f.url, "carol", "c2", func(c *LinkConfig) {
		c.OnConnect = func(cloudwire.Welcome) { connected <- struct{}{} }
	})
	drainLink(l)
	for testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")) == flood {
		if time.Now().After(deadline.Add(waitFor)) {
			t.Fatal("the link was never shed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	release()
	select {
	case <-connected:
	case <-time.After(waitFor):
		t.Fatal("the shed link never connected")
	}
	if alice.Err() != nil || bob.Err() != nil {
		t.Errorf("healthy sessions dropped: %v, %v", alice.Err(), bob.Err())
	}
}

// newTestAdmission is an admission of slots slots (a line of
// handshakeQueueFactor*slots) and its in-flight gauge.
func newTestAdmission(slots int) (*admission, prometheus.Gauge) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight"})
	return newAdmission(slots, 0, new(atomic.Int64), g), g
}

// TestAdmissionLineHandsOverInOrder: handshakes beyond the slots wait in
// line and take freed slots in arrival order, the slot passing straight
// from the releaser to the first in line (the in-flight gauge never
// dips); a release is idempotent.
func TestAdmissionLineHandsOverInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, g := newTestAdmission(2)
		r1, ok1 := a.acquire(nil, nil, handshakeWait)
		r2, ok2 := a.acquire(nil, nil, handshakeWait)
		if !ok1 || !ok2 {
			t.Fatal("free slots refused")
		}
		const waiters = 3
		got := make(chan int, waiters)
		releases := make([]func(), waiters)
		for i := range waiters {
			go func() {
				r, ok := a.acquire(nil, nil, handshakeWait)
				if !ok {
					t.Errorf("waiter %d shed", i)
					return
				}
				releases[i] = r
				got <- i
			}()
			synctest.Wait() // in line before the next one
		}
		r1()
		r1() // idempotent: frees nothing more
		synctest.Wait()
		if first := <-got; first != 0 || len(got) != 0 {
			t.Fatalf("after one release: waiter %d in, %d more", first, len(got))
		}
		if v := testutil.ToFloat64(g); v != 2 {
			t.Errorf("in flight %v, want 2", v)
		}
		r2()
		synctest.Wait()
		if second := <-got; second != 1 {
			t.Fatalf("second in: waiter %d, want 1", second)
		}
		releases[0]()
		synctest.Wait()
		if third := <-got; third != 2 {
			t.Fatalf("third in: waiter %d, want 2", third)
		}
		releases[1]()
		releases[2]()
		if v := testutil.ToFloat64(g); v != 0 {
			t.Errorf("in flight %v after every release, want 0", v)
		}
	})
}

// TestAdmissionSheds: a handshake is shed at once when the line is full,
// and after handshakeWait in line, or as soon as its client is gone or
// the service shuts down; a shed handshake holds no slot.
func TestAdmissionSheds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a, g := newTestAdmission(1)
		hold, _ := a.acquire(nil, nil, handshakeWait)
		gone, shutdown := make(chan struct{}), make(chan struct{})
		results := make(chan string, handshakeQueueFactor+2)
		wait := func(name string, gone, shutdown <-chan struct{}) {
			go func() {
				start := time.Now()
				if _, ok := a.acquire(gone, shutdown, handshakeWait); ok {
					results <- name + " admitted"
					return
				}
				results <- fmt.Sprintf("%s shed after %s", name, time.Since(start))
			}()
			synctest.Wait()
		}
		wait("gone", gone, nil)
		wait("shutdown", nil, shutdown)
		for range handshakeQueueFactor - 2 {
			wait("patient", nil, nil)
		}
		// The line is full now.
		if _, ok := a.acquire(nil, nil, handshakeWait); ok {
			t.Fatal("admitted past a full line")
		}
		for _, c := range []struct {
			ch   chan struct{}
			want string
		}{{gone, "gone shed after 0s"}, {shutdown, "shutdown shed after 0s"}} {
			close(c.ch)
			synctest.Wait()
			if got := <-results; got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		}
		time.Sleep(handshakeWait)
		synctest.Wait()
		for range handshakeQueueFactor - 2 {
			if got, w := <-results, "patient shed after "+handshakeWait.String(); got != w {
				t.Errorf("got %q, want %q", got, w)
			}
		}
		if v := testutil.ToFloat64(g); v != 1 {
			t.Errorf("in flight %v, want 1 (the held slot)", v)
		}
		hold()
		if _, ok := a.acquire(nil, nil, 0); !ok {
			t.Error("the freed slot was not free")
		}
	})
}

// TestAdmissionRetryAfterFollowsDrain: without a recent measure of how
// fast slots free up, Retry-After spreads over the whole limit; with one,
// over the time the slots held and the line take to free up.
func TestAdmissionRetryAfterFollowsDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit = 5 * time.Second
		a, _ := newTestAdmission(400)
		seen := map[int]bool{}
		for range 500 {
			n := a.retryAfter(limit)
			if n < 1 || n > 5 {
				t.Fatalf("Retry-After %d outside 1..5", n)
			}
			seen[n] = true
		}
		if len(seen) != 5 {
			t.Errorf("without a measure, Retry-After took %d values, want all of 1..5", len(seen))
		}
		// 400 sessions set up over 1 s, released 100 every 250 ms: 400/s.
		var releases []func()
		for range 400 {
			r, _ := a.acquire(nil, nil, 0)
			releases = append(releases, r)
		}
		for i := range 4 {
			time.Sleep(drainWindow)
			for _, r := range releases[i*100 : (i+1)*100] {
				r()
			}
		}
		for range 100 {
			if n := a.retryAfter(limit); n != 1 {
				t.Fatalf("Retry-After %d with nothing ahead at 400/s, want 1", n)
			}
		}
		// 400 slots held and 400 in line: 2 s at 400/s.
		for range 400 {
			a.acquire(nil, nil, 0)
		}
		for range 400 {
			go a.acquire(nil, nil, handshakeWait)
		}
		synctest.Wait()
		seen = map[int]bool{}
		for range 500 {
			seen[a.retryAfter(limit)] = true
		}
		if len(seen) != 2 || !seen[1] || !seen[2] {
			t.Errorf("800 ahead at 400/s: Retry-After took %v, want 1 and 2", seen)
		}
		time.Sleep(handshakeWait) // the line gives up
		seen = map[int]bool{}
		for range 500 {
			seen[a.retryAfter(limit)] = true
		}
		if len(seen) != 5 {
			t.Errorf("with a stale measure, Retry-After took %d values, want all of 1..5", len(seen))
		}
	})
}

// TestAdmissionLineEndsAtShutdown: a handshake waiting in line when the
// service starts shutting down is answered 503 as shutting down, not as
// shed.
func TestAdmissionLineEndsAtShutdown(t *testing.T) {
	st := newStuckSetUp(t, func(c *Config) { c.MaxHandshakes = 1 })
	f, release := st.f, st.release
	// The one slot: a session stuck in its admission check.
	deadline := st.fill(t, 1)
	// A handshake in line behind it.
	dialed := dialInLine(t, f, "carol", deadline)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		f.svc.Shutdown(ctx) //nolint:errcheck // the stuck session is released below
	}()
	err := <-dialed
	release()
	var de *DialError
	if !errors.As(err, &de) || de.StatusCode != http.StatusServiceUnavailable || !strings.Contains(de.Body, "shutting down") {
		t.Fatalf("dial in line at shutdown: %v, want 503 shutting down", err)
	}
	if got := testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shutting_down")); got != 1 {
		t.Errorf("gateway_cloud_handshakes_total{result=shutting_down} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")); got != 0 {
		t.Errorf("gateway_cloud_handshakes_total{result=shed} = %v, want 0", got)
	}
}

// stuckSetUp is a fixture whose admission check (Config.Admit) holds
// every session of user "slow" until release.
type stuckSetUp struct {
	f    *fixture
	held atomic.Int64 // sessions of "slow" in the admission check
	hold chan struct{}
	once sync.Once
}

// newStuckSetUp starts the fixture, with mutate applied to its Config,
// and releases the stuck sessions at the end of the test.
func newStuckSetUp(t *testing.T, mutate func(*Config)) *stuckSetUp {
	t.Helper()
	st := &stuckSetUp{hold: make(chan struct{})}
	st.f = newFixture(t, func(c *Config) {
		c.Registerer = prometheus.NewRegistry()
		c.Admit = func(ctx context.Context, user string) error {
			if user != "slow" {
				return nil
			}
			st.held.Add(1)
			select {
			case <-st.hold:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mutate(c)
	})
	t.Cleanup(st.release)
	return st
}

func (st *stuckSetUp) release() { st.once.Do(func() { close(st.hold) }) }

// fill opens n sessions of "slow" and waits until all are held in the
// admission check, each holding a set-up slot; it returns the deadline
// of the waits that follow.
func (st *stuckSetUp) fill(t *testing.T, n int) time.Time {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{cloudwire.Subprotocol}}
	hello, _ := cloudwire.Encode(cloudwire.Hello{Device: "stuck"})
	for range n {
		conn, _, err := d.Dial(st.f.url, http.Header{"Authorization": {"Bearer " + token(t, "slow", cloudwire.RoleUser)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if err := conn.WriteMessage(websocket.TextMessage, hello); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(waitFor)
	for st.held.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions reached admission", st.held.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return deadline
}

// TestAdmissionSessionEndWakesLine: with MaxSessions reached by welcomed
// sessions and no set-up slot held, a handshake in line takes the room a
// session leaves as soon as it ends, not when its wait runs out.
func TestAdmissionSessionEndWakesLine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_flight"})
		welcomed := new(atomic.Int64)
		a := newAdmission(100, 1, welcomed, g)
		welcomed.Add(1) // one welcomed session, its set-up done
		admitted := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			if _, ok := a.acquire(nil, nil, time.Minute); !ok {
				t.Error("shed with room on the node")
			}
			admitted <- time.Since(start)
		}()
		synctest.Wait()
		if len(admitted) != 0 {
			t.Fatal("admitted past MaxSessions")
		}
		welcomed.Add(-1)
		a.sessionEnded()
		synctest.Wait()
		select {
		case d := <-admitted:
			if d != 0 {
				t.Errorf("admitted after %s, want at the session's end", d)
			}
		default:
			t.Error("the session's end left the line asleep")
			<-admitted // its wait runs out; the bubble ends clean
		}
		if v := testutil.ToFloat64(g); v != 1 {
			t.Errorf("in flight %v, want 1 (the handed slot)", v)
		}
		a.sessionEnded() // no one in line: takes nothing
		if v := testutil.ToFloat64(g); v != 1 {
			t.Errorf("in flight %v after an idle sessionEnded, want 1", v)
		}
	})
}

// TestMaxSessionsLineTakesEndedSessionsRoom: on a Service at MaxSessions
// 1, a second client's handshake waits in line while the first session
// is open and gets in once that session closes, instead of being shed
// when its wait in line runs out.
func TestMaxSessionsLineTakesEndedSessionsRoom(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Registerer = prometheus.NewRegistry()
		c.MaxSessions = 1
	})
	alice := f.dial(t, "alice", "a1", 0)
	dialed := dialInLine(t, f, "bob", time.Now().Add(waitFor))
	alice.Close()
	if err := <-dialed; err != nil {
		t.Fatalf("dial in line after the open session closed: %v, want admitted", err)
	}
	if got := testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")); got != 0 {
		t.Errorf("gateway_cloud_handshakes_total{result=shed} = %v, want 0", got)
	}
}

// dialInLine dials f as user in the background and waits, until
// deadline, for the handshake to be the one waiting in admission's line;
// the dial's result (nil: admitted) comes on the channel returned.
func dialInLine(t *testing.T, f *fixture, user string, deadline time.Time) <-chan error {
	t.Helper()
	dialed := make(chan error, 1)
	tok := token(t, user, cloudwire.RoleUser)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		c, err := Dial(ctx, ClientConfig{URL: f.url, Token: tok, Hello: cloudwire.Hello{Device: user + "-1"}})
		if c != nil {
			c.Close()
		}
		dialed <- err
	}()
	for {
		f.svc.adm.mu.Lock()
		n := len(f.svc.adm.waiting)
		f.svc.adm.mu.Unlock()
		if n == 1 {
			return dialed
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handshake of %s never waited in line", user)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
