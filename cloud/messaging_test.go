package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

func TestSendDeliveredToEveryDevice(t *testing.T) {
	f := newFixture(t, nil)
	a1, a2 := f.dial(t, "alice", "a1", 0), f.dial(t, "alice", "a2", 0)
	b1, b2 := f.dial(t, "bob", "b1", 0), f.dial(t, "bob", "b2", 0)
	other := f.dial(t, "carol", "c1", 0)
	devices := []*Client{a1, a2, b1, b2}
	cols := make([]*collector, len(devices))
	for i, c := range devices {
		waitSynced(t, c)
		cols[i] = collect(c)
	}
	waitSynced(t, other)
	carol := collect(other)

	ack1 := send(t, a1, "bob", "hello bob")
	ack2 := send(t, a1, "bob", "are you there?")
	conv := cloudwire.DirectConversationID("alice", "bob")
	if ack1.Conv != conv || ack1.Seq != 1 || ack2.Seq != 2 || ack1.Duplicate {
		t.Fatalf("acks %+v %+v", ack1, ack2)
	}
	for i, col := range cols {
		evs := col.waitN(t, 2)
		settle()
		evs = col.events()
		want := []string{"msg/" + ack1.MsgID, "msg/" + ack2.MsgID}
		if diff := cmp.Diff(want, msgIDs(evs)); diff != "" {
			t.Fatalf("device %d events (-want +got):\n%s", i, diff)
		}
		owner := "alice"
		if i >= 2 {
			owner = "bob"
		}
		ev := evs[0]
		if ev.User != owner || ev.From != "alice" || ev.FromDevice != "a1" || ev.To != "bob" ||
			ev.Conv != conv || ev.Seq != 1 || ev.Text != "hello bob" || !ev.At.Equal(ack1.At) {
			t.Errorf("device %d event %+v", i, ev)
		}
		if evs[1].Cursor <= evs[0].Cursor {
			t.Errorf("device %d cursors not increasing: %d, %d", i, evs[0].Cursor, evs[1].Cursor)
		}
		if got := devices[i].Cursor(); got != evs[1].Cursor {
			t.Errorf("device %d Cursor() = %d, want %d", i, got, evs[1].Cursor)
		}
	}
	if evs := carol.events(); len(evs) != 0 {
		t.Errorf("carol got %v", msgIDs(evs))
	}
}

