package cloud

import (
	"context"
	"fmt"
	"testing"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// BenchmarkHistoryPage measures one history round trip of 50 messages in a
// conversation of 4,000 interleaved with another of the same size, at the
// newest page, in the middle and at the oldest. The page is located by
// binary search over log positions, so the ratio between them should stay
// near 1 (a scan from the start would grow with the depth).
func BenchmarkHistoryPage(b *testing.B) {
	f := newFixture(b, nil)
	alice, carol := f.dial(b, "alice", "a", 0), f.dial(b, "carol", "c", 0)
	go drain(alice)
	go drain(carol)
	ctx := context.Background()
	const n = 4000
	for i := range n {
		if _, err := alice.Send(ctx, cloudwire.Send{To: "bob", Text: "m"}); err != nil {
			b.Fatal(err)
		}
		if _, err := carol.Send(ctx, cloudwire.Send{To: "dave", Text: fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
	}
	conv := cloudwire.DirectConversationID("alice", "bob")
	for _, tc := range []struct {
		name   string
		before uint64
	}{{"newest", 0}, {"middle", n / 2}, {"oldest", 51}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := alice.History(ctx, cloudwire.History{Conv: conv, Before: tc.before, Limit: 50})
				if err != nil || len(p.Msgs) != 50 {
					b.Fatalf("%d messages, %v", len(p.Msgs), err)
				}
			}
		})
	}
}
