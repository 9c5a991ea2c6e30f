package cloud

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// forgedToken is a token an attacker could make without the token key, or
// from a key, audience, issuer or format of another purpose, with the
// reason the service must give when refusing it.
type forgedToken struct {
	name, token string
	reason      string // in the close reason (4401) and the 401 body
}

// forgedTokens are every one refused; their reasons are the distinct
// ErrToken* of cloudwire.
func forgedTokens(tb testing.TB, now time.Time) []forgedToken {
	tb.Helper()
	b64 := base64.RawURLEncoding
	pub := testKey.Public().(ed25519.PublicKey)
	enc := func(s string) string { return b64.EncodeToString([]byte(s)) }
	// claims are the JSON claims of a token for sub, with the times as
	// NumericDates and extra members appended.
	claims := func(iss, aud string, iat, exp time.Time, extra string) string {
		var members []string
		if iss != "" {
			members = append(members, fmt.Sprintf(`"iss":%q`, iss))
		}
		members = append(members, `"sub":"alice"`)
		if aud != "" {
			members = append(members, fmt.Sprintf(`"aud":%q`, aud))
		}
		members = append(members, `"role":"user"`, fmt.Sprintf(`"iat":%d,"exp":%d`, iat.Unix(), exp.Unix()))
		return "{" + strings.Join(members, ",") + extra + "}"
	}
	good := claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now, now.Add(time.Hour), "")
	const hdr = `{"alg":"EdDSA","typ":"JWT"}`
	// jws signs header.claims (both JSON text) with key as JWS does; a
	// nil key leaves the signature part empty.
	jws := func(key ed25519.PrivateKey, header, claims string) string {
		in := enc(header) + "." + enc(claims)
		if key == nil {
			return in + "."
		}
		return in + "." + b64.EncodeToString(ed25519.Sign(key, []byte(in)))
	}
	hs256 := func(header string) string {
		in := enc(header) + "." + enc(good)
		m := hmac.New(sha256.New, pub) // the public key as an HMAC secret: alg confusion
		m.Write([]byte(in))
		return in + "." + b64.EncodeToString(m.Sum(nil))
	}
	// junkSig is a signature of another algorithm's size (RS256: 256
	// bytes, ES256: 64): the verifier must refuse the alg without trying.
	junkSig := func(header string, n int) string {
		sig := make([]byte, n)
		rand.Read(sig)
		return enc(header) + "." + enc(good) + "." + b64.EncodeToString(sig)
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	// The overlay authority's key in the agent is another Ed25519 key.
	authorityKey := ed25519.NewKeyFromSeed([]byte("ferry overlay authority key....."))
	genuine := jws(testKey, hdr, good)
	header, rest, _ := strings.Cut(genuine, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	// v1 is the token format before JWS: claims "." signature over a
	// domain prefix, validly signed by the right key.
	v1payload := enc(fmt.Sprintf(`{"sub":"alice","role":"user","iat":%q,"exp":%q}`, cloudwire.FormatTime(now), cloudwire.FormatTime(now.Add(time.Hour))))
	v1 := v1payload + "." + b64.EncodeToString(ed25519.Sign(testKey, []byte("ferry-token-v1\n"+v1payload)))
	const (
		alg       = "algorithm not allowed"
		badSig    = "bad signature"
		malformed = "malformed"
		badHeader = "unsupported header"
		audience  = "wrong audience"
		issuer    = "wrong issuer"
		claimsBad = "invalid claims"
	)
	return []forgedToken{
		{"alg none", jws(nil, `{"alg":"none","typ":"JWT"}`, good), alg},
		{"alg none, no signature part", strings.TrimSuffix(jws(nil, `{"alg":"none","typ":"JWT"}`, good), "."), alg},
		{"alg none, signed anyway", jws(testKey, `{"alg":"none","typ":"JWT"}`, good), alg},
		{"alg HS256 keyed with the public key", hs256(`{"alg":"HS256","typ":"JWT"}`), alg},
		{"alg RS256", junkSig(`{"alg":"RS256","typ":"JWT"}`, 256), alg},
		{"alg ES256", junkSig(`{"alg":"ES256","typ":"JWT"}`, 64), alg},
		{"no alg", jws(testKey, `{"typ":"JWT"}`, good), alg},
		{"alg EdDSA, another key", jws(otherKey, hdr, good), badSig},
		{"alg EdDSA, the overlay authority's key", jws(authorityKey, hdr, good), badSig},
		{"wrong audience", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, "ferry-admin", now, now.Add(time.Hour), "")), audience},
		{"missing audience", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, "", now, now.Add(time.Hour), "")), audience},
		{"wrong issuer", jws(testKey, hdr, claims("evil-agent", cloudwire.DefaultAudience, now, now.Add(time.Hour), "")), issuer},
		{"missing issuer", jws(testKey, hdr, claims("", cloudwire.DefaultAudience, now, now.Add(time.Hour), "")), issuer},
		{"expired", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now.Add(-2*time.Hour), now.Add(-time.Second), "")), "token expired"},
		{"not yet valid (nbf)", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now, now.Add(2*time.Hour), fmt.Sprintf(`,"nbf":%d`, now.Add(time.Hour).Unix()))), "not valid yet"},
		{"issued far in the future", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now.Add(time.Hour), now.Add(2*time.Hour), "")), "issued in the future"},
		{"expires before issued", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now, now.Add(-time.Minute), "")), claimsBad},
		{"unknown role", jws(testKey, hdr, strings.Replace(good, `"role":"user"`, `"role":"root"`, 1)), claimsBad},
		{"tampered header", enc(`{"alg":"EdDSA","typ":"JWT","kid":"x"}`) + "." + payload + "." + sig, badSig},
		{"tampered claims", header + "." + enc(strings.Replace(good, "alice", "mallory", 1)) + "." + sig, badSig},
		{"crit header", jws(testKey, `{"alg":"EdDSA","typ":"JWT","crit":["exp"],"exp":0}`, good), badHeader},
		{"embedded jwk", jws(otherKey, `{"alg":"EdDSA","typ":"JWT","jwk":{"kty":"OKP","crv":"Ed25519"}}`, good), badHeader},
		{"typ not JWT", jws(testKey, `{"alg":"EdDSA","typ":"ferry-token"}`, good), badHeader},
		{"duplicate alg", jws(testKey, `{"alg":"none","typ":"JWT","alg":"EdDSA"}`, good), "duplicate"},
		{"duplicate claim", jws(testKey, hdr, claims(cloudwire.DefaultIssuer, cloudwire.DefaultAudience, now, now.Add(time.Hour), `,"sub":"mallory"`)), "duplicate"},
		{"bad base64", header + "." + payload + ".!!", malformed},
		{"padded base64", genuine + "==", malformed},
		{"four parts", genuine + ".x", malformed},
		{"old format (claims.signature over a domain prefix)", v1, alg},
	}
}

