package cloud

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestPlaceholderForUndeliverableEvents: an inbox record that cannot be
// read (corrupt) or encoded (over the frame limit) reaches the device as a
// placeholder event at its cursor, live and on replay, with what could be
// read of it, and is counted; the events around it arrive as usual.
func TestPlaceholderForUndeliverableEvents(t *testing.T) {
	f := newFixture(t, nil)
	b1 := f.dial(t, "bob", "b1", 0)
	waitSynced(t, b1)
	live := collect(b1)
	alice := f.dial(t, "alice", "a1", 0)
	collect(alice)

	first := send(t, alice, "bob", "before")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := f.eng.JS.Publish(ctx, inboxSubject("bob"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	big, err := json.Marshal(inboxRecord{
		User: "bob", Kind: cloudwire.KindMsg, Conv: first.Conv, Seq: 99, MsgID: "big-1",
		From: "alice", To: "bob", Text: strings.Repeat("x", cloudwire.MaxFrameSize), At: time.Now().UTC(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.eng.JS.Publish(ctx, inboxSubject("bob"), big); err != nil {
		t.Fatal(err)
	}
	last := send(t, alice, "bob", "after")

	check := func(name string, evs []cloudwire.Event) {
		t.Helper()
		var kinds []string
		for _, ev := range evs {
			kinds = append(kinds, ev.Kind+"/"+ev.MsgID)
		}
		want := []string{"msg/" + first.MsgID, "placeholder/", "placeholder/big-1", "msg/" + last.MsgID}
		if strings.Join(kinds, " ") != strings.Join(want, " ") {
			t.Fatalf("%s got %v, want %v", name, kinds, want)
		}
		if evs[1].User != "bob" || evs[2].Conv != first.Conv || evs[2].Seq != 99 {
			t.Errorf("%s placeholders %+v %+v: want user bob, and conv and seq of the oversized one", name, evs[1], evs[2])
		}
		for i := 1; i < len(evs); i++ {
			if evs[i].Cursor <= evs[i-1].Cursor {
				t.Errorf("%s cursors not increasing: %d after %d", name, evs[i].Cursor, evs[i-1].Cursor)
			}
		}
	}
	check("live", live.waitN(t, 4))
	b2 := f.dial(t, "bob", "b2", 0)
	check("replay", collect(b2).waitN(t, 4))
	for reason, want := range map[string]float64{"corrupt": 2, "unencodable": 2} {
		if got := testutil.ToFloat64(f.svc.m.placeholders.WithLabelValues(reason)); got != want {
			t.Errorf("placeholders{reason=%s} = %v, want %v (live and replay)", reason, got, want)
		}
	}
}
