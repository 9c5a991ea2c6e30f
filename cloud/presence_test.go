package cloud

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// liveCollector drains a client's Live channel in the background.
type liveCollector struct {
	ch  <-chan cloudwire.Frame
	got []cloudwire.Frame
}

// next waits for the next live frame satisfying ok, skipping others.
func (lc *liveCollector) next(tb testing.TB, ok func(cloudwire.Frame) bool) cloudwire.Frame {
	tb.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case f, open := <-lc.ch:
			if !open {
				tb.Fatal("live channel closed")
			}
			lc.got = append(lc.got, f)
			if ok(f) {
				return f
			}
		case <-deadline:
			tb.Fatalf("no matching live frame in %v; got %v", waitFor, lc.got)
		}
	}
}

func presenceOf(user, device, state string) func(cloudwire.Frame) bool {
	return func(f cloudwire.Frame) bool {
		p, ok := f.(cloudwire.Presence)
		return ok && p.User == user && p.Device == device && p.State == state
	}
}

// TestPresenceFanOut: a device's presence reaches the people who share a
// conversation with its user and the user's other devices, not others.
func TestPresenceFanOut(t *testing.T) {
	f := newFixture(t, nil)
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	send(t, a1, "bob", "hi") // alice and bob now share a conversation
	alice := &liveCollector{ch: a1.Live()}
	b1 := f.dial(t, "bob", "b1", 0)
	collect(b1)
	bob := &liveCollector{ch: b1.Live()}
	c1 := f.dial(t, "carol", "c1", 0)
	collect(c1)
	carol := &liveCollector{ch: c1.Live()}
	alice.next(t, presenceOf("bob", "b1", cloudwire.PresenceActive))

	b2 := f.dial(t, "bob", "b2", 0)
	collect(b2)
	alice.next(t, presenceOf("bob", "b2", cloudwire.PresenceActive))
	bob.next(t, presenceOf("bob", "b2", cloudwire.PresenceActive))

	if err := b2.SetPresence(context.Background(), cloudwire.PresenceIdle); err != nil {
		t.Fatal(err)
	}
	p := alice.next(t, presenceOf("bob", "b2", cloudwire.PresenceIdle)).(cloudwire.Presence)
	if p.At.IsZero() {
		t.Error("presence without time")
	}
	b2.Close()
	alice.next(t, presenceOf("bob", "b2", cloudwire.PresenceOffline))
	bob.next(t, presenceOf("bob", "b2", cloudwire.PresenceOffline))

	// Carol shares no conversation with Alice or Bob: she sees only her
	// own device's presence.
	settle()
	for _, fr := range drainLive(carol.ch) {
		if p, ok := fr.(cloudwire.Presence); ok && p.User != "carol" {
			t.Errorf("carol saw %+v", p)
		}
	}
}

func drainLive(ch <-chan cloudwire.Frame) []cloudwire.Frame {
	var out []cloudwire.Frame
	for {
		select {
		case f := <-ch:
			out = append(out, f)
		default:
			return out
		}
	}
}

// TestTyping: typing goes to the conversation's members' sessions but the
// typing one; non-members are refused.
func TestTyping(t *testing.T) {
	f := newFixture(t, nil)
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	ack := send(t, a1, "bob", "hi")
	b1 := f.dial(t, "bob", "b1", 0)
	collect(b1)
	bob := &liveCollector{ch: b1.Live()}
	c1 := f.dial(t, "carol", "c1", 0)
	collect(c1)
	carol := &liveCollector{ch: c1.Live()}

	ctx := context.Background()
	if err := a1.SetTyping(ctx, ack.Conv, true); err != nil {
		t.Fatal(err)
	}
	got := bob.next(t, func(f cloudwire.Frame) bool { _, ok := f.(cloudwire.Typing); return ok })
	if diff := cmp.Diff(cloudwire.Frame(cloudwire.Typing{Conv: ack.Conv, User: "alice", Device: "a1", Typing: true}), got); diff != "" {
		t.Error(diff)
	}
	if err := c1.SetTyping(ctx, ack.Conv, true); err != nil {
		t.Fatal(err)
	}
	e := carol.next(t, func(f cloudwire.Frame) bool { _, ok := f.(cloudwire.Error); return ok }).(cloudwire.Error)
	if e.Code != cloudwire.CodeForbidden {
		t.Errorf("carol typing in alice and bob's conversation: %+v", e)
	}
}

// TestPresenceRateLimit: frames over the session's budget are refused with
// rate_limited; the session stays up and other requests still work.
func TestPresenceRateLimit(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.PresenceBurst = 3; c.PresenceRate = 0.001 })
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	ack := send(t, a1, "bob", "hi")
	alice := &liveCollector{ch: a1.Live()}
	ctx := context.Background()
	for range 3 {
		if err := a1.SetTyping(ctx, ack.Conv, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := a1.SetPresence(ctx, cloudwire.PresenceIdle); err != nil {
		t.Fatal(err)
	}
	e := alice.next(t, func(f cloudwire.Frame) bool { _, ok := f.(cloudwire.Error); return ok }).(cloudwire.Error)
	if e.Code != cloudwire.CodeRateLimited {
		t.Errorf("fourth frame: %+v", e)
	}
	send(t, a1, "bob", "still fine")
}

// snapshotOf waits for the presence snapshot on lc and returns its entries
// as "user/device/state", in order.
func snapshotOf(tb testing.TB, lc *liveCollector) []string {
	tb.Helper()
	snap := lc.next(tb, func(f cloudwire.Frame) bool { _, ok := f.(cloudwire.PresenceSnapshot); return ok }).(cloudwire.PresenceSnapshot)
	var out []string
	for _, p := range snap.Presences {
		if p.At.IsZero() {
			tb.Errorf("snapshot entry without time: %+v", p)
		}
		out = append(out, p.User+"/"+p.Device+"/"+p.State)
	}
	return out
}

// TestPresenceSnapshotOnConnect: a device that connects gets the current
// presence of its user's other devices and of the people who share a
// conversation with its user, and of no one else; offline devices are
// left out.
func TestPresenceSnapshotOnConnect(t *testing.T) {
	f := newFixture(t, nil)
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	alice := &liveCollector{ch: a1.Live()}
	send(t, a1, "bob", "hi")
	a2 := f.dial(t, "alice", "a2", 0)
	collect(a2)
	if err := a2.SetPresence(context.Background(), cloudwire.PresenceIdle); err != nil {
		t.Fatal(err)
	}
	alice.next(t, presenceOf("alice", "a2", cloudwire.PresenceIdle))
	c1 := f.dial(t, "carol", "c1", 0) // shares no conversation with bob
	collect(c1)

	b1 := f.dial(t, "bob", "b1", 0)
	collect(b1)
	want := []string{"alice/a1/active", "alice/a2/idle"}
	if diff := cmp.Diff(want, snapshotOf(t, &liveCollector{ch: b1.Live()})); diff != "" {
		t.Errorf("b1 snapshot (-want +got):\n%s", diff)
	}

	a2.Close()
	alice.next(t, presenceOf("alice", "a2", cloudwire.PresenceOffline))
	b2 := f.dial(t, "bob", "b2", 0)
	collect(b2)
	want = []string{"bob/b1/active", "alice/a1/active"}
	if diff := cmp.Diff(want, snapshotOf(t, &liveCollector{ch: b2.Live()})); diff != "" {
		t.Errorf("b2 snapshot (-want +got):\n%s", diff)
	}
}
