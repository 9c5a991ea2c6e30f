package cloud

import (
	"context"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func receiptUpTo(tb testing.TB, c *Client, conv, status string, upTo uint64) (cloudwire.Ack, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return c.ReceiptAck(ctx, cloudwire.Receipt{Conv: conv, UpTo: upTo, Status: status})
}

// upTos lists the cumulative receipt events among evs as
// "by/device/status/N".
func upTos(evs []cloudwire.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Kind == cloudwire.KindReceiptUpTo {
			out = append(out, ev.By+"/"+ev.FromDevice+"/"+ev.Status+"/"+itoa(ev.UpTo))
		}
	}
	return out
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

// TestReceiptsUpToInSyncedHistory: a device that was offline while the
// reader delivered and read messages finds the cumulative receipts in its
// synced history, on the sender's side and on the reader's side, each
// naming the device that gave it.
func TestReceiptsUpToInSyncedHistory(t *testing.T) {
	f := newFixture(t, nil)
	conv := cloudwire.DirectConversationID("alice", "bob")

	// a2 and b2 see the messages, then go offline.
	a2, b2 := f.dial(t, "alice", "a2", 0), f.dial(t, "bob", "b2", 0)
	a2col, b2col := collect(a2), collect(b2)
	a1, b1 := f.dial(t, "alice", "a1", 0), f.dial(t, "bob", "b1", 0)
	a1col := collect(a1)
	collect(b1)
	for i := range 3 {
		send(t, a1, "bob", "m"+itoa(uint64(i)))
	}
	a2cur := a2col.waitN(t, 3)[2].Cursor
	b2cur := b2col.waitN(t, 3)[2].Cursor
	a2.Close()
	b2.Close()

	// b1 receipts while a2 and b2 are away.
	ack, err := receiptUpTo(t, b1, conv, cloudwire.StatusDelivered, 3)
	if err != nil || ack.Seq != 3 || ack.Conv != conv || ack.Duplicate {
		t.Fatalf("delivered up to 3: %+v, %v", ack, err)
	}
	if ack, err := receiptUpTo(t, b1, conv, cloudwire.StatusRead, 2); err != nil || ack.Seq != 2 {
		t.Fatalf("read up to 2: %+v, %v", ack, err)
	}
	// Repeats and regressions change nothing.
	if ack, err := receiptUpTo(t, b1, conv, cloudwire.StatusRead, 2); err != nil || !ack.Duplicate || ack.Seq != 2 {
		t.Fatalf("read up to 2 again: %+v, %v", ack, err)
	}
	if ack, err := receiptUpTo(t, b1, conv, cloudwire.StatusRead, 1); err != nil || !ack.Duplicate || ack.Seq != 2 {
		t.Fatalf("read up to 1 after 2: %+v, %v", ack, err)
	}
	want := []string{"bob/b1/delivered/3", "bob/b1/read/2"}
	settle()
	if diff := cmp.Diff(want, upTos(a1col.waitN(t, 5))); diff != "" {
		t.Fatalf("sender's online device (-want +got):\n%s", diff)
	}

	// The offline devices sync from their cursors: exactly the receipts.
	for _, tc := range []struct {
		user, device string
		cursor       uint64
	}{{"alice", "a2", a2cur}, {"bob", "b2", b2cur}} {
		c := f.dial(t, tc.user, tc.device, tc.cursor)
		waitSynced(t, c)
		col := collect(c)
		evs := col.waitN(t, 2)
		settle()
		evs = col.events()
		if diff := cmp.Diff(want, upTos(evs)); diff != "" || len(evs) != 2 {
			t.Errorf("%s after sync: %d events (-want +got):\n%s", tc.device, len(evs), diff)
		}
		for _, ev := range evs {
			if ev.User != tc.user || ev.Conv != conv || ev.Seq != ev.UpTo {
				t.Errorf("%s: event %+v", tc.device, ev)
			}
		}
		c.Close()
	}

	// Another of Bob's devices reads further: per device, and the user's
	// state is the furthest of them.
	b3 := f.dial(t, "bob", "b3", 0)
	collect(b3)
	if _, err := receiptUpTo(t, b3, conv, cloudwire.StatusRead, 3); err != nil {
		t.Fatal(err)
	}
	page, err := b3.History(context.Background(), cloudwire.History{Conv: conv, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]cloudwire.ReceiptState{{User: "bob", Delivered: 3, Read: 3}}, page.Receipts); diff != "" {
		t.Errorf("receipt state (-want +got):\n%s", diff)
	}
}

func TestReceiptUpToRefused(t *testing.T) {
	f := newFixture(t, nil)
	alice, carol := f.dial(t, "alice", "a", 0), f.dial(t, "carol", "c", 0)
	collect(alice)
	collect(carol)
	send(t, alice, "bob", "hi")
	conv := cloudwire.DirectConversationID("alice", "bob")
	tests := []struct {
		name string
		c    *Client
		conv string
		upTo uint64
		code string
	}{
		{"not a member", carol, conv, 1, cloudwire.CodeForbidden},
		{"unknown conversation", alice, cloudwire.DirectConversationID("alice", "zed"), 1, cloudwire.CodeNotFound},
		{"beyond the head", alice, conv, 2, cloudwire.CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := receiptUpTo(t, tc.c, tc.conv, cloudwire.StatusRead, tc.upTo)
			serverError(t, err, tc.code)
		})
	}
	// The sender may receipt its own conversation too (its other devices
	// then know it was read there).
	if _, err := receiptUpTo(t, alice, conv, cloudwire.StatusRead, 1); err != nil {
		t.Fatal(err)
	}
}

// TestReceiptUpToBridge: the bridge gives cumulative receipts for a legacy
// user with as.
func TestReceiptUpToBridge(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a", 0)
	col := collect(alice)
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	collect(br)
	send(t, alice, "legacy-bob", "hi")
	conv := cloudwire.DirectConversationID("alice", "legacy-bob")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := br.Receipt(ctx, cloudwire.Receipt{As: "legacy-bob", Conv: conv, UpTo: 1, Status: cloudwire.StatusRead}); err != nil {
		t.Fatal(err)
	}
	evs := col.waitN(t, 2)
	if diff := cmp.Diff([]string{"legacy-bob/bridge-1/read/1"}, upTos(evs)); diff != "" {
		t.Error(diff)
	}
}
