package cloud

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestReplayLeavesNoConsumer: a replay reads its first directReplayMax
// events by direct get and the rest through a consumer, which it deletes
// when the replay ends, so reconnects do not pile consumers up to the
// stream's limit (where every further sync would fail). Every event
// arrives once, in order, across the two paths.
func TestReplayLeavesNoConsumer(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	alice := f.dial(t, "alice", "a1", 0)
	const n = directReplayMax + 8
	for i := range n {
		id := fmt.Sprintf("0190a5c0-0000-7000-8000-%012d", i)
		if _, err := alice.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	consumers := func() int {
		st, err := f.eng.JS.Stream(ctx, inboxStreamName)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Consumers
	}
	base := consumers() // the node's live feed
	const syncs = 5
	for i := range syncs {
		bob := f.dial(t, "bob", "b1", 0)
		var got []string
		var last uint64
	replay:
		for {
			select {
			case ev := <-bob.Events():
				if ev.Cursor <= last {
					t.Fatalf("sync %d: cursor %d after %d", i, ev.Cursor, last)
				}
				last = ev.Cursor
				got = append(got, ev.Text)
			case <-bob.Synced():
				break replay
			case <-ctx.Done():
				t.Fatalf("sync %d never finished", i)
			}
		}
		for len(got) < n { // events the reader had not handed over yet
			select {
			case ev := <-bob.Events():
				got = append(got, ev.Text)
			case <-ctx.Done():
				t.Fatalf("sync %d: %d of %d events", i, len(got), n)
			}
		}
		for j, text := range got {
			if text != fmt.Sprint(j) {
				t.Fatalf("sync %d: event %d reads %q (all: %v)", i, j, text, got)
			}
		}
		bob.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for consumers() > base {
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers on the inbox stream after %d replays, want %d (the live feed's)", consumers(), syncs, base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
