package bridge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestSystemNoteCarriedOnce: a system note in a legacy user's inbox is
// queued for their devices once, however often the feed shows it and by
// however many bridges; a mover's own note and a cloud notice are not
// carried.
func TestSystemNoteCarriedOnce(t *testing.T) {
	eng := enginetest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	overlay := &fakeOverlay{} // closed: nothing is delivered, so the head stays queued
	// newBridge is one bridge process on the shared engine: its own
	// in-memory state over the same id map and outbox stream.
	newBridge := func() *Bridge {
		b := &Bridge{log: log, metrics: m}
		var err error
		if b.flow, err = newFlowMetrics(nil); err != nil {
			t.Fatal(err)
		}
		if b.ledger, err = newLedger(ctx, eng.JS, 1); err != nil {
			t.Fatal(err)
		}
		if b.outbox, err = newOutbox(ctx, eng.JS, time.Hour, overlay.deliver, time.Now, log, m); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b1 := newBridge()
	// Something already waits for lars, so the note queues behind it
	// (and no delivery is tried).
	if err := b1.outbox.add(ctx, cloudwire.Event{User: "lars", MsgID: "m1", Kind: cloudwire.KindMsg}); err != nil {
		t.Fatal(err)
	}
	note := cloudwire.Event{User: "lars", Kind: cloudwire.KindSystem, Conv: cloudwire.DirectConversationID("cleo", "lars"),
		Seq: 4, MsgID: "sys0123456789abcdef0123456789abcdef", From: "cleo", To: "lars", Text: "cleo moved to the new app", At: time.Now()}
	own := note
	own.User, own.MsgID = "cleo", "sys00000000000000000000000000000001"
	notice := note
	notice.From, notice.MsgID = cloudwire.SystemContact, "ntc00000000000000000000000000000001"

	for _, ev := range []cloudwire.Event{note, note, own, notice} {
		if err := b1.noteToLegacy(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	b2 := newBridge() // a second bridge, or this one after a restart
	if !b2.outbox.pending("lars") {
		t.Fatal("the second bridge does not see lars's queue")
	}
	if err := b2.noteToLegacy(ctx, note); err != nil {
		t.Fatal(err)
	}
	if q := testutil.ToFloat64(b1.flow.notes.WithLabelValues(resultQueued)) + testutil.ToFloat64(b2.flow.notes.WithLabelValues(resultQueued)); q != 1 {
		t.Fatalf("note queued %v times, want 1", q)
	}
	if b1.outbox.pending("cleo") {
		t.Fatal("the mover's own note was queued")
	}
	info, err := b1.outbox.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("outbox holds %d entries, want the message and the note", info.State.Msgs)
	}
}
