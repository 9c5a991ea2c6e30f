package bridge

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

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
	eng := enginetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	overlay := &fakeOverlay{}
	o, err := newOutbox(ctx, eng.JS, time.Minute, overlay.deliver, clock, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.add(ctx, cloudwire.Event{User: "kai", MsgID: "old", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if err := o.drain(ctx, "kai"); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.messages.WithLabelValues(dirCloudToLegacy, resultUndeliverable)); got != 1 {
		t.Fatalf("undeliverable %v, want 1", got)
	}
	if o.pending("kai") || len(overlay.got()) != 0 {
		t.Fatal("an expired message was kept or delivered")
	}
}
