package cloud

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func history(tb testing.TB, c *Client, h cloudwire.History) cloudwire.Page {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	p, err := c.History(ctx, h)
	if err != nil {
		tb.Fatalf("History %+v: %v", h, err)
	}
	return p
}

func seqsOf(p cloudwire.Page) []uint64 {
	out := []uint64{}
	for _, m := range p.Msgs {
		out = append(out, m.Seq)
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	out := []uint64{}
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// TestHistoryPaging pages a conversation whose messages are interleaved in
// the log with another conversation's, backwards and forwards.
func TestHistoryPaging(t *testing.T) {
	f := newFixture(t, nil)
	alice, bob, carol := f.dial(t, "alice", "a", 0), f.dial(t, "bob", "b", 0), f.dial(t, "carol", "c", 0)
	for _, c := range []*Client{alice, bob, carol} {
		collect(c)
	}
	const n = 25
	var acks []cloudwire.Ack
	for i := range n {
		from, to := alice, "bob"
		if i%3 == 2 {
			from, to = bob, "alice"
		}
		acks = append(acks, send(t, from, to, "m"+itoa(uint64(i+1))))
		send(t, carol, "alice", "noise")
	}
	conv := cloudwire.DirectConversationID("alice", "bob")

	tests := []struct {
		name     string
		h        cloudwire.History
		wantSeqs []uint64
		wantMore bool
	}{
		{"latest", cloudwire.History{Limit: 10}, seqRange(16, 25), true},
		{"latest default limit", cloudwire.History{}, seqRange(1, 25), false},
		{"before", cloudwire.History{Before: 16, Limit: 10}, seqRange(6, 15), true},
		{"before reaches the start", cloudwire.History{Before: 6, Limit: 10}, seqRange(1, 5), false},
		{"before the first", cloudwire.History{Before: 1}, []uint64{}, false},
		{"before beyond the head", cloudwire.History{Before: 99, Limit: 2}, seqRange(24, 25), true},
		{"after", cloudwire.History{After: 20, Limit: 3}, seqRange(21, 23), true},
		{"after to the head", cloudwire.History{After: 22, Limit: 50}, seqRange(23, 25), false},
		{"after the head", cloudwire.History{After: 25}, []uint64{}, false},
		{"one in the middle", cloudwire.History{After: 12, Limit: 1}, []uint64{13}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.h.Conv = conv
			p := history(t, bob, tc.h)
			if diff := cmp.Diff(tc.wantSeqs, seqsOf(p)); diff != "" {
				t.Errorf("seqs (-want +got):\n%s", diff)
			}
			if p.More != tc.wantMore || p.Head != n || p.Conv != conv {
				t.Errorf("more %v head %d conv %s", p.More, p.Head, p.Conv)
			}
			for _, m := range p.Msgs {
				a := acks[m.Seq-1]
				if m.MsgID != a.MsgID || !m.At.Equal(a.At) || m.Kind != cloudwire.KindMsg || m.Text != "m"+itoa(m.Seq) {
					t.Errorf("message %+v, ack %+v", m, a)
				}
			}
		})
	}

	t.Run("not a member", func(t *testing.T) {
		_, err := carol.History(context.Background(), cloudwire.History{Conv: conv})
		serverError(t, err, cloudwire.CodeForbidden)
	})
	t.Run("unknown conversation", func(t *testing.T) {
		_, err := carol.History(context.Background(), cloudwire.History{Conv: cloudwire.DirectConversationID("carol", "zed")})
		serverError(t, err, cloudwire.CodeNotFound)
	})
}

// TestHistoryForNewDevice: a device added later pages the whole history
// backwards and gets every message once, in order.
func TestHistoryForNewDevice(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	var want []string
	for i := range 12 {
		want = append(want, send(t, alice, "bob", "m"+itoa(uint64(i))).MsgID)
	}
	conv := cloudwire.DirectConversationID("alice", "bob")
	phone := f.dial(t, "bob", "new-phone", 0)
	collect(phone)
	var got []string
	var before uint64
	for range 10 {
		p := history(t, phone, cloudwire.History{Conv: conv, Before: before, Limit: 5})
		var ids []string
		for _, m := range p.Msgs {
			ids = append(ids, m.MsgID)
		}
		got = append(ids, got...)
		if !p.More {
			break
		}
		before = p.Msgs[0].Seq
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// TestHistoryPageFitsInFrame: a page of large messages is cut to fit in a
// frame and says there is more, staying contiguous with what was asked.
func TestHistoryPageFitsInFrame(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	big := strings.Repeat("x", cloudwire.MaxTextSize)
	for range 8 {
		send(t, alice, "bob", big)
	}
	conv := cloudwire.DirectConversationID("alice", "bob")
	back := history(t, alice, cloudwire.History{Conv: conv, Limit: 8})
	if len(back.Msgs) == 0 || len(back.Msgs) >= 8 || !back.More || back.Msgs[len(back.Msgs)-1].Seq != 8 {
		t.Errorf("backwards page: seqs %v more %v", seqsOf(back), back.More)
	}
	fwd := history(t, alice, cloudwire.History{Conv: conv, After: 1, Limit: 7})
	if len(fwd.Msgs) == 0 || len(fwd.Msgs) >= 7 || !fwd.More || fwd.Msgs[0].Seq != 2 {
		t.Errorf("forwards page: seqs %v more %v", seqsOf(fwd), fwd.More)
	}
}
