package cloud

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// runLink starts a Link for user on device at url and runs it until the
// test ends; the returned channel gets Run's result.
func runLink(tb testing.TB, url, user, device string, mutate func(*LinkConfig)) (*Link, <-chan error) {
	tb.Helper()
	cfg := LinkConfig{
		Client: ClientConfig{
			URL:   url,
			Token: token(tb, user, cloudwire.RoleUser),
			Hello: cloudwire.Hello{Device: device, Platform: "test", ClientVersion: "1.0.0"},
		},
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	l, err := NewLink(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		done <- l.Run(ctx)
	}()
	tb.Cleanup(func() {
		cancel()
		select {
		case <-stopped:
		case <-time.After(waitFor):
			tb.Error("Link.Run did not return")
		}
	})
	return l, done
}

// linkEvents drains a link's events in the background.
type linkEvents struct {
	mu  sync.Mutex
	evs []cloudwire.Event
}

func drainLink(l *Link) *linkEvents {
	le := &linkEvents{}
	go func() {
		for ev := range l.Events() {
			le.mu.Lock()
			le.evs = append(le.evs, ev)
			le.mu.Unlock()
		}
	}()
	return le
}

func (le *linkEvents) snapshot() []cloudwire.Event {
	le.mu.Lock()
	defer le.mu.Unlock()
	return append([]cloudwire.Event(nil), le.evs...)
}

// msgsFrom returns the texts of the msg events from user, in arrival order.
func msgsFrom(evs []cloudwire.Event, user string) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == cloudwire.KindMsg && ev.From == user {
			out = append(out, ev.Text)
		}
	}
	return out
}

