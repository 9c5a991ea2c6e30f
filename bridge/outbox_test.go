package bridge

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// fakeOverlay stands in for the overlay in the outbox's unit test: it refuses
// deliveries until opened, and records what it delivered.
type fakeOverlay struct {
	mu        sync.Mutex
	open      bool
	delivered []string
}

func (f *fakeOverlay) deliver(_ context.Context, ev cloudwire.Event) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.open {
		return false, errors.New("no live device")
	}
	f.delivered = append(f.delivered, ev.MsgID)
	return true, nil
}

func (f *fakeOverlay) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.delivered)
}

// TestOutboxKeepsOrderAcrossRestart queues messages for an unreachable
// recipient, restarts on the same engine, and checks that the new outbox
// knows what is pending, ignores a replayed message and delivers in order.
func TestOutboxKeepsOrderAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	eng := enginetest.StartIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	overlay := &fakeOverlay{}
	o, err := newOutbox(ctx, eng.JS, time.Hour, overlay.deliver, time.Now, log, m)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"m1", "m2", "m3"}
	for _, id := range ids {
		if err := o.add(ctx, cloudwire.Event{User: "ivy", MsgID: id, Kind: cloudwire.KindMsg}); err != nil {
			t.Fatal(err)
		}
	}
	if err := o.add(ctx, cloudwire.Event{User: "ivy", MsgID: "m1", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err) // a replay after a restart: deduplicated
	}
	if !o.pending("ivy") || o.pending("jon") {
		t.Fatal("pending is wrong before restart")
	}
	eng.Close()

	eng = enginetest.StartIn(t, dir)
	o, err = newOutbox(ctx, eng.JS, time.Hour, overlay.deliver, time.Now, log, m)
	if err != nil {
		t.Fatal(err)
	}
	if !o.pending("ivy") {
		t.Fatal("restarted outbox forgot ivy's queue")
	}
	if err := o.drain(ctx, "ivy"); err == nil {
		t.Fatal("drain to an unreachable recipient reported success")
	}
	o.updateGauges()
	if got := testutil.ToFloat64(m.outboxDepth); got != 3 {
		t.Fatalf("outbox depth %v, want 3", got)
	}
	overlay.mu.Lock()
	overlay.open = true
	overlay.mu.Unlock()
	if err := o.drain(ctx, "ivy"); err != nil {
		t.Fatal(err)
	}
	if got := overlay.got(); !slices.Equal(got, ids) {
		t.Fatalf("delivered %v, want %v", got, ids)
	}
	if o.pending("ivy") {
		t.Fatal("ivy still pending after her queue drained")
	}
}

// TestOutboxExpires checks that a message older than the TTL leaves the
// outbox as undeliverable instead of being retried forever.
func TestOutboxExpires(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	overlay := &fakeOverlay{}
	ctx, o := startTestOutbox(t, time.Minute, overlay, clock)
	if err := o.add(ctx, cloudwire.Event{User: "kai", MsgID: "old", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if err := o.drain(ctx, "kai"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(o.m.messages.WithLabelValues(dirCloudToLegacy, resultUndeliverable)); got != 1 {
		t.Fatalf("undeliverable %v, want 1", got)
	}
	if o.pending("kai") || len(overlay.got()) != 0 {
		t.Fatal("an expired message was kept or delivered")
	}
}

// failingDelete is an outbox stream whose deletes fail.
type failingDelete struct{ jetstream.Stream }

func (failingDelete) DeleteMsg(context.Context, uint64) error { return errors.New("delete refused") }

// TestOutboxDeleteFailureBacksOff checks that a failed delete of a delivered
// entry ends the drain and schedules a retry, instead of delivering the same
// head again at once.
func TestOutboxDeleteFailureBacksOff(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	overlay := &fakeOverlay{open: true}
	ctx, o := startTestOutbox(t, time.Hour, overlay, clock)
	if err := o.add(ctx, cloudwire.Event{User: "lea", MsgID: "m1", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err)
	}
	o.stream = failingDelete{o.stream}
	if err := o.drain(ctx, "lea"); err == nil {
		t.Fatal("drain with a failing delete reported success")
	}
	if got := overlay.got(); !slices.Equal(got, []string{"m1"}) {
		t.Fatalf("delivered %v, want [m1] once", got)
	}
	if !o.pending("lea") || slices.Contains(o.due(), "lea") {
		t.Fatal("after a failed delete lea is not pending, or is due again at once")
	}
}

// TestOutboxKeepsQueueAddedDuringDrain checks that a drain which finds the
// stream empty keeps a queue whose depth add has just bumped (the entry is
// published before the count), and makes it due at once.
func TestOutboxKeepsQueueAddedDuringDrain(t *testing.T) {
	overlay := &fakeOverlay{open: true}
	ctx, o := startTestOutbox(t, time.Hour, overlay, time.Now)
	// What drain sees if add counts an entry between drain's read of an
	// empty stream and its bookkeeping.
	o.mu.Lock()
	o.users["max"] = &outboxQueue{depth: 1, next: time.Now().Add(time.Hour), backoff: outboxBackoffMin}
	o.mu.Unlock()
	if err := o.drain(ctx, "max"); err != nil {
		t.Fatal(err)
	}
	if !o.pending("max") || !slices.Contains(o.due(), "max") {
		t.Fatal("drain dropped a queue with a counted entry, or did not make it due")
	}
	// An empty queue with nothing counted is forgotten.
	o.mu.Lock()
	o.users["max"].depth = 0
	o.mu.Unlock()
	if err := o.drain(ctx, "max"); err != nil {
		t.Fatal(err)
	}
	if o.pending("max") {
		t.Fatal("drain kept an empty queue")
	}
}

// startTestOutbox starts an engine and an outbox on it delivering to
// overlay, with ttl and clock. Its context ends with the test, at most 30 s
// in.
func startTestOutbox(t *testing.T, ttl time.Duration, overlay *fakeOverlay, clock func() time.Time) (context.Context, *outbox) {
	t.Helper()
	eng := enginetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	o, err := newOutbox(ctx, eng.JS, ttl, overlay.deliver, clock, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, o
}
