package legacy

import (
	"errors"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// TestRevocation revokes a device's certificate at the supernode over the
// directory protocol and checks every place that must then refuse it:
// registration, lookup (its own and others'), and the chat handlers (v1 and
// v2) of a device that synced the revocation list.
func TestRevocation(t *testing.T) {
	auth := newTestAuthority(t)
	foreign := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _ := newTestDevice(t, auth, snInfo, "alice")
	alicePhone, _ := newTestDevice(t, auth, snInfo, "alice")
	bob, bobBox := newTestDevice(t, auth, snInfo, "bob")
	ctx := testCtx(t)

	if err := bob.Directory().Revoke(ctx, foreign.Revoke(alice.cfg.Cert, "forged")); !isRefusal(err, legacywire.CodeBadRevocation) {
		t.Fatalf("revocation by a foreign authority = %v, want %s", err, legacywire.CodeBadRevocation)
	}
	if _, err := NewDirectory(bob.cfg.Host, legacywire.Certificate{}, snInfo).roundTrip(ctx, legacywire.DirRequest{
		Op: legacywire.OpRevoke, Revocation: ptr(auth.Revoke(alice.cfg.Cert, "lost")),
	}); !isRefusal(err, legacywire.CodeNoCertificate) {
		t.Fatalf("revoke without a certificate = %v, want %s", err, legacywire.CodeNoCertificate)
	}
	if devs, _ := sn.Lookup("alice"); len(devs) != 2 {
		t.Fatalf("alice has %d devices before revocation, want 2", len(devs))
	}

	if err := bob.Directory().Revoke(ctx, auth.Revoke(alice.cfg.Cert, "lost")); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	look, err := bob.Directory().Lookup(ctx, "alice")
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if len(look.Devices) != 1 || look.Devices[0].Cert.PeerID != alicePhone.cfg.Cert.PeerID {
		t.Errorf("alice's devices after revoking one = %+v, want only the phone", look.Devices)
	}
	if err := alice.Register(ctx); !isRefusal(err, legacywire.CodeRevoked) {
		t.Errorf("revoked device registers: %v, want %s", err, legacywire.CodeRevoked)
	}
	if devs, _ := sn.Lookup("alice"); len(devs) != 1 {
		t.Errorf("supernode lists %d alice devices after a refused re-registration, want 1", len(devs))
	}
	if _, err := alice.Directory().Lookup(ctx, "bob"); !isRefusal(err, legacywire.CodeRevoked) {
		t.Errorf("revoked device looks up: %v, want %s", err, legacywire.CodeRevoked)
	}

	// Bob learns the revocation and his chat handlers refuse alice's old
	// device, in both chat versions, even when it dials him directly.
	if n, err := bob.SyncRevocations(ctx); err != nil || n != 1 {
		t.Fatalf("SyncRevocations = %d, %v; want 1 new", n, err)
	}
	if n, err := bob.SyncRevocations(ctx); err != nil || n != 0 {
		t.Errorf("second SyncRevocations = %d, %v; want 0 new", n, err)
	}
	msg := legacywire.ChatMessage{ID: "m-revoked", From: "alice", To: "bob", Text: "still here", SentAt: time.Now().UTC()}
	for _, v := range []int{1, 2} {
		ack, got, err := SendChatFrame(ctx, alice.cfg.Host, alice.cfg.Cert, addrInfoOf(bob.cfg.Host), v,
			legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg})
		if err != nil || got != v || ack.Code != legacywire.CodeRevoked {
			t.Errorf("chat v%d from a revoked device = %+v, v%d, %v; want refusal %s", v, ack, got, err, legacywire.CodeRevoked)
		}
	}
	if n := len(bobBox.all()); n != 0 {
		t.Errorf("bob received %d messages from a revoked device", n)
	}
	// Alice's other device still reaches bob.
	if _, _, err := alicePhone.Send(ctx, "bob", "from the phone"); err != nil {
		t.Errorf("unrevoked device of the same user: %v", err)
	}
}

