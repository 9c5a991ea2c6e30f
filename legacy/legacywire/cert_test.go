package legacywire

import (
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

func testKey(tb testing.TB, seed byte) ed25519.PrivateKey {
	tb.Helper()
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return ed25519.NewKeyFromSeed(s)
}

// verifyCase is one certificate check and the error class it must give.
type verifyCase struct {
	name      string
	cert      Certificate
	authority ed25519.PublicKey
	peer      string
	now       time.Time
	want      error
}

// verifyCases are the checks Certificate.Verify (and CertCache.Verify)
// must pass, with the valid certificate and the authority's key they are
// made from.
func verifyCases(tb testing.TB) (signed Certificate, pub ed25519.PublicKey, now time.Time, cases []verifyCase) {
	authority := testKey(tb, 1)
	foreign := testKey(tb, 2)
	now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := Certificate{
		PeerID:        "12D3KooWpeerA",
		User:          "alice",
		Platform:      "desktop",
		ClientVersion: "7.1.0",
		Capabilities:  []string{"chat1"},
		NotAfter:      now.Add(time.Hour),
	}
	signed = SignCertificate(authority, base)
	pub = authority.Public().(ed25519.PublicKey)
	return signed, pub, now, []verifyCase{
		{name: "valid", cert: signed, authority: pub, peer: base.PeerID, now: now},
		{name: "wrong authority", cert: SignCertificate(foreign, base), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "checked against another authority", cert: signed, authority: foreign.Public().(ed25519.PublicKey), peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "unsigned", cert: base, authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "no authority key", cert: signed, authority: nil, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "expired", cert: signed, authority: pub, peer: base.PeerID, now: now.Add(time.Hour), want: ErrExpired},
		{name: "other peer", cert: signed, authority: pub, peer: "12D3KooWpeerB", now: now, want: ErrPeerMismatch},
		{name: "tampered user", cert: with(signed, func(c *Certificate) { c.User = "mallory" }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "tampered peer", cert: with(signed, func(c *Certificate) { c.PeerID = "12D3KooWpeerB" }), authority: pub, peer: "12D3KooWpeerB", now: now, want: ErrBadSignature},
		{name: "tampered capabilities", cert: with(signed, func(c *Certificate) { c.Capabilities = []string{CapBridge} }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "tampered expiry", cert: with(signed, func(c *Certificate) { c.NotAfter = c.NotAfter.Add(time.Hour) }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "tampered version", cert: with(signed, func(c *Certificate) { c.ClientVersion = "9.9.9" }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "tampered signature", cert: with(signed, func(c *Certificate) { c.Signature = append([]byte{c.Signature[0] ^ 1}, c.Signature[1:]...) }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
		{name: "field boundary shift", cert: with(signed, func(c *Certificate) { c.User, c.Platform = "alicedesktop", "" }), authority: pub, peer: base.PeerID, now: now, want: ErrBadSignature},
	}
}

func TestCertificateVerify(t *testing.T) {
	_, _, _, tests := verifyCases(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cert.Verify(tt.authority, tt.peer, tt.now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func with(c Certificate, f func(*Certificate)) Certificate {
	c.Capabilities = append([]string(nil), c.Capabilities...)
	f(&c)
	return c
}

func TestSignCertificateDeterministic(t *testing.T) {
	key := testKey(t, 1)
	c := Certificate{PeerID: "p", User: "u", NotAfter: time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.FixedZone("x", 3600))}
	a, b := SignCertificate(key, c), SignCertificate(key, c)
	if string(a.Signature) != string(b.Signature) {
		t.Fatal("two signatures of the same certificate differ")
	}
	if a.NotAfter.Location() != time.UTC || a.NotAfter.Nanosecond() != 123000000 {
		t.Errorf("NotAfter = %v, want UTC truncated to milliseconds", a.NotAfter)
	}
}

func TestCertificateHas(t *testing.T) {
	c := Certificate{Capabilities: []string{"x", CapBridge}}
	if !c.Has(CapBridge) || c.Has("y") || (Certificate{}).Has(CapBridge) {
		t.Fatal("Has gives wrong answers")
	}
}

func TestRouteRecordVerify(t *testing.T) {
	authority := testKey(t, 1)
	pub := authority.Public().(ed25519.PublicKey)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	base := RouteRecord{User: "carol", PeerID: "12D3KooWbridge", Addrs: []string{"/ip4/127.0.0.1/tcp/4001"}, Seq: 3, NotAfter: now.Add(time.Hour)}
	signed := SignRoute(authority, base)
	tampered := func(f func(*RouteRecord)) RouteRecord {
		r := signed
		r.Addrs = append([]string(nil), r.Addrs...)
		f(&r)
		return r
	}
	tests := []struct {
		name string
		r    RouteRecord
		now  time.Time
		want error
	}{
		{name: "valid", r: signed, now: now},
		{name: "foreign key", r: SignRoute(testKey(t, 9), base), now: now, want: ErrBadSignature},
		{name: "expired", r: signed, now: now.Add(2 * time.Hour), want: ErrExpired},
		{name: "tampered seq", r: tampered(func(r *RouteRecord) { r.Seq++ }), now: now, want: ErrBadSignature},
		{name: "tampered withdrawn", r: tampered(func(r *RouteRecord) { r.Withdrawn = true }), now: now, want: ErrBadSignature},
		{name: "tampered addrs", r: tampered(func(r *RouteRecord) { r.Addrs[0] = "/ip4/10.0.0.1/tcp/1" }), now: now, want: ErrBadSignature},
		{name: "tampered peer", r: tampered(func(r *RouteRecord) { r.PeerID = "12D3KooWevil" }), now: now, want: ErrBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.r.Verify(pub, tt.now)
			if (tt.want == nil && err != nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCertCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{ErrBadSignature, CodeBadCertificate},
		{ErrExpired, CodeExpired},
		{ErrPeerMismatch, CodePeerMismatch},
		{errors.New("other"), CodeBadCertificate},
	}
	for _, tt := range tests {
		if got := CertCode(tt.err); got != tt.want {
			t.Errorf("CertCode(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
