package cloud

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func groupOp(tb testing.TB, c *Client, g cloudwire.Group) (cloudwire.Ack, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return c.Group(ctx, g)
}

// convLog lists the messages and group changes of conv among evs as
// "seq:kind:msg_id", in arrival order.
func convLog(evs []cloudwire.Event, conv string) []string {
	out := []string{}
	for _, ev := range evs {
		if ev.Conv == conv && (ev.Kind == cloudwire.KindMsg || ev.Kind == cloudwire.KindGroup) {
			out = append(out, fmt.Sprintf("%d:%s:%s", ev.Seq, ev.Kind, ev.MsgID))
		}
	}
	return out
}

// TestGroupLifecycle creates a group, has its members write concurrently,
// adds and removes members, and checks that every member device sees the
// same history in the same order, changes included.
func TestGroupLifecycle(t *testing.T) {
	f := newFixture(t, nil)
	clients := map[string]*Client{}
	cols := map[string]*collector{}
	for _, d := range []struct{ user, device string }{{"alice", "a1"}, {"alice", "a2"}, {"bob", "b1"}, {"carol", "c1"}, {"dave", "d1"}, {"eve", "e1"}} {
		c := f.dial(t, d.user, d.device, 0)
		waitSynced(t, c)
		clients[d.device], cols[d.device] = c, collect(c)
	}
	a1, b1, c1, d1, e1 := clients["a1"], clients["b1"], clients["c1"], clients["d1"], clients["e1"]

	create := cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: msgID(t), Name: "crew", Members: []string{"bob", "carol", "bob"}}
	ack, err := groupOp(t, a1, create)
	if err != nil {
		t.Fatal(err)
	}
	conv := ack.Conv
	if !cloudwire.IsGroupID(conv) || ack.Seq != 1 || conv != cloudwire.GroupConversationID("alice", create.MsgID) {
		t.Fatalf("create ack %+v", ack)
	}
	if again, err := groupOp(t, a1, create); err != nil || !again.Duplicate || again.Conv != conv || again.Seq != 1 {
		t.Fatalf("create resent: %+v, %v", again, err)
	}

	// Three members write at once; the log orders them.
	const perMember = 8
	var wg sync.WaitGroup
	for _, c := range []*Client{a1, b1, c1} {
		wg.Go(func() {
			for i := range perMember {
				if _, err := c.Send(context.Background(), cloudwire.Send{Conv: conv, Text: fmt.Sprint(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	added, err := groupOp(t, b1, cloudwire.Group{Op: cloudwire.GroupAdd, Conv: conv, Members: []string{"dave"}})
	if err != nil || added.Seq != 2+3*perMember {
		t.Fatalf("add: %+v, %v", added, err)
	}
	afterAdd := sendGroup(t, d1, conv, "hi, I'm new")
	removed, err := groupOp(t, a1, cloudwire.Group{Op: cloudwire.GroupRemove, Conv: conv, Members: []string{"carol"}})
	if err != nil || removed.Seq != afterAdd.Seq+1 {
		t.Fatalf("remove: %+v, %v", removed, err)
	}
	last := sendGroup(t, b1, conv, "carol is gone")
	total := int(last.Seq)

	// Every device of a member from start to end has the whole log, in
	// sequence order; dave has it from his addition, carol up to her
	// removal (which she is told about).
	want := make([]string, 0, total)
	full := history(t, a1, cloudwire.History{Conv: conv, Limit: 100})
	for i, m := range full.Msgs {
		if m.Seq != uint64(i+1) {
			t.Fatalf("history seqs not dense: %v", seqsOf(full))
		}
		want = append(want, fmt.Sprintf("%d:%s:%s", m.Seq, m.Kind, m.MsgID))
	}
	if len(want) != total {
		t.Fatalf("history has %d entries, want %d", len(want), total)
	}
	for _, tc := range []struct {
		dev      string
		from, to int
	}{{"a1", 0, total}, {"a2", 0, total}, {"b1", 0, total}, {"c1", 0, int(removed.Seq)}, {"d1", int(added.Seq) - 1, total}} {
		wantDev := want[tc.from:tc.to]
		cols[tc.dev].waitN(t, len(wantDev))
		settle()
		if diff := cmp.Diff(wantDev, convLog(cols[tc.dev].events(), conv)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.dev, diff)
		}
	}
	if got := convLog(cols["e1"].events(), conv); len(got) != 0 {
		t.Errorf("eve, never a member, got %v", got)
	}

	// The changes are in the history with who did what.
	first, add, rem := full.Msgs[0], full.Msgs[added.Seq-1], full.Msgs[removed.Seq-1]
	if first.Kind != cloudwire.KindGroup || first.Op != cloudwire.GroupCreate || first.Name != "crew" || first.From != "alice" ||
		!cmp.Equal(first.Members, []string{"alice", "bob", "carol"}) {
		t.Errorf("create entry %+v", first)
	}
	if add.Op != cloudwire.GroupAdd || add.From != "bob" || !cmp.Equal(add.Members, []string{"dave"}) {
		t.Errorf("add entry %+v", add)
	}
	if rem.Op != cloudwire.GroupRemove || rem.From != "alice" || !cmp.Equal(rem.Members, []string{"carol"}) {
		t.Errorf("remove entry %+v", rem)
	}

	// Carol is out; Eve never was in.
	t.Run("refused", func(t *testing.T) {
		ctx := context.Background()
		_, err := c1.Send(ctx, cloudwire.Send{Conv: conv, Text: "still here?"})
		serverError(t, err, cloudwire.CodeForbidden)
		_, err = c1.History(ctx, cloudwire.History{Conv: conv})
		serverError(t, err, cloudwire.CodeForbidden)
		_, err = groupOp(t, e1, cloudwire.Group{Op: cloudwire.GroupAdd, Conv: conv, Members: []string{"eve"}})
		serverError(t, err, cloudwire.CodeForbidden)
		_, err = groupOp(t, a1, cloudwire.Group{Op: cloudwire.GroupRemove, Conv: conv, Members: []string{"eve"}})
		serverError(t, err, cloudwire.CodeBadRequest)
		_, err = groupOp(t, a1, cloudwire.Group{Op: cloudwire.GroupAdd, Conv: cloudwire.GroupConversationID("x", "y"), Members: []string{"eve"}})
		serverError(t, err, cloudwire.CodeNotFound)
		_, err = e1.Send(ctx, cloudwire.Send{Conv: cloudwire.GroupConversationID("x", "y"), Text: "hello?"})
		serverError(t, err, cloudwire.CodeNotFound)
	})

	// Receipts in a group: per message by another member, cumulative by
	// any member, seen by every member.
	t.Run("receipts", func(t *testing.T) {
		ctx := context.Background()
		if err := d1.Receipt(ctx, cloudwire.Receipt{Conv: conv, MsgID: last.MsgID, Status: cloudwire.StatusRead}); err != nil {
			t.Fatal(err)
		}
		err := b1.Receipt(ctx, cloudwire.Receipt{Conv: conv, MsgID: last.MsgID, Status: cloudwire.StatusRead})
		serverError(t, err, cloudwire.CodeForbidden) // bob sent it
		if _, err := receiptUpTo(t, d1, conv, cloudwire.StatusRead, last.Seq); err != nil {
			t.Fatal(err)
		}
		want := []string{"dave/d1/read/" + itoa(last.Seq)}
		for _, dev := range []string{"a2", "b1", "d1"} {
			got := waitUntil(t, cols[dev], func(evs []cloudwire.Event) bool { return len(upTos(evs)) > 0 })
			if diff := cmp.Diff(want, upTos(got)); diff != "" {
				t.Errorf("%s (-want +got):\n%s", dev, diff)
			}
		}
		if got := upTos(cols["c1"].events()); len(got) != 0 {
			t.Errorf("carol, removed, got %v", got)
		}
	})
}

func sendGroup(tb testing.TB, c *Client, conv, text string) cloudwire.Ack {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := c.Send(ctx, cloudwire.Send{Conv: conv, MsgID: msgID(tb), Text: text})
	if err != nil {
		tb.Fatalf("Send to %s: %v", conv, err)
	}
	return ack
}

// waitUntil waits until the events collected satisfy ok and returns them.
func waitUntil(tb testing.TB, col *collector, ok func([]cloudwire.Event) bool) []cloudwire.Event {
	tb.Helper()
	deadline := time.After(waitFor)
	for {
		if evs := col.events(); ok(evs) {
			return evs
		}
		select {
		case <-col.signal:
		case <-deadline:
			tb.Fatalf("condition not met in %v", waitFor)
		}
	}
}