// TestForgedTokensRefused: every forged or out-of-date token is refused
// before the upgrade when it comes in the Authorization header (401) and
// with close 4401 and a JSON reason naming why when it comes in hello; no
// session opens. A token for the admin role is refused as forbidden, and
// an oversized one is refused by size (401 in the header; in hello the
// frame itself is invalid, 4400, see TestRawFramesRefused).
func TestForgedTokensRefused(t *testing.T) {
	f := newFixture(t, nil)
	now := time.Now()
	// refused requires tok to be refused with status in the header and
	// with close code in hello, both with reason.
	refused := func(t *testing.T, tok string, status, code int, reason string) {
		t.Helper()
		_, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: tok, Hello: cloudwire.Hello{Device: "d"}})
		var de *DialError
		if !errors.As(err, &de) || de.StatusCode != status {
			t.Fatalf("header token: %v, want HTTP %d", err, status)
		}
		if !strings.Contains(de.Body, reason) {
			t.Errorf("header token refused with %q, want %q in it", de.Body, reason)
		}
		if code == 0 {
			return
		}
		_, err = Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Device: "d", Token: tok}})
		ce := closeCode(t, err, code)
		if !strings.Contains(ce.Reason.Reason, reason) {
			t.Errorf("hello token closed with reason %q (raw %q), want %q in it", ce.Reason.Reason, ce.Text, reason)
		}
	}
	forged := forgedTokens(t, now)
	for _, ft := range forged {
		t.Run(ft.name, func(t *testing.T) {
			refused(t, ft.token, http.StatusUnauthorized, cloudwire.CloseUnauthorized, ft.reason)
		})
	}
	t.Run("oversized", func(t *testing.T) {
		refused(t, strings.Repeat("a", cloudwire.MaxTokenSize+1), http.StatusUnauthorized, 0, "over 4096 bytes")
	})
	t.Run("admin token (another role)", func(t *testing.T) {
		refused(t, token(t, "ops", cloudwire.RoleAdmin), http.StatusForbidden, cloudwire.CloseForbidden, "cannot open sessions")
	})
	if n := f.svc.Sessions(); n != 0 {
		t.Fatalf("Sessions() = %d after forged tokens", n)
	}
	tallyRefused(len(forged) + 2)
	// The genuine token of the same claims opens a session.
	c := f.dial(t, "alice", "d", 0)
	if c.Welcome().User != "alice" {
		t.Fatalf("welcome %+v", c.Welcome())
	}
}

// TestTokenPolicyConfigured: the service checks the issuer and audience it
// is configured with, not the defaults.
func TestTokenPolicyConfigured(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.TokenIssuer, c.TokenAudience = "ops-agent", "chat-eu" })
	now := time.Now()
	sign := func(iss, aud string) string {
		tok, err := cloudwire.SignToken(testKey, cloudwire.Claims{Issuer: iss, Audience: cloudwire.Audience{aud}, Subject: "alice", Role: cloudwire.RoleUser, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for name, tok := range map[string]string{
		"default issuer":   sign(cloudwire.DefaultIssuer, "chat-eu"),
		"default audience": sign("ops-agent", cloudwire.DefaultAudience),
	} {
		_, err := Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Device: "d", Token: tok}})
		closeCode(t, err, cloudwire.CloseUnauthorized)
		t.Logf("%s: refused", name)
	}
	c, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: sign("ops-agent", "chat-eu"), Hello: cloudwire.Hello{Device: "d"}})
	if err != nil {
		t.Fatalf("configured issuer and audience: %v", err)
	}
	c.Close()
	tallyRefused(2)
	if err := (Config{JS: f.eng.JS, TokenKey: testKey.Public().(ed25519.PublicKey), TokenAlgorithms: []string{"HS256"}}).Validate(); err == nil {
		t.Error("Validate accepted TokenAlgorithms HS256")
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
