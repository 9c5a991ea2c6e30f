package cloud

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// forgedTokens are tokens an attacker could make without the token key,
// or from a key or format of another purpose; every one must be refused.
func forgedTokens(tb testing.TB, now time.Time) map[string]string {
	tb.Helper()
	b64 := base64.RawURLEncoding
	pub := testKey.Public().(ed25519.PublicKey)
	claims := func(sub, role string, iat, exp time.Time) string {
		return b64.EncodeToString(fmt.Appendf(nil, `{"sub":%q,"role":%q,"iat":%q,"exp":%q}`,
			sub, role, cloudwire.FormatTime(iat), cloudwire.FormatTime(exp)))
	}
	// signed makes a token of the right shape with any claims, signed as the
	// agent would (domain prefix included) by key.
	signed := func(key ed25519.PrivateKey, payload string) string {
		return payload + "." + b64.EncodeToString(ed25519.Sign(key, []byte("ferry-token-v1\n"+payload)))
	}
	good := claims("alice", cloudwire.RoleUser, now, now.Add(time.Hour))
	jwtHeader := func(alg string) string { return b64.EncodeToString(fmt.Appendf(nil, `{"alg":%q,"typ":"JWT"}`, alg)) }
	hs256 := func(data string) string {
		m := hmac.New(sha256.New, pub) // the public key as an HMAC secret: alg confusion
		m.Write([]byte(data))
		return b64.EncodeToString(m.Sum(nil))
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	// The overlay authority's key in the agent is another Ed25519 key.
	authorityKey := ed25519.NewKeyFromSeed([]byte("ferry overlay authority key....."))
	return map[string]string{
		"JWT alg none":                     jwtHeader("none") + "." + good + ".",
		"JWT alg none, no signature part":  jwtHeader("none") + "." + good,
		"JWT HS256 keyed with the pub key": jwtHeader("HS256") + "." + good + "." + hs256(jwtHeader("HS256")+"."+good),
		"HMAC in place of the signature":   good + "." + hs256("ferry-token-v1\n"+good),
		"claims without signature":         good,
		"empty signature":                  good + ".",
		"three parts":                      signed(testKey, good) + ".x",
		"signature without domain prefix":  good + "." + b64.EncodeToString(ed25519.Sign(testKey, []byte(good))),
		"signed by another key":            signed(otherKey, good),
		"signed by the overlay authority":  signed(authorityKey, good),
		"expired":                          signed(testKey, claims("alice", cloudwire.RoleUser, now.Add(-2*time.Hour), now.Add(-time.Second))),
		"issued in the future":             signed(testKey, claims("alice", cloudwire.RoleUser, now.Add(time.Hour), now.Add(2*time.Hour))),
		"expires before issued":            signed(testKey, claims("alice", cloudwire.RoleUser, now, now.Add(-time.Minute))),
		"no expiry":                        signed(testKey, b64.EncodeToString(fmt.Appendf(nil, `{"sub":"alice","role":"user","iat":%q}`, cloudwire.FormatTime(now)))),
		"unknown role":                     signed(testKey, claims("alice", "root", now, now.Add(time.Hour))),
		"empty subject":                    signed(testKey, claims("", cloudwire.RoleUser, now, now.Add(time.Hour))),
		"padded base64":                    signed(testKey, good) + "==",
		"claims tampered after signing":    claims("mallory", cloudwire.RoleUser, now, now.Add(time.Hour)) + signed(testKey, good)[len(good):],
	}
}

// TestForgedTokensRefused: every forged or out-of-date token is refused
// before the upgrade when it comes in the Authorization header (401) and
// with close 4401 when it comes in hello; no session opens. A token for
// the admin role (another audience) is refused as forbidden.
func TestForgedTokensRefused(t *testing.T) {
	f := newFixture(t, nil)
	now := time.Now()
	// refused requires tok to be refused with status in the header and
	// with close code in hello.
	refused := func(t *testing.T, tok string, status, code int) {
		t.Helper()
		_, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: tok, Hello: cloudwire.Hello{Device: "d"}})
		var de *DialError
		if !errors.As(err, &de) || de.StatusCode != status {
			t.Fatalf("header token: %v, want HTTP %d", err, status)
		}
		_, err = Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Device: "d", Token: tok}})
		closeCode(t, err, code)
	}
	for name, tok := range forgedTokens(t, now) {
		t.Run(name, func(t *testing.T) { refused(t, tok, http.StatusUnauthorized, cloudwire.CloseUnauthorized) })
	}
	t.Run("admin token (another audience)", func(t *testing.T) {
		refused(t, token(t, "ops", cloudwire.RoleAdmin), http.StatusForbidden, cloudwire.CloseForbidden)
	})
	if n := f.svc.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after forged tokens", n)
	}
	tallyRefused(len(forgedTokens(t, now)) + 1)
	// The genuine token of the same claims opens a session.
	c := f.dial(t, "alice", "d", 0)
	if c.Welcome().User != "alice" {
		t.Fatalf("welcome %+v", c.Welcome())
	}
}

// TestForeignOriginRefused: a browser upgrade from an origin not on the
// allowlist is refused with 403 before the upgrade, whatever its case,
// suffix or scheme; the listed origin passes.
func TestForeignOriginRefused(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.AllowedOrigins = []string{"https://chat.example.com"} })
	tok := token(t, "alice", cloudwire.RoleUser)
	for _, origin := range []string{
		"https://evil.example.com",
		"http://chat.example.com",          // another scheme
		"https://chat.example.com.evil.io", // a suffix
		"https://chat.example.com:8443",    // another port
		"null",                             // sandboxed frames and file: pages
	} {
		t.Run(origin, func(t *testing.T) {
			_, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: tok, Header: http.Header{"Origin": {origin}}, Hello: cloudwire.Hello{Device: "d"}})
			var de *DialError
			if !errors.As(err, &de) || de.StatusCode != http.StatusForbidden {
				t.Fatalf("Dial from %s: %v, want HTTP 403", origin, err)
			}
		})
	}
	c, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: tok, Header: http.Header{"Origin": {"https://CHAT.example.com"}}, Hello: cloudwire.Hello{Device: "d"}})
	if err != nil {
		t.Fatalf("Dial from the allowed origin: %v", err)
	}
	c.Close()
	tallyRefused(5)
}
