package cloudwire

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testKey(tb testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	tb.Helper()
	seed := make([]byte, ed25519.SeedSize)
	copy(seed, "ferry cloudwire test key seed...")
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv
}

func TestTokenRoundTrip(t *testing.T) {
	pub, priv := testKey(t)
	c := Claims{Subject: "alice", Role: RoleUser, IssuedAt: at, ExpiresAt: at.Add(time.Hour)}
	tok, err := SignToken(priv, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyToken(pub, tok, at.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Error(diff)
	}
}

func TestVerifyTokenErrors(t *testing.T) {
	pub, priv := testKey(t)
	otherPub, otherPriv := ed25519.PublicKey(make([]byte, 32)), ed25519.NewKeyFromSeed(make([]byte, 32))
	_ = otherPub
	good := Claims{Subject: "alice", Role: RoleUser, IssuedAt: at, ExpiresAt: at.Add(time.Hour)}
	sign := func(k ed25519.PrivateKey, c Claims) string {
		tok, err := SignToken(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := sign(priv, good)
	payload, sig, _ := strings.Cut(tok, ".")
	forged := b64.EncodeToString([]byte(`{"sub":"mallory","role":"admin","iat":"2026-03-04T05:06:07.891Z","exp":"2030-01-01T00:00:00.000Z"}`))
	tests := []struct {
		name  string
		pub   ed25519.PublicKey
		token string
		now   time.Time
		want  error
	}{
		{"expired", pub, tok, at.Add(time.Hour), ErrTokenExpired},
		{"other key", pub, sign(otherPriv, good), at, ErrBadToken},
		{"swapped payload", pub, forged + "." + sig, at, ErrBadToken},
		{"empty", pub, "", at, ErrBadToken},
		{"one part", pub, payload, at, ErrBadToken},
		{"three parts", pub, tok + ".x", at, ErrBadToken},
		{"bad base64", pub, payload + ".!!", at, ErrBadToken},
		{"issued in the future", pub, tok, at.Add(-time.Hour), ErrBadToken},
		{"no key", nil, tok, at, ErrBadToken},
		{"too long", pub, strings.Repeat("a", MaxTokenSize+1), at, ErrBadToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyToken(tc.pub, tc.token, tc.now); !errors.Is(err, tc.want) {
				t.Errorf("VerifyToken = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignTokenRefusesBadClaims(t *testing.T) {
	_, priv := testKey(t)
	for _, c := range []Claims{
		{Subject: "", Role: RoleUser, IssuedAt: at, ExpiresAt: at.Add(time.Hour)},
		{Subject: "a", Role: "root", IssuedAt: at, ExpiresAt: at.Add(time.Hour)},
		{Subject: "a", Role: RoleUser, IssuedAt: at},
	} {
		if _, err := SignToken(priv, c); err == nil {
			t.Errorf("SignToken(%+v) succeeded", c)
		}
	}
}
