package bridge

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// feedProbe records what a feed's handler saw, per user, and can hold one
// user's events until released.
type feedProbe struct {
	mu      sync.Mutex
	seen    map[string][]uint64
	cursor  uint64
	hold    string
	release chan struct{}
	failAt  uint64
}

func (p *feedProbe) handle(ctx context.Context, ev cloudwire.Event) error {
	if ev.Cursor == p.failAt {
		return errors.New("probe: refused")
	}
	if ev.User == p.hold {
		select {
		case <-p.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	p.seen[ev.User] = append(p.seen[ev.User], ev.Cursor)
	p.mu.Unlock()
	return nil
}

func (p *feedProbe) advance(c uint64) {
	p.mu.Lock()
	p.cursor = max(p.cursor, c)
	p.mu.Unlock()
}

func (p *feedProbe) state() (map[string][]uint64, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string][]uint64{}
	for u, s := range p.seen {
		out[u] = slices.Clone(s)
	}
	return out, p.cursor
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("gave up waiting: %s", what)
}

// TestFeedSlowUserHoldsUpNoOne: while one user's first event is held, the
// other user's events are all handled, in order; the cursor stays before
// the held event until it is handled, then moves to the end.
func TestFeedSlowUserHoldsUpNoOne(t *testing.T) {
	p := &feedProbe{seen: map[string][]uint64{}, hold: "slow", release: make(chan struct{})}
	f := newFeed(p.handle, p.advance, func(string, string) {})
	events := make(chan cloudwire.Event, 64)
	// Cursors 11..40: every third event is the slow user's.
	var want []uint64
	for c := uint64(11); c <= 40; c++ {
		u := "fast"
		if c%3 == 2 {
			u = "slow"
		}
		if u == "fast" {
			want = append(want, c)
		}
		events <- cloudwire.Event{User: u, Cursor: c, Kind: cloudwire.KindMsg}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := f.serve(ctx, 10, events); done <- err }()

	waitFor(t, "the fast user's events", func() bool { s, _ := p.state(); return len(s["fast"]) == len(want) })
	seen, cursor := p.state()
	if !slices.Equal(seen["fast"], want) {
		t.Fatalf("fast user's events %v, want %v in order", seen["fast"], want)
	}
	if len(seen["slow"]) != 0 || cursor != 10 {
		t.Fatalf("slow user handled %v, cursor %d; want none handled and the cursor at 10 (before the held 11)", seen["slow"], cursor)
	}
	close(p.release)
	waitFor(t, "the cursor to reach 40", func() bool { _, c := p.state(); return c == 40 })
	seen, _ = p.state()
	if !slices.Equal(seen["slow"], []uint64{11, 14, 17, 20, 23, 26, 29, 32, 35, 38}) {
		t.Fatalf("slow user's events %v, not all in order", seen["slow"])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

// TestFeedFailureStopsBeforeTheEvent: an event that fails ends serve with
// the error, the cursor stays before it, and none of its user's later
// events is handled.
func TestFeedFailureStopsBeforeTheEvent(t *testing.T) {
	p := &feedProbe{seen: map[string][]uint64{}, failAt: 3}
	f := newFeed(p.handle, p.advance, func(string, string) {})
	events := make(chan cloudwire.Event, 8)
	for c := uint64(1); c <= 5; c++ {
		events <- cloudwire.Event{User: "u", Cursor: c, Kind: cloudwire.KindMsg}
	}
	closed, err := f.serve(context.Background(), 0, events)
	if closed || err == nil {
		t.Fatalf("serve = %v, %v; want the handler's error", closed, err)
	}
	seen, cursor := p.state()
	if !slices.Equal(seen["u"], []uint64{1, 2}) || cursor != 2 {
		t.Fatalf("handled %v, cursor %d; want [1 2] and 2", seen["u"], cursor)
	}
}
