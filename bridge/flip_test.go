package bridge

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestFlipTracker walks one flip through its stages: marked, routed,
// confirmed by a cloud answer sent after the route, finished once its hold
// has drained; a route published after the probe was sent is not
// confirmed by it.
func TestFlipTracker(t *testing.T) {
	f := newFlipTracker()
	t0 := time.Unix(1000, 0)
	none := func(string) bool { return false }
	f.mark("ulla", t0)
	f.mark("uwe", t0)
	if !f.flipping("ulla") || !f.blocked("ulla", t0, false) || f.unconfirmed() || f.released("ulla") {
		t.Fatal("a fresh flip must be flipping, blocked, not released, and not yet waiting for the cloud")
	}
	if !f.routed("ulla", t0) || f.routed("nobody", t0) {
		t.Fatal("routed must report whether the user was flipping")
	}
	f.routed("uwe", t0.Add(time.Second))
	if !f.unconfirmed() {
		t.Fatal("a routed flip waits for the cloud")
	}
	if got := f.confirm(t0); len(got) != 1 || got[0] != "ulla" {
		t.Fatalf("confirm at t0 released %v, want [ulla] (uwe was routed after the probe)", got)
	}
	if f.blocked("ulla", t0, false) || !f.blocked("uwe", t0, false) {
		t.Fatal("ulla's hold may drain, uwe's not yet")
	}
	if !f.released("ulla") || f.released("uwe") {
		t.Fatal("ulla's hold is released once it may drain, uwe's is not")
	}
	if n := f.finish(t0, none, none); n != 0 || !f.flipping("ulla") {
		t.Fatal("a flip whose hold has not drained must not end")
	}
	if n := f.finish(t0, func(string) bool { return true }, none); n != 1 || f.flipping("ulla") || !f.flipping("uwe") {
		t.Fatal("ulla's flip must end once drained, uwe's not")
	}
	if !f.released("ulla") {
		t.Fatal("a flip that ended is released")
	}
	if !f.unmark("uwe") || f.unmark("uwe") {
		t.Fatal("unmark must report whether a flip was under way")
	}
}

// TestFlipWaitsForDelta: a confirmed flip whose final delta is still due
// stays blocked (and does not end) for up to flipDeltaWait, so that the
// delta's copies land before the held messages; after that it drains
// anyway, and the delta comes too late.
func TestFlipWaitsForDelta(t *testing.T) {
	f := newFlipTracker()
	t0 := time.Unix(1000, 0)
	due := func(string) bool { return true }
	drained := func(string) bool { return true }
	f.mark("ulla", t0)
	f.routed("ulla", t0)
	f.confirm(t0)
	if !f.blocked("ulla", t0.Add(time.Second), true) || f.released("ulla") {
		t.Fatal("a flip with its delta due must stay blocked within flipDeltaWait")
	}
	if n := f.finish(t0.Add(time.Second), drained, due); n != 0 {
		t.Fatal("a flip with its delta due must not end within flipDeltaWait")
	}
	if f.blocked("ulla", t0.Add(time.Second), false) || !f.released("ulla") {
		t.Fatal("once the delta is done the hold drains")
	}
	f.mark("uwe", t0)
	f.routed("uwe", t0)
	f.confirm(t0)
	late := t0.Add(flipDeltaWait)
	if f.blocked("uwe", late, true) || !f.released("uwe") {
		t.Fatal("after flipDeltaWait the hold drains even with the delta due")
	}
	if n := f.finish(late, drained, due); n != 2 {
		t.Fatalf("finish ended %d flips, want 2", n)
	}
}

// TestQueueExpiryReportsToOrigin: an expired entry is reported to its
// origin before it leaves the queue; a report that fails keeps the entry
// for a later attempt; an expired mirror copy leaves without a report.
func TestQueueExpiryReportsToOrigin(t *testing.T) {
	eng := enginetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	clock := func() time.Time { return now }
	var reported []string
	failReport := true
	spec := outboxSpec(1, m)
	spec.mirror = func(context.Context, cloudwire.Event) (bool, error) { return false, errors.New("unreachable") }
	spec.mirrorExpired = prometheus.NewCounter(prometheus.CounterOpts{Name: "mirror_expired"})
	spec.expired = func(_ context.Context, e outboxEntry) (bool, error) {
		if failReport {
			return false, errors.New("link down")
		}
		reported = append(reported, e.Event.MsgID)
		return false, nil
	}
	overlay := &fakeOverlay{}
	o, err := newQueue(ctx, eng.JS, spec, time.Minute, overlay.deliver, clock, slog.New(slog.DiscardHandler), m)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.addEntry(ctx, outboxEntry{Event: cloudwire.Event{User: "kai", MsgID: "copy", Kind: cloudwire.KindMsg}, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	if err := o.add(ctx, cloudwire.Event{User: "kai", MsgID: "real", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	if err := o.drain(ctx, "kai"); err == nil {
		t.Fatal("a failed report must end the drain with an error")
	}
	if !o.pending("kai") || testutil.ToFloat64(spec.mirrorExpired) != 1 {
		t.Fatal("the mirror copy must expire without a report, the real message stay until reported")
	}
	failReport = false
	if err := o.drain(ctx, "kai"); err != nil {
		t.Fatal(err)
	}
	if len(reported) != 1 || reported[0] != "real" || o.pending("kai") || len(overlay.got()) != 0 {
		t.Fatalf("reported %v, pending %v, delivered %v; want [real], false, none", reported, o.pending("kai"), overlay.got())
	}
	if got := testutil.ToFloat64(m.messages.WithLabelValues(dirCloudToLegacy, resultUndeliverable)); got != 1 {
		t.Fatalf("undeliverable %v, want 1", got)
	}
}

// TestNoticeID: the undeliverable notice of a message has one id, a valid
// cloud message id, different from the message's own.
func TestNoticeID(t *testing.T) {
	a, b := noticeID("0191c0de-0000-7000-8000-000000000001"), noticeID("0191c0de-0000-7000-8000-000000000001")
	if a != b || a == noticeID("0191c0de-0000-7000-8000-000000000002") || !cloudwire.ValidMsgID(a) {
		t.Fatalf("notice ids %q %q", a, b)
	}
}
