package legacy

import (
	"bufio"
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// BenchmarkChatIntake is the legacy side of gateway bench bridge-intake
// without the cloud: one chat v2 stream per message from one device, taken
// by HandleChat with a Deliver that acks at once ("handler": certificate
// check, rate limit, frame checks), against a bare handler that reads the
// hello and the frame and acks, checking nothing ("sink", the bench's
// floor). "lookup" is the directory lookup a device makes before every
// send. Compare the sub-benchmarks of one run.
func BenchmarkChatIntake(b *testing.B) {
	auth := newTestAuthority(b)
	sender := newTestHost(b)
	cert := certify(b, auth, sender, "alice")
	run := func(b *testing.B, receiver network.StreamHandler, limiter *PeerLimiter) {
		h := newTestHost(b)
		if receiver != nil {
			h.SetStreamHandler(legacywire.ChatV2ProtocolID, receiver)
		} else {
			HandleChat(h, ChatConfig{Authority: auth.PublicKey(), MaxVersion: 2, Limiter: limiter,
				Deliver: func(context.Context, legacywire.Certificate, legacywire.ChatMessage) legacywire.ChatAck {
					return legacywire.ChatAck{Status: legacywire.StatusDelivered}
				}})
		}
		to := addrInfoOf(h)
		ctx := context.Background()
		msg := legacywire.ChatMessage{From: "alice", To: "bob", Text: "benchmark message", SentAt: time.Now().UTC()}
		b.ReportAllocs()
		for b.Loop() {
			msg.ID = uuid.NewString()
			ack, _, err := SendChatFrame(ctx, sender, cert, to, 2, legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg})
			if err != nil || !ack.Delivered() {
				b.Fatalf("SendChatFrame = %+v, %v", ack, err)
			}
		}
	}
	b.Run("handler", func(b *testing.B) {
		limiter, err := NewPeerLimiter(RateLimit{Rate: 1e9, Burst: 1e9})
		if err != nil {
			b.Fatal(err)
		}
		run(b, nil, limiter)
	})
	b.Run("sink", func(b *testing.B) {
		run(b, func(s network.Stream) {
			defer s.Close()
			r := bufio.NewReader(s)
			var hello legacywire.ChatHello
			var f legacywire.ChatFrame
			if legacywire.ReadFrame(r, &hello) != nil || legacywire.ReadFrame(r, &f) != nil {
				_ = s.Reset()
				return
			}
			ack := legacywire.ChatFrame{Type: legacywire.FrameAck, ID: f.ID, Ack: &legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}}
			if legacywire.WriteFrame(s, ack) != nil {
				_ = s.Reset()
			}
		}, nil)
	})
	b.Run("lookup", func(b *testing.B) {
		_, sn := startSupernode(b, auth, SupernodeConfig{})
		newTestDevice(b, auth, sn, "bob") // registered
		ctx := context.Background()
		dir := NewDirectory(sender, cert, sn)
		b.ReportAllocs()
		for b.Loop() {
			if l, err := dir.Lookup(ctx, "bob"); err != nil || len(l.Devices) != 1 {
				b.Fatalf("Lookup = %+v, %v", l, err)
			}
		}
	})
}
