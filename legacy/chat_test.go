package legacy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestChatEndToEnd(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, aliceBox := newTestDevice(t, auth, snInfo, "alice")
	bob, bobBox := newTestDevice(t, auth, snInfo, "bob")

	msg, ack, err := alice.Send(testCtx(t), "bob", "hello, bob")
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if ack.ID != msg.ID || ack.Status != legacywire.StatusDelivered {
		t.Errorf("ack = %+v, want delivered for %s", ack, msg.ID)
	}
	id, err := uuid.Parse(msg.ID)
	if err != nil || id.Version() != 7 {
		t.Errorf("message id %q is not a UUIDv7 (%v)", msg.ID, err)
	}
	if msg.From != "alice" || msg.To != "bob" || msg.SentAt.Location() != time.UTC {
		t.Errorf("message = %+v, want from alice to bob, SentAt in UTC", msg)
	}
	if diff := cmp.Diff([]legacywire.ChatMessage{msg}, bobBox.all()); diff != "" {
		t.Errorf("bob's inbox (-want +got):\n%s", diff)
	}

	// And back.
	if _, _, err := bob.Send(testCtx(t), "alice", "hi alice"); err != nil {
		t.Fatalf("reply: %v", err)
	}
	if got := aliceBox.all(); len(got) != 1 || got[0].Text != "hi alice" {
		t.Errorf("alice's inbox = %+v", got)
	}

	// Nobody by that name.
	if _, _, err := alice.Send(testCtx(t), "nobody", "?"); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Send to an unknown user = %v, want ErrNoRoute", err)
	}
}

func TestChatDuplicateDeliveredOnce(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _ := newTestDevice(t, auth, snInfo, "alice")
	_, bobBox := newTestDevice(t, auth, snInfo, "bob")

	id, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	msg := legacywire.ChatMessage{ID: id.String(), From: "alice", To: "bob", Text: "once", SentAt: time.Now().UTC()}
	for i := range 3 {
		ack, err := alice.SendMessage(testCtx(t), msg)
		if err != nil || !ack.Delivered() || ack.ID != msg.ID {
			t.Fatalf("attempt %d: ack %+v, err %v; want delivered", i, ack, err)
		}
	}
	if got := bobBox.all(); len(got) != 1 {
		t.Errorf("bob received %d messages, want 1", len(got))
	}
}

func TestChatSenderChecks(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	bob, bobBox := newTestDevice(t, auth, snInfo, "bob")
	bobInfo := addrInfoOf(bob.cfg.Host)
	sender := newTestHost(t)
	foreign := newTestAuthority(t)

	tests := []struct {
		name     string
		cert     legacywire.Certificate
		from, to string
		wantCode string // "" means delivered
	}{
		{name: "own user", cert: certify(t, auth, sender, "alice"), from: "alice", to: "bob"},
		{name: "from another user", cert: certify(t, auth, sender, "alice"), from: "carol", to: "bob", wantCode: legacywire.CodeNotYourUser},
		{name: "bridge speaks for another user", cert: certify(t, auth, sender, "ferry-bridge", legacywire.CapBridge), from: "carol", to: "bob"},
		{name: "wrong recipient", cert: certify(t, auth, sender, "alice"), from: "alice", to: "dave", wantCode: legacywire.CodeWrongRecipient},
		{name: "certificate of another peer", cert: certify(t, auth, bob.cfg.Host, "alice"), from: "alice", to: "bob", wantCode: legacywire.CodePeerMismatch},
		{name: "foreign authority", cert: certify(t, foreign, sender, "alice"), from: "alice", to: "bob", wantCode: legacywire.CodeBadCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(bobBox.all())
			msg := legacywire.ChatMessage{ID: uuid.NewString(), From: tt.from, To: tt.to, Text: tt.name}
			ack, err := SendChat(testCtx(t), sender, tt.cert, bobInfo, msg)
			if err != nil {
				t.Fatalf("SendChat: %v", err)
			}
			if ack.ID != msg.ID {
				t.Errorf("ack id = %q, want %q", ack.ID, msg.ID)
			}
			delivered := len(bobBox.all()) - before
			if tt.wantCode == "" {
				if !ack.Delivered() || delivered != 1 {
					t.Errorf("ack = %+v, delivered %d; want delivered once", ack, delivered)
				}
				if got := bobBox.all(); got[len(got)-1].From != tt.from {
					t.Errorf("delivered From = %q, want %q", got[len(got)-1].From, tt.from)
				}
				return
			}
			if ack.Status != legacywire.StatusRefused || ack.Code != tt.wantCode || delivered != 0 {
				t.Errorf("ack = %+v, delivered %d; want refused %q and nothing delivered", ack, delivered, tt.wantCode)
			}
		})
	}
}

