package legacy

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// signals collects the chat v2 signals a device receives.
type signals struct {
	receipts chan legacywire.Receipt
	typing   chan legacywire.Typing
	presence chan legacywire.Presence
	offers   chan legacywire.FileOffer
	declined chan legacywire.FileAnswer
	progress chan int64 // bytes held after each chunk AcceptFile writes
}

func newSignals() *signals {
	return &signals{receipts: make(chan legacywire.Receipt, 16), typing: make(chan legacywire.Typing, 16), presence: make(chan legacywire.Presence, 16),
		offers: make(chan legacywire.FileOffer, 16), declined: make(chan legacywire.FileAnswer, 16), progress: make(chan int64, 1024)}
}

// newVersionedDevice starts and registers a device of user speaking chat up
// to version (1 is an old client); with configure, it edits the config
// first.
func newVersionedDevice(tb testing.TB, auth *Authority, sn peer.AddrInfo, user string, version int, configure ...func(*DeviceConfig)) (*Device, *inbox, *signals) {
	tb.Helper()
	h := newTestHost(tb)
	box, sig := newInbox(), newSignals()
	caps := []string{legacywire.CapChat1}
	if version != 1 {
		caps = append(caps, legacywire.CapChat2)
	}
	if version == 0 || version >= 3 {
		caps = append(caps, legacywire.CapChat3)
	}
	cfg := DeviceConfig{
		Host:           h,
		Cert:           certify(tb, auth, h, user, caps...),
		Authority:      auth.PublicKey(),
		Supernode:      sn,
		OnMessage:      box.add,
		MaxChatVersion: version,
		OnReceipt:      func(r legacywire.Receipt) { sig.receipts <- r },
		OnTyping:       func(t legacywire.Typing) { sig.typing <- t },
		OnPresence:     func(p legacywire.Presence) { sig.presence <- p },
		OnFileOffer:    func(o legacywire.FileOffer) { sig.offers <- o },
		OnFileDeclined: func(a legacywire.FileAnswer) { sig.declined <- a },
		OnFileProgress: func(_ string, have, _ int64) {
			select {
			case sig.progress <- have:
			default:
			}
		},
	}
	for _, c := range configure {
		c(&cfg)
	}
	d, err := NewDevice(cfg)
	if err != nil {
		tb.Fatalf("NewDevice: %v", err)
	}
	if err := d.Register(testCtx(tb)); err != nil {
		tb.Fatalf("Register %s: %v", user, err)
	}
	return d, box, sig
}

// TestChatNegotiation covers every pairing of chat versions: the stream
// settles on the highest version both ends speak, the message arrives, and
// a v2-only signal towards a v1 peer degrades to ErrNotSupported without the
// v1 peer ever being offered a v2 frame.
func TestChatNegotiation(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	for _, tt := range []struct{ from, to, want int }{
		{1, 1, 1}, {1, 2, 1}, {2, 1, 1}, {2, 2, 2},
	} {
		t.Run("v"+string(rune('0'+tt.from))+"_to_v"+string(rune('0'+tt.to)), func(t *testing.T) {
			from, _, _ := newVersionedDevice(t, auth, snInfo, "sender", tt.from)
			to, box, sig := newVersionedDevice(t, auth, snInfo, "recipient", tt.to)
			f := msgFrame("m-"+t.Name(), "sender", "recipient")
			ack, v, err := SendChatFrame(testCtx(t), from.cfg.Host, from.cfg.Cert, addrInfoOf(to.cfg.Host), tt.from, f)
			if err != nil || !ack.Delivered() || v != tt.want {
				t.Fatalf("SendChatFrame = %+v, v%d, %v; want delivered on v%d", ack, v, err, tt.want)
			}
			if got := box.all(); len(got) != 1 || got[0].ID != f.ID {
				t.Errorf("recipient's inbox = %+v, want the message", got)
			}
			// The device API goes through the directory and does the same.
			if _, _, err := from.Send(testCtx(t), "recipient", "via the directory"); err != nil {
				t.Errorf("Device.Send: %v", err)
			}

			_, err = from.SendTyping(testCtx(t), "recipient", true)
			if tt.want == 1 {
				if !errors.Is(err, ErrNotSupported) {
					t.Errorf("typing on a v1 pairing = %v, want ErrNotSupported", err)
				}
			} else if err != nil {
				t.Errorf("typing on v2: %v", err)
			} else if got := <-sig.typing; got.From != "sender" || !got.Active {
				t.Errorf("typing = %+v", got)
			}
			if tt.to == 1 && slices.Contains(to.cfg.Host.Mux().Protocols(), protocol.ID(legacywire.ChatV2ProtocolID)) {
				t.Error("a v1 device serves chat v2")
			}
		})
	}
}

