package cloud

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// kinds returns the events of kind among evs.
func kinds(evs []cloudwire.Event, kind string) []cloudwire.Event {
	var out []cloudwire.Event
	for _, ev := range evs {
		if ev.Kind == kind {
			out = append(out, ev)
		}
	}
	return out
}

// TestPostUndeliverable: the bridge's report reaches every device of the
// sender, live or at a later sync, once however often it is posted, and
// never the recipient; an unknown message or recipient is refused.
func TestPostUndeliverable(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	phone := f.dial(t, "alice", "phone", 0)
	live := collect(phone)
	ack := send(t, phone, "bob", "are you there?")
	live.waitN(t, 1)

	bl := NewBridgeLive(f.eng.JS)
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)
	for i := range 3 {
		dup, err := bl.PostUndeliverable(ctx, ack.MsgID, "bob", cloudwire.UndeliverableExpired, at)
		if err != nil {
			t.Fatalf("post %d: %v", i, err)
		}
		if dup != (i > 0) {
			t.Fatalf("post %d: dup = %v", i, dup)
		}
	}
	for _, tc := range []struct{ name, msgID, to string }{
		{"unknown message", msgID(t), "bob"},
		{"not its recipient", ack.MsgID, "carol"},
		{"its sender", ack.MsgID, "alice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := bl.PostUndeliverable(ctx, tc.msgID, tc.to, cloudwire.UndeliverableExpired, at); !errors.Is(err, ErrUnknownMessage) {
				t.Fatalf("err = %v, want ErrUnknownMessage", err)
			}
		})
	}

	want := cloudwire.Event{User: "alice", Kind: cloudwire.KindUndeliverable, Conv: ack.Conv, Seq: ack.Seq,
		MsgID: ack.MsgID, From: "alice", To: "bob", Reason: cloudwire.UndeliverableExpired, At: at}
	check := func(t *testing.T, evs []cloudwire.Event) {
		t.Helper()
		got := kinds(evs, cloudwire.KindUndeliverable)
		if len(got) != 1 {
			t.Fatalf("%d undeliverable events, want 1: %+v", len(got), evs)
		}
		g := got[0]
		g.Cursor = 0
		if d := cmp.Diff(want, g); d != "" {
			t.Fatalf("event (-want +got):\n%s", d)
		}
	}
	check(t, live.waitN(t, 2))
	laptop := collect(f.dial(t, "alice", "laptop", 0))
	check(t, laptop.waitN(t, 2))
	bob := collect(f.dial(t, "bob", "phone", 0))
	bob.waitN(t, 1)
	settle()
	if got := kinds(bob.events(), cloudwire.KindUndeliverable); len(got) != 0 {
		t.Fatalf("the recipient got %+v", got)
	}
	if n := len(live.events()) + len(laptop.events()); n != 4 {
		t.Fatalf("alice's devices got %d events, want 2 each", n)
	}
}