func TestChatBadFrames(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	bob, bobBox := newTestDevice(t, auth, snInfo, "bob")
	sender := newTestHost(t)
	cert := certify(t, auth, sender, "alice")

	oversized := binary.AppendUvarint(nil, legacywire.MaxFrameSize+1)
	oversized = append(oversized, make([]byte, 1024)...)
	malformed := append(binary.AppendUvarint(nil, 5), "{bad!"...)
	tests := []struct {
		name     string
		payload  []byte
		wantCode string
	}{
		{name: "oversized", payload: oversized, wantCode: legacywire.CodeTooLarge},
		{name: "malformed", payload: malformed, wantCode: legacywire.CodeBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			if err := sender.Connect(ctx, addrInfoOf(bob.cfg.Host)); err != nil {
				t.Fatal(err)
			}
			s, err := sender.NewStream(ctx, bob.cfg.Host.ID(), protocol.ID(legacywire.ChatV1ProtocolID))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Reset()
			_ = s.SetDeadline(time.Now().Add(testTimeout))
			if err := legacywire.WriteFrame(s, legacywire.ChatHello{Cert: cert}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(tt.payload); err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(s)
			var ack legacywire.ChatAck
			if err := legacywire.ReadFrame(r, &ack); err != nil {
				t.Fatalf("read refusal: %v", err)
			}
			if ack.Status != legacywire.StatusRefused || ack.Code != tt.wantCode {
				t.Errorf("ack = %+v, want refused %q", ack, tt.wantCode)
			}
			// The receiver ends the stream after the refusal.
			if err := legacywire.ReadFrame(r, &ack); err == nil {
				t.Errorf("stream still open after the refusal: read %+v", ack)
			}
			if n := len(bobBox.all()); n != 0 {
				t.Errorf("bob received %d messages", n)
			}
		})
	}
}

func TestChatSeveralMessagesPerStream(t *testing.T) {
	auth := newTestAuthority(t)
	receiver := newTestHost(t)
	delivered := make(chan legacywire.ChatMessage, 10)
	HandleChat(receiver, ChatConfig{
		Authority: auth.PublicKey(),
		Deliver: func(_ context.Context, _ legacywire.Certificate, m legacywire.ChatMessage) legacywire.ChatAck {
			delivered <- m
			return legacywire.ChatAck{Status: legacywire.StatusDelivered}
		},
	})
	sender := newTestHost(t)
	ctx := testCtx(t)
	if err := sender.Connect(ctx, addrInfoOf(receiver)); err != nil {
		t.Fatal(err)
	}
	s, err := sender.NewStream(ctx, receiver.ID(), protocol.ID(legacywire.ChatV1ProtocolID))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(testTimeout))
	if err := legacywire.WriteFrame(s, legacywire.ChatHello{Cert: certify(t, auth, sender, "alice")}); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(s)
	for i := range 3 {
		msg := legacywire.ChatMessage{ID: uuid.NewString(), From: "alice", To: "bob", Text: "n"}
		if err := legacywire.WriteFrame(s, msg); err != nil {
			t.Fatal(err)
		}
		var ack legacywire.ChatAck
		if err := legacywire.ReadFrame(r, &ack); err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		if ack.ID != msg.ID || !ack.Delivered() {
			t.Errorf("ack %d = %+v, want delivered %s (the handler fills the id)", i, ack, msg.ID)
		}
	}
	if len(delivered) != 3 {
		t.Errorf("delivered %d messages, want 3", len(delivered))
	}
}

func TestDedup(t *testing.T) {
	f := newDedup(2)
	steps := []struct {
		id   string
		want bool
	}{
		{"a", true}, {"b", true}, {"a", false}, {"c", true}, {"b", false}, {"a", true}, {"c", false},
	}
	for i, st := range steps {
		if got := f.add(st.id); got != st.want {
			t.Errorf("step %d: add(%q) = %v, want %v", i, st.id, got, st.want)
		}
	}
}

func BenchmarkChatV1RoundTrip(b *testing.B) {
	auth := newTestAuthority(b)
	receiver := newTestHost(b)
	HandleChat(receiver, ChatConfig{
		Authority: auth.PublicKey(),
		Deliver: func(context.Context, legacywire.Certificate, legacywire.ChatMessage) legacywire.ChatAck {
			return legacywire.ChatAck{Status: legacywire.StatusDelivered}
		},
	})
	sender := newTestHost(b)
	cert := certify(b, auth, sender, "alice")
	to := addrInfoOf(receiver)
	ctx := context.Background()
	msg := legacywire.ChatMessage{From: "alice", To: "bob", Text: "benchmark message", SentAt: time.Now().UTC()}
	b.ReportAllocs()
	for b.Loop() {
		msg.ID = uuid.NewString()
		ack, err := SendChat(ctx, sender, cert, to, msg)
		if err != nil || !ack.Delivered() {
			b.Fatalf("SendChat = %+v, %v", ack, err)
		}
	}
}