// TestLinkSurvivesServiceRestart: while one device sends a stream of
// messages to another through Links, the service is restarted twice at the
// same address (a graceful "going away" and a forced stop). Every send is
// acknowledged, and both devices see every message exactly once, in
// order, with strictly increasing cursors.
func TestLinkSurvivesServiceRestart(t *testing.T) {
	eng := enginetest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	url := "ws://" + addr + "/v1/ws"
	n := startNodeOn(t, eng.JS, ln, nil)

	alice, _ := runLink(t, url, "alice", "a1", nil)
	bob, _ := runLink(t, url, "bob", "b1", nil)
	aEvs, bEvs := drainLink(alice), drainLink(bob)

	const total = 60
	acked := make(chan int, total)
	sendErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for i := range total {
			if _, err := alice.Send(ctx, cloudwire.Send{To: "bob", Text: fmt.Sprintf("m%02d", i)}); err != nil {
				sendErr <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			acked <- i
			time.Sleep(5 * time.Millisecond)
		}
		sendErr <- nil
	}()
	waitAcked := func(k int) {
		t.Helper()
		deadline := time.After(time.Minute)
		for {
			select {
			case i := <-acked:
				if i+1 >= k {
					return
				}
			case err := <-sendErr:
				if err != nil || len(acked) == 0 {
					t.Fatalf("sender stopped early: %v", err)
				}
				sendErr <- err // finished; the acks are still queued
			case <-deadline:
				t.Fatalf("fewer than %d sends acknowledged", k)
			}
		}
	}
	restart := func(forced bool) {
		t.Helper()
		want, wantB := alice.Connections()+1, bob.Connections()+1
		if forced {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // an expired deadline: sessions are dropped at once
			_ = n.svc.Shutdown(ctx)
		}
		n.stop()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen again on %s: %v", addr, err)
		}
		n = startNodeOn(t, eng.JS, ln, nil)
		// Both devices come back before the next step, so that each
		// restart is one reconnect of each.
		deadline := time.Now().Add(waitFor)
		for alice.Connections() < want || bob.Connections() < wantB {
			if time.Now().After(deadline) {
				t.Fatalf("links did not reconnect: alice %d, bob %d", alice.Connections(), bob.Connections())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(total / 3)
	restart(false)
	waitAcked(2 * total / 3)
	restart(true)
	select {
	case err := <-sendErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("sender did not finish")
	}

	want := make([]string, total)
	for i := range want {
		want[i] = fmt.Sprintf("m%02d", i)
	}
	for _, dev := range []struct {
		name string
		l    *Link
		evs  *linkEvents
	}{{"alice", alice, aEvs}, {"bob", bob, bEvs}} {
		deadline := time.Now().Add(waitFor)
		var evs []cloudwire.Event
		for {
			evs = dev.evs.snapshot()
			if len(msgsFrom(evs, "alice")) >= total || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		settle()
		evs = dev.evs.snapshot()
		got := msgsFrom(evs, "alice")
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s got %d messages %v, want %d in order, once each", dev.name, len(got), got, total)
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Cursor <= evs[i-1].Cursor {
				t.Errorf("%s: cursor %d after %d", dev.name, evs[i].Cursor, evs[i-1].Cursor)
			}
		}
		if c := dev.l.Connections(); c < 3 {
			t.Errorf("%s connected %d times, want at least 3 (two restarts)", dev.name, c)
		}
	}
}

// TestLinkStopsOnRefusal: a refusal that reconnecting cannot change ends
// Run with the typed error, and pending requests fail with it.
func TestLinkStopsOnRefusal(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Admit = func(_ context.Context, user string) error {
			if user == "mallory" {
				return errors.New("not yet")
			}
			return nil
		}
		c.CheckClient = func(_ context.Context, _ string, h cloudwire.Hello) *cloudwire.UpgradeRequired {
			if h.ClientVersion == "0.1.0" {
				return &cloudwire.UpgradeRequired{Minimum: "1.0.0"}
			}
			return nil
		}
	})
	cases := []struct {
		name   string
		user   string
		mutate func(*LinkConfig)
		check  func(error) bool
	}{
		{"4403 admission", "mallory", nil, func(err error) bool {
			var ce *CloseError
			return errors.As(err, &ce) && ce.Code == cloudwire.CloseForbidden
		}},
		{"4426 upgrade required", "alice", func(c *LinkConfig) { c.Client.Hello.ClientVersion = "0.1.0" }, func(err error) bool {
			var ue *UpgradeRequiredError
			return errors.Is(err, ErrUpgradeRequired) && errors.As(err, &ue) && ue.Reason.Minimum == "1.0.0"
		}},
		{"4401 bad token in hello", "alice", func(c *LinkConfig) {
			c.Client.Token = ""
			c.Client.Hello.Token = "not-a-token"
		}, func(err error) bool {
			var ce *CloseError
			return errors.As(err, &ce) && ce.Code == cloudwire.CloseUnauthorized
		}},
		{"401 bad token in header", "alice", func(c *LinkConfig) { c.Client.Token = "not-a-token" }, func(err error) bool {
			var de *DialError
			return errors.As(err, &de) && de.StatusCode == 401
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, done := runLink(t, f.url, tc.user, "d1", tc.mutate)
			var err error
			select {
			case err = <-done:
			case <-time.After(waitFor):
				t.Fatal("Run did not stop")
			}
			if !tc.check(err) {
				t.Fatalf("Run = %v (%T)", err, err)
			}
			if c := l.Connections(); c != 0 {
				t.Errorf("welcomed %d times", c)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			if _, serr := l.Send(ctx, cloudwire.Send{To: "bob", Text: "x"}); !errors.Is(serr, err) {
				t.Errorf("Send after the refusal = %v, want %v", serr, err)
			}
		})
	}
}

// FuzzRetryAfter: any Retry-After header parses to a wait from 0 to an
// hour, without panicking.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"1", " 5 ", "0", "-3", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if d := retryAfter(h); d < 0 || d > time.Hour {
			t.Fatalf("retryAfter(%q) = %v", h, d)
		}
	})
}