// TestChatV2Features: fan-out to every device of the recipient, read
// receipts, typing, presence subscribe and publish, and a v1 client in the
// same conversation.
func TestChatV2Features(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _, aliceSig := newVersionedDevice(t, auth, snInfo, "alice", 2)
	bobPhone, phoneBox, phoneSig := newVersionedDevice(t, auth, snInfo, "bob", 2)
	_, laptopBox, laptopSig := newVersionedDevice(t, auth, snInfo, "bob", 2)
	carol, carolBox, _ := newVersionedDevice(t, auth, snInfo, "carol", 1)
	ctx := testCtx(t)

	msg, ack, err := alice.Send(ctx, "bob", "to both of your devices")
	if err != nil || !ack.Delivered() {
		t.Fatalf("Send = %+v, %v", ack, err)
	}
	for name, box := range map[string]*inbox{"phone": phoneBox, "laptop": laptopBox} {
		if got := box.all(); len(got) != 1 || got[0].ID != msg.ID {
			t.Errorf("bob's %s got %+v, want the message (fan-out)", name, got)
		}
	}

	if n, err := bobPhone.SendReceipt(ctx, "alice", msg.ID, legacywire.ReceiptRead); err != nil || n != 1 {
		t.Fatalf("SendReceipt = %d, %v", n, err)
	}
	if r := <-aliceSig.receipts; r.MsgID != msg.ID || r.Reader != "bob" || r.Status != legacywire.ReceiptRead {
		t.Errorf("receipt = %+v", r)
	}

	if n, err := alice.SendTyping(ctx, "bob", true); err != nil || n != 2 {
		t.Fatalf("SendTyping = %d, %v; want both of bob's devices", n, err)
	}
	for _, s := range []*signals{phoneSig, laptopSig} {
		if got := <-s.typing; got.From != "alice" || got.To != "bob" || !got.Active {
			t.Errorf("typing = %+v", got)
		}
	}

	if n, err := alice.SubscribePresence(ctx, "bob"); err != nil || n != 2 {
		t.Fatalf("SubscribePresence = %d, %v", n, err)
	}
	if n, err := bobPhone.PublishPresence(ctx, legacywire.PresenceIdle); err != nil || n != 1 {
		t.Fatalf("PublishPresence = %d, %v", n, err)
	}
	if p := <-aliceSig.presence; p.User != "bob" || p.Status != legacywire.PresenceIdle {
		t.Errorf("presence = %+v", p)
	}

	// Carol's old client still chats with both generations; the v2 signals
	// towards her degrade to nothing.
	if _, _, err := alice.Send(ctx, "carol", "hi carol"); err != nil {
		t.Errorf("v2 → v1 send: %v", err)
	}
	if got := carolBox.all(); len(got) != 1 {
		t.Errorf("carol's inbox = %+v", got)
	}
	if _, err := alice.SubscribePresence(ctx, "carol"); !errors.Is(err, ErrNotSupported) {
		t.Errorf("presence subscription to a v1 client = %v, want ErrNotSupported", err)
	}
	if _, err := carol.SendReceipt(ctx, "alice", "m", legacywire.ReceiptRead); !errors.Is(err, ErrNotSupported) {
		t.Errorf("receipt from a v1 client = %v, want ErrNotSupported", err)
	}
	if _, _, err := carol.Send(ctx, "bob", "hi bob"); err != nil {
		t.Errorf("v1 → v2 send: %v", err)
	}
	if n := len(phoneBox.all()) + len(laptopBox.all()); n != 3 {
		t.Errorf("bob's devices hold %d messages, want 3 (two fanned out, one from carol's v1 client)", n)
	}
}

// TestChatV2BadFrames: frames a v2 handler cannot use are refused with an
// ack, and nil OnFrame (a bridge) refuses signals as unsupported.
func TestChatV2BadFrames(t *testing.T) {
	auth := newTestAuthority(t)
	h := newTestHost(t)
	HandleChat(h, ChatConfig{Authority: auth.PublicKey(), Deliver: func(_ context.Context, _ legacywire.Certificate, m legacywire.ChatMessage) legacywire.ChatAck {
		return legacywire.ChatAck{ID: m.ID, Status: legacywire.StatusDelivered}
	}})
	sender := newTestHost(t)
	cert := certify(t, auth, sender, "alice")
	f := legacywire.ChatFrame{Type: legacywire.FrameTyping, ID: "t1", Typing: &legacywire.Typing{From: "alice", To: "bob", Active: true}}
	ack, v, err := SendChatFrame(testCtx(t), sender, cert, addrInfoOf(h), 2, f)
	if err != nil || v != 2 || ack.Code != legacywire.CodeUnsupported {
		t.Errorf("typing at a handler without OnFrame = %+v, v%d, %v; want %s", ack, v, err, legacywire.CodeUnsupported)
	}
	if _, _, err := SendChatFrame(testCtx(t), sender, cert, addrInfoOf(h), 0, legacywire.ChatFrame{Type: legacywire.FrameAck, Ack: &legacywire.ChatAck{}}); err == nil {
		t.Error("SendChatFrame sent an ack frame")
	}
	RemoveChatHandlers(h)
	if got := h.Mux().Protocols(); slices.ContainsFunc(got, func(p protocol.ID) bool { return chatVersion(p) != 0 }) {
		t.Errorf("after RemoveChatHandlers: %v", got)
	}
}
