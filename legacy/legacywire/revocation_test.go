package legacywire

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func TestRevocationVerify(t *testing.T) {
	key := testKey(t, 1)
	pub := key.Public().(ed25519.PublicKey)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := Revocation{PeerID: "12D3KooWpeerA", User: "alice", Reason: "lost", RevokedAt: at, NotAfter: at.Add(time.Hour)}
	signed := SignRevocation(key, base)
	tamper := func(f func(*Revocation)) Revocation { r := signed; f(&r); return r }
	tests := []struct {
		name string
		r    Revocation
		want error
	}{
		{name: "valid", r: signed},
		{name: "foreign key", r: SignRevocation(testKey(t, 2), base), want: ErrBadSignature},
		{name: "unsigned", r: base, want: ErrBadSignature},
		{name: "tampered peer", r: tamper(func(r *Revocation) { r.PeerID = "12D3KooWpeerB" }), want: ErrBadSignature},
		{name: "tampered expiry", r: tamper(func(r *Revocation) { r.NotAfter = r.NotAfter.Add(time.Hour) }), want: ErrBadSignature},
		{name: "empty peer", r: SignRevocation(key, Revocation{User: "alice"}), want: ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Verify(pub)
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if !signed.Needed(at) || signed.Needed(at.Add(time.Hour)) {
		t.Error("Needed: want true before the certificate's NotAfter and false from it on")
	}
	// A certificate signature never verifies as a revocation.
	cert := SignCertificate(key, Certificate{PeerID: base.PeerID, User: base.User, NotAfter: base.NotAfter})
	if err := (Revocation{PeerID: base.PeerID, User: base.User, NotAfter: base.NotAfter, Signature: cert.Signature}).Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Errorf("certificate signature accepted as a revocation: %v", err)
	}
}

func TestChatFrameValid(t *testing.T) {
	m := &ChatMessage{ID: "m1", From: "a", To: "b"}
	tests := []struct {
		name string
		f    ChatFrame
		want bool
	}{
		{name: "msg", f: ChatFrame{Type: FrameMsg, ID: "m1", Msg: m}, want: true},
		{name: "msg id mismatch", f: ChatFrame{Type: FrameMsg, ID: "m2", Msg: m}},
		{name: "msg without payload", f: ChatFrame{Type: FrameMsg, ID: "m1"}},
		{name: "two payloads", f: ChatFrame{Type: FrameMsg, ID: "m1", Msg: m, Typing: &Typing{}}},
		{name: "ack", f: ChatFrame{Type: FrameAck, Ack: &ChatAck{ID: "m1"}}, want: true},
		{name: "receipt without id", f: ChatFrame{Type: FrameReceipt, Receipt: &Receipt{}}},
		{name: "typing", f: ChatFrame{Type: FrameTyping, ID: "t", Typing: &Typing{}}, want: true},
		{name: "presence", f: ChatFrame{Type: FramePresence, ID: "p", Presence: &Presence{}}, want: true},
		{name: "subscribe", f: ChatFrame{Type: FrameSubscribe, ID: "s", Subscribe: &Subscribe{}}, want: true},
		{name: "type names another payload", f: ChatFrame{Type: FramePresence, ID: "p", Typing: &Typing{}}},
		{name: "unknown type", f: ChatFrame{Type: "file", ID: "x", Typing: &Typing{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Valid(); got != tt.want {
				t.Errorf("Valid = %v, want %v", got, tt.want)
			}
		})
	}
}