// TestChatV2RefusesImpersonation: on chat v2, a valid certificate for one
// user never speaks for another, and expired or foreign-authority
// certificates are refused at the hello.
func TestChatV2RefusesImpersonation(t *testing.T) {
	auth := newTestAuthority(t)
	foreign := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	bob, bobBox := newTestDevice(t, auth, snInfo, "bob")
	h := newTestHost(t)
	good := certify(t, auth, h, "alice")
	at := time.Now().UTC()
	tests := []struct {
		name string
		cert legacywire.Certificate
		f    legacywire.ChatFrame
		want string
	}{
		{name: "message from another user", cert: good, f: msgFrame("m1", "carol", "bob"), want: legacywire.CodeNotYourUser},
		{name: "receipt as another reader", cert: good, f: legacywire.ChatFrame{Type: legacywire.FrameReceipt, ID: "r1",
			Receipt: &legacywire.Receipt{MsgID: "m0", Reader: "carol", Sender: "bob", Status: legacywire.ReceiptRead, At: at}}, want: legacywire.CodeNotYourFrame},
		{name: "typing as another user", cert: good, f: legacywire.ChatFrame{Type: legacywire.FrameTyping, ID: "t1",
			Typing: &legacywire.Typing{From: "carol", To: "bob", Active: true, At: at}}, want: legacywire.CodeNotYourFrame},
		{name: "presence of another user", cert: good, f: legacywire.ChatFrame{Type: legacywire.FramePresence, ID: "p1",
			Presence: &legacywire.Presence{User: "carol", Status: legacywire.PresenceActive, At: at}}, want: legacywire.CodeNotYourFrame},
		{name: "expired certificate", cert: legacywire.SignCertificate(auth.key, legacywire.Certificate{
			PeerID: h.ID().String(), User: "alice", NotAfter: time.Now().Add(-time.Minute)}), f: msgFrame("m2", "alice", "bob"), want: legacywire.CodeExpired},
		{name: "foreign authority", cert: certify(t, foreign, h, "alice"), f: msgFrame("m3", "alice", "bob"), want: legacywire.CodeBadCertificate},
		{name: "another peer's certificate", cert: bob.cfg.Cert, f: msgFrame("m4", "bob", "bob"), want: legacywire.CodePeerMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, v, err := SendChatFrame(testCtx(t), h, tt.cert, addrInfoOf(bob.cfg.Host), 2, tt.f)
			if err != nil || v != 2 {
				t.Fatalf("SendChatFrame = %+v, v%d, %v; want a v2 refusal", ack, v, err)
			}
			if ack.Status != legacywire.StatusRefused || ack.Code != tt.want {
				t.Errorf("ack = %+v, want refusal %s", ack, tt.want)
			}
		})
	}
	if n := len(bobBox.all()); n != 0 {
		t.Errorf("bob received %d impersonated messages", n)
	}
}

func TestRevocationsList(t *testing.T) {
	auth := newTestAuthority(t)
	foreign := newTestAuthority(t)
	l := NewRevocations(auth.PublicKey())
	now := time.Now()
	h1, h2 := newTestHost(t), newTestHost(t)
	c1, c2 := certify(t, auth, h1, "alice"), certify(t, auth, h2, "bob")
	if added, err := l.Add(auth.Revoke(c1, ""), now); !added || err != nil {
		t.Fatalf("Add = %v, %v", added, err)
	}
	if added, err := l.Add(auth.Revoke(c1, "again"), now); added || err != nil {
		t.Errorf("Add of a known peer = %v, %v; want not new", added, err)
	}
	// A renewal (a later end) replaces the revocation held; an older one
	// does not.
	longer := c1
	longer.NotAfter = c1.NotAfter.Add(time.Hour)
	if added, err := l.Add(auth.Revoke(longer, "renewed"), now); !added || err != nil {
		t.Errorf("Add of a renewal = %v, %v; want replaced", added, err)
	}
	if added, _ := l.Add(auth.Revoke(c1, "older"), now); added {
		t.Error("Add of an older revocation replaced the renewal")
	}
	if got := l.List(now); len(got) != 1 || got[0].Reason != "renewed" {
		t.Errorf("after the renewal: %+v, want the renewal alone", got)
	}
	if _, err := l.Add(foreign.Revoke(c2, ""), now); !errors.Is(err, legacywire.ErrBadSignature) {
		t.Errorf("foreign revocation: %v, want ErrBadSignature", err)
	}
	if !l.Revoked(c1.PeerID) || l.Revoked(c2.PeerID) || (*Revocations)(nil).Revoked(c1.PeerID) {
		t.Error("Revoked gives wrong answers")
	}
	// Once the revoked certificate has expired on its own the revocation is
	// forgotten: lists stay bounded by live certificates.
	if got := l.List(longer.NotAfter.Add(time.Second)); len(got) != 0 || l.Len() != 0 {
		t.Errorf("after the certificate's expiry: List = %v, Len = %d; want empty", got, l.Len())
	}
}

func msgFrame(id, from, to string) legacywire.ChatFrame {
	m := legacywire.ChatMessage{ID: id, From: from, To: to, Text: "x", SentAt: time.Now().UTC()}
	return legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: id, Msg: &m}
}