func TestSeqDensePerConversation(t *testing.T) {
	f := newFixture(t, nil)
	alice, bob, carol := f.dial(t, "alice", "a", 0), f.dial(t, "bob", "b", 0), f.dial(t, "carol", "c", 0)
	for _, c := range []*Client{alice, bob, carol} {
		collect(c)
	}
	const perSender = 10
	var mu sync.Mutex
	var seqs []uint64
	var wg sync.WaitGroup
	// Alice and Bob write the same conversation concurrently, each from
	// two goroutines; Carol's conversation with Alice counts on its own.
	for _, c := range []*Client{alice, alice, bob, bob} {
		to := "bob"
		if c == bob {
			to = "alice"
		}
		wg.Go(func() {
			for i := range perSender {
				ack, err := c.Send(context.Background(), cloudwire.Send{To: to, Text: fmt.Sprint(i)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				seqs = append(seqs, ack.Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(seqs)
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("sequences not dense: %v", seqs)
		}
	}
	if ack := send(t, carol, "alice", "hi"); ack.Seq != 1 {
		t.Errorf("new conversation starts at %d", ack.Seq)
	}
	if ack := send(t, alice, "bob", "next"); ack.Seq != 4*perSender+1 {
		t.Errorf("next seq %d, want %d", ack.Seq, 4*perSender+1)
	}
}

// TestSeqAcrossNodes runs two nodes on one JetStream: each keeps its own
// cache of the conversation head, so the expected-last-sequence guard is
// what keeps the sequence dense.
func TestSeqAcrossNodes(t *testing.T) {
	eng := enginetest.Start(t)
	n1, n2 := startNode(t, eng.JS, nil), startNode(t, eng.JS, nil)
	a, b := n1.dial(t, "alice", "a", 0), n2.dial(t, "bob", "b", 0)
	colA, colB := collect(a), collect(b)
	var seqs []uint64
	for i := range 6 {
		c, to := a, "bob"
		if i%2 == 1 {
			c, to = b, "alice"
		}
		seqs = append(seqs, send(t, c, to, fmt.Sprint(i)).Seq)
	}
	if diff := cmp.Diff([]uint64{1, 2, 3, 4, 5, 6}, seqs); diff != "" {
		t.Errorf("seqs (-want +got):\n%s", diff)
	}
	if n := testutil.ToFloat64(n1.svc.m.conflicts) + testutil.ToFloat64(n2.svc.m.conflicts); n == 0 {
		t.Error("no append conflict: the cross-node guard was not exercised")
	}
	// Each node's live feed delivers to its own sessions.
	colA.waitN(t, 6)
	colB.waitN(t, 6)
}

func TestResendReturnsOriginalAck(t *testing.T) {
	dir := t.TempDir()
	eng := enginetest.StartIn(t, dir)
	n := startNode(t, eng.JS, nil)
	a := n.dial(t, "alice", "a", 0)
	b := n.dial(t, "bob", "b", 0)
	colB := collect(b)
	collect(a)

	ctx := context.Background()
	msg := cloudwire.Send{To: "bob", MsgID: msgID(t), Text: "once"}
	first, err := a.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	first.Ref = ""
	check := func(name string, c *Client) {
		t.Helper()
		again, err := c.Send(ctx, msg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		again.Ref = ""
		want := first
		want.Duplicate = true
		if diff := cmp.Diff(want, again); diff != "" {
			t.Errorf("%s: resend ack (-want +got):\n%s", name, diff)
		}
	}
	check("same connection", a)
	a.Close()
	check("after reconnect", n.dial(t, "alice", "a", 0))

	// Another sender may not reuse the id.
	_, err = b.Send(ctx, cloudwire.Send{To: "alice", MsgID: msg.MsgID, Text: "mine"})
	serverError(t, err, cloudwire.CodeConflict)

	colB.waitN(t, 1)
	settle()
	if evs := colB.events(); len(evs) != 1 {
		t.Errorf("bob got %d events for one message: %v", len(evs), msgIDs(evs))
	}

	// Restart the service and the engine on the same data directory.
	n.stop()
	eng.Close()
	eng = enginetest.StartIn(t, dir)
	n = startNode(t, eng.JS, nil)
	check("after restart", n.dial(t, "alice", "a", 0))
	if ack := send(t, n.dial(t, "alice", "a2", 0), "bob", "twice"); ack.Seq != 2 {
		t.Errorf("seq after restart %d, want 2", ack.Seq)
	}
	b = n.dial(t, "bob", "b", 0)
	bc := collect(b)
	bc.waitN(t, 2)
	settle()
	evs := bc.events()
	if len(evs) != 2 || evs[0].MsgID != msg.MsgID {
		t.Errorf("bob's inbox after restart: %v", msgIDs(evs))
	}
}

// TestRedoAfterCrash simulates a crash between the log append and the
// inbox and idempotency writes: the message is in the log only. The resend
// must not append again, must fill the inboxes, and must answer with the
// original sequence.
func TestRedoAfterCrash(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	id, lr := appendOnly(t, f)
	a := f.dial(t, "alice", "a", 0)
	b := f.dial(t, "bob", "b", 0)
	colB := collect(b)
	collect(a)
	ack, err := a.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "half"})
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 1 || !ack.Duplicate || !ack.At.Equal(lr.At) {
		t.Errorf("redo ack %+v, want seq 1 duplicate at %v", ack, lr.At)
	}
	if evs := colB.waitN(t, 1); evs[0].MsgID != id {
		t.Errorf("bob got %v", msgIDs(evs))
	}
	if next := send(t, a, "bob", "next"); next.Seq != 2 {
		t.Errorf("next seq %d, want 2", next.Seq)
	}
}

func TestSyncAfterReconnect(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)

	b := f.dial(t, "bob", "b", 0)
	colB := collect(b)
	var want []string
	for i := range 3 {
		want = append(want, "msg/"+send(t, alice, "bob", fmt.Sprint("seen ", i)).MsgID)
	}
	seen := colB.waitN(t, 3)
	b.Close()
	cursor := seen[2].Cursor
	if b.Cursor() != cursor {
		t.Fatalf("Cursor() = %d, want %d", b.Cursor(), cursor)
	}

	// Missed while offline, including traffic of other users in between.
	carol := f.dial(t, "carol", "c", 0)
	collect(carol)
	for i := range 20 {
		want = append(want, "msg/"+send(t, alice, "bob", fmt.Sprint("missed ", i)).MsgID)
		send(t, carol, "alice", "noise")
	}

	// Reconnect while Alice keeps sending: the replay and the live path
	// race and must meet without a gap or a duplicate.
	const racing = 40
	raced := make(chan []string, 1)
	start := make(chan struct{})
	go func() {
		var ids []string
		<-start
		for i := range racing {
			ack, err := alice.Send(context.Background(), cloudwire.Send{To: "bob", MsgID: msgID(t), Text: fmt.Sprint("racing ", i)})
			if err != nil {
				t.Error(err)
				break
			}
			ids = append(ids, "msg/"+ack.MsgID)
		}
		raced <- ids
	}()
	close(start)
	b2 := f.dial(t, "bob", "b", cursor)
	col2 := collect(b2)
	waitSynced(t, b2)
	want = append(want, <-raced...)

	evs := col2.waitN(t, len(want)-3)
	settle()
	evs = col2.events()
	if diff := cmp.Diff(want[3:], msgIDs(evs)); diff != "" {
		t.Fatalf("resumed events (-want +got):\n%s", diff)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Cursor <= evs[i-1].Cursor {
			t.Fatalf("cursor order broken at %d: %d after %d", i, evs[i].Cursor, evs[i-1].Cursor)
		}
	}
	if evs[0].Cursor <= cursor {
		t.Errorf("replayed cursor %d at or before the resume cursor %d", evs[0].Cursor, cursor)
	}

	// A device starting from zero gets the whole history.
	b3 := f.dial(t, "bob", "b3", 0)
	all := collect(b3).waitN(t, len(want))
	if diff := cmp.Diff(want, msgIDs(all)); diff != "" {
		t.Errorf("full replay (-want +got):\n%s", diff)
	}
}

// TestBridgeSeesEveryInbox: a bridge session receives the inbox events of
// every user, replayed and live.
func TestBridgeSeesEveryInbox(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	m1 := send(t, alice, "bob", "before")
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	col := collect(br)
	waitSynced(t, br)
	if br.Welcome().Role != cloudwire.RoleBridge {
		t.Errorf("welcome %+v", br.Welcome())
	}
	m2 := send(t, alice, "carol", "after")
	evs := col.waitN(t, 4)
	settle()
	evs = col.events()
	var got []string
	for _, ev := range evs {
		got = append(got, ev.User+":"+ev.MsgID)
	}
	want := []string{"alice:" + m1.MsgID, "bob:" + m1.MsgID, "alice:" + m2.MsgID, "carol:" + m2.MsgID}
	slices.Sort(got[:2])
	slices.Sort(want[:2])
	slices.Sort(got[2:])
	slices.Sort(want[2:])
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bridge events (-want +got):\n%s", diff)
	}
}

func TestBridgeReceipts(t *testing.T) {
	f := newFixture(t, nil)
	a1, a2 := f.dial(t, "alice", "a1", 0), f.dial(t, "alice", "a2", 0)
	bobCloud := f.dial(t, "bob", "b-cloud", 0)
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	for _, c := range []*Client{a1, a2, bobCloud, br} {
		waitSynced(t, c)
	}
	cols := []*collector{collect(a1), collect(a2), collect(bobCloud)}
	collect(br)

	ack := send(t, a1, "bob", "did you get this?")
	ctx := context.Background()
	for _, status := range []string{cloudwire.StatusDelivered, cloudwire.StatusRead} {
		if err := br.Receipt(ctx, cloudwire.Receipt{As: "bob", Conv: ack.Conv, MsgID: ack.MsgID, Status: status}); err != nil {
			t.Fatalf("receipt %s: %v", status, err)
		}
	}
	for i, col := range cols {
		evs := col.waitN(t, 3)
		settle()
		evs = col.events()
		want := []string{"msg/" + ack.MsgID, "receipt/" + ack.MsgID, "receipt/" + ack.MsgID}
		if diff := cmp.Diff(want, msgIDs(evs)); diff != "" {
			t.Fatalf("device %d (-want +got):\n%s", i, diff)
		}
		for j, status := range []string{cloudwire.StatusDelivered, cloudwire.StatusRead} {
			r := evs[1+j]
			if r.Status != status || r.By != "bob" || r.From != "alice" || r.To != "bob" || r.Seq != ack.Seq || r.Conv != ack.Conv || r.FromDevice != "bridge-1" {
				t.Errorf("device %d receipt %+v", i, r)
			}
		}
	}

	// A receipt is for the recipient to give.
	err := a2.Receipt(ctx, cloudwire.Receipt{Conv: ack.Conv, MsgID: ack.MsgID, Status: cloudwire.StatusRead})
	serverError(t, err, cloudwire.CodeForbidden)

	// The bridge also sends for its users: carol (legacy) writes to alice.
	m, err := br.Send(ctx, cloudwire.Send{As: "carol", To: "alice", MsgID: msgID(t), Text: "from the overlay"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Conv != cloudwire.DirectConversationID("alice", "carol") || m.Seq != 1 {
		t.Errorf("bridge send ack %+v", m)
	}
	evs := cols[0].waitN(t, 4)
	if last := evs[3]; last.MsgID != m.MsgID || last.From != "carol" {
		t.Errorf("alice got %+v", last)
	}

	// A bridge must say whom it acts for.
	_, err = br.Send(ctx, cloudwire.Send{To: "alice", MsgID: msgID(t), Text: "who?"})
	serverError(t, err, cloudwire.CodeBadRequest)
}

func TestActForRefusalWritesNothing(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ActFor = func(_ context.Context, user string) error {
			if user == "mallory" {
				return errors.New("mallory is not a legacy user")
			}
			return nil
		}
	})
	ctx := context.Background()
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	ack := send(t, alice, "mallory", "hi mallory")
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	collect(br)

	before := streamCounts(t, f.svc.store)
	id := msgID(t)
	_, err := br.Send(ctx, cloudwire.Send{As: "mallory", To: "alice", MsgID: id, Text: "spoofed"})
	serverError(t, err, cloudwire.CodeForbidden)
	err = br.Receipt(ctx, cloudwire.Receipt{As: "mallory", Conv: ack.Conv, MsgID: ack.MsgID, Status: cloudwire.StatusRead})
	serverError(t, err, cloudwire.CodeForbidden)
	if after := streamCounts(t, f.svc.store); after != before {
		t.Errorf("stream counts changed: %v -> %v", before, after)
	}
	if _, err := f.svc.store.sends.Get(ctx, id); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("send record of a refused send: %v", err)
	}
}

func streamCounts(tb testing.TB, st *store) [3]uint64 {
	tb.Helper()
	var out [3]uint64
	for i, s := range []jetstream.Stream{st.conv, st.inbox} {
		info, err := s.Info(context.Background())
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = info.State.Msgs
	}
	status, err := st.sends.Status(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	out[2] = status.Values()
	return out
}

func TestSubjectToken(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"Bob_2-x", "Bob_2-x"},
		{"a.b", "a=2Eb"},
		{"a=2Eb", "a=3D2Eb"},
		{"*>", "=2A=3E"},
		{"zoë", "zo=C3=AB"},
		{"two words", "two=20words"},
	}
	for _, tc := range tests {
		if got := subjectToken(tc.in); got != tc.want {
			t.Errorf("subjectToken(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestOddUserIDs: user ids with subject metacharacters get their own inbox.
func TestOddUserIDs(t *testing.T) {
	f := newFixture(t, nil)
	dot, star := f.dial(t, "a.b", "d", 0), f.dial(t, "a*", "d", 0)
	colDot, colStar := collect(dot), collect(star)
	ack := send(t, dot, "zoë", "hi")
	if evs := colDot.waitN(t, 1); evs[0].MsgID != ack.MsgID {
		t.Errorf("a.b got %v", msgIDs(evs))
	}
	zoe := f.dial(t, "zoë", "z", 0)
	if evs := collect(zoe).waitN(t, 1); evs[0].User != "zoë" {
		t.Errorf("zoë got %+v", evs[0])
	}
	settle()
	if evs := colStar.events(); len(evs) != 0 {
		t.Errorf("a* got %v", msgIDs(evs))
	}
}
