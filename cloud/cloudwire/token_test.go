package cloudwire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// atSec is at in whole seconds, as tokens carry times.
var atSec = at.Truncate(time.Second)

// testClaims are good user claims issued at atSec for an hour.
func testClaims() Claims {
	return Claims{Issuer: DefaultIssuer, Subject: "alice", Audience: Audience{DefaultAudience}, Role: RoleUser, IssuedAt: atSec, ExpiresAt: atSec.Add(time.Hour)}
}

func TestTokenRoundTrip(t *testing.T) {
	pub, priv := testKey(t)
	c := testClaims()
	tok, err := SignToken(priv, c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := TokenPolicy{Key: pub}.Verify(tok, atSec.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Error(diff)
	}
}

// TestTokenGolden pins the token format: a fixed key and claims sign to
// the exact token in testdata (Ed25519 signatures are deterministic), and
// that token verifies. A change here is a protocol change (PROTOCOL.md).
func TestTokenGolden(t *testing.T) {
	pub, priv := testKey(t)
	for _, tc := range []struct {
		name string
		c    Claims
	}{
		{"token_user", testClaims()},
		{"token_bridge_nbf", Claims{Issuer: DefaultIssuer, Subject: "ferry-bridge", Audience: Audience{DefaultAudience, "ferry-admin"}, Role: RoleBridge, IssuedAt: atSec, NotBefore: atSec.Add(time.Minute), ExpiresAt: atSec.Add(24 * time.Hour)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := SignToken(priv, tc.c)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".txt")
			if *update {
				if err := os.WriteFile(path, []byte(tok+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			golden := string(bytes.TrimSpace(want))
			if tok != golden {
				t.Errorf("token changed (a protocol change, see PROTOCOL.md):\n got %s\nwant %s", tok, golden)
			}
			header, _, _ := strings.Cut(golden, ".")
			if h, _ := b64.DecodeString(header); string(h) != `{"alg":"EdDSA","typ":"JWT"}` {
				t.Errorf("header %s", h)
			}
			got, err := TokenPolicy{Key: pub}.Verify(golden, atSec.Add(2*time.Minute))
			if err != nil {
				t.Fatalf("golden token: %v", err)
			}
			if diff := cmp.Diff(tc.c, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTokenInterop: a token made by another JWS implementation (Node's
// crypto, with the test key's seed; header members in another order, a
// kid, aud as an array, an unknown claim) verifies, so that what we sign
// and check is JWS as others read it, not a dialect:
//
//	const der = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
//	const key = crypto.createPrivateKey({key: der, format: "der", type: "pkcs8"});
//	const input = b64url(header) + "." + b64url(claims);
//	input + "." + crypto.sign(null, Buffer.from(input), key).toString("base64url")
func TestTokenInterop(t *testing.T) {
	pub, _ := testKey(t)
	b, err := os.ReadFile(filepath.Join("testdata", "token_interop.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := TokenPolicy{Key: pub}.Verify(string(bytes.TrimSpace(b)), atSec.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{Issuer: DefaultIssuer, Subject: "carol", Audience: Audience{"ferry-admin", DefaultAudience}, Role: RoleBridge,
		IssuedAt: atSec, NotBefore: atSec, ExpiresAt: atSec.Add(time.Hour)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
}

// rawToken builds a token from header and claims JSON as given, signed
// over "header.claims" by key (nil: an empty signature part).
func rawToken(key ed25519.PrivateKey, header, claims string) string {
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	if key == nil {
		return in + "."
	}
	return in + "." + b64.EncodeToString(ed25519.Sign(key, []byte(in)))
}

func TestVerifyTokenErrors(t *testing.T) {
	pub, priv := testKey(t)
	otherPriv := ed25519.NewKeyFromSeed(make([]byte, 32))
	sign := func(k ed25519.PrivateKey, c Claims) string {
		tok, err := SignToken(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := testClaims()
	tok := sign(priv, good)
	header, rest, _ := strings.Cut(tok, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	const hdr = `{"alg":"EdDSA","typ":"JWT"}`
	claimsJSON := func(extra string) string {
		return fmt.Sprintf(`{"iss":"ferry-agent","sub":"alice","aud":"ferry-cloud","role":"user","iat":%d,"exp":%d%s}`, atSec.Unix(), atSec.Add(time.Hour).Unix(), extra)
	}
	hs256 := func(h string) string {
		in := b64.EncodeToString([]byte(h)) + "." + b64.EncodeToString([]byte(claimsJSON("")))
		m := hmac.New(sha256.New, pub)
		m.Write([]byte(in))
		return in + "." + b64.EncodeToString(m.Sum(nil))
	}
	with := func(f func(*Claims)) Claims { c := good; f(&c); return c }
	tests := []struct {
		name  string
		pol   TokenPolicy
		token string
		now   time.Time
		want  error
	}{
		{"expired", TokenPolicy{Key: pub}, tok, atSec.Add(time.Hour), ErrTokenExpired},
		{"other key", TokenPolicy{Key: pub}, sign(otherPriv, good), atSec, ErrTokenSignature},
		{"swapped claims", TokenPolicy{Key: pub}, header + "." + b64.EncodeToString([]byte(claimsJSON(`,"x":1`))) + "." + sig, atSec, ErrTokenSignature},
		{"tampered header", TokenPolicy{Key: pub}, b64.EncodeToString([]byte(`{"alg":"EdDSA","typ":"jwt"}`)) + "." + payload + "." + sig, atSec, ErrTokenSignature},
		{"empty", TokenPolicy{Key: pub}, "", atSec, ErrTokenMalformed},
		{"one part", TokenPolicy{Key: pub}, header, atSec, ErrTokenMalformed},
		{"two parts", TokenPolicy{Key: pub}, header + "." + payload, atSec, ErrTokenMalformed},
		{"four parts", TokenPolicy{Key: pub}, tok + ".x", atSec, ErrTokenMalformed},
		{"bad base64", TokenPolicy{Key: pub}, header + "." + payload + ".!!", atSec, ErrTokenMalformed},
		{"newline in signature", TokenPolicy{Key: pub}, tok[:len(tok)-4] + "\n" + tok[len(tok)-4:], atSec, ErrTokenMalformed},
		{"padding", TokenPolicy{Key: pub}, tok + "==", atSec, ErrTokenMalformed},
		{"malleable last bits", TokenPolicy{Key: pub}, flipLastBit(tok), atSec, ErrTokenSignature},
		{"too long", TokenPolicy{Key: pub}, strings.Repeat("a", MaxTokenSize+1), atSec, ErrTokenMalformed},
		{"no key", TokenPolicy{}, tok, atSec, ErrBadToken},
		{"alg none", TokenPolicy{Key: pub}, rawToken(nil, `{"alg":"none","typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenAlgorithm},
		{"alg none, no signature part", TokenPolicy{Key: pub}, strings.TrimSuffix(rawToken(nil, `{"alg":"none","typ":"JWT"}`, claimsJSON("")), "."), atSec, ErrTokenAlgorithm},
		{"alg HS256 keyed with the public key", TokenPolicy{Key: pub}, hs256(`{"alg":"HS256","typ":"JWT"}`), atSec, ErrTokenAlgorithm},
		{"alg RS256", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"RS256","typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenAlgorithm},
		{"alg ES256", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"ES256","typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenAlgorithm},
		{"alg eddsa (case)", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"eddsa","typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenAlgorithm},
		{"no alg", TokenPolicy{Key: pub}, rawToken(priv, `{"typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenAlgorithm},
		{"alg not a string", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":null,"typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenMalformed},
		{"no typ", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"EdDSA"}`, claimsJSON("")), atSec, ErrTokenHeader},
		{"typ JOSE", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"EdDSA","typ":"JOSE"}`, claimsJSON("")), atSec, ErrTokenHeader},
		{"crit header", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"EdDSA","typ":"JWT","crit":["exp"],"exp":1}`, claimsJSON("")), atSec, ErrTokenHeader},
		{"embedded jwk", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"EdDSA","typ":"JWT","jwk":{"kty":"OKP"}}`, claimsJSON("")), atSec, ErrTokenHeader},
		{"cty", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"EdDSA","typ":"JWT","cty":"JWT"}`, claimsJSON("")), atSec, ErrTokenHeader},
		{"duplicate alg", TokenPolicy{Key: pub}, rawToken(priv, `{"alg":"none","alg":"EdDSA","typ":"JWT"}`, claimsJSON("")), atSec, ErrTokenMalformed},
		{"duplicate claim", TokenPolicy{Key: pub}, rawToken(priv, hdr, claimsJSON(`,"sub":"mallory"`)), atSec, ErrTokenMalformed},
		{"header not an object", TokenPolicy{Key: pub}, rawToken(priv, `["EdDSA"]`, claimsJSON("")), atSec, ErrTokenMalformed},
		{"data after header", TokenPolicy{Key: pub}, rawToken(priv, hdr+`{}`, claimsJSON("")), atSec, ErrTokenMalformed},
		{"invalid UTF-8 claims", TokenPolicy{Key: pub}, rawToken(priv, hdr, claimsJSON(`,"x":"`+"\xff"+`"`)), atSec, ErrTokenMalformed},
		{"iat as RFC 3339", TokenPolicy{Key: pub}, rawToken(priv, hdr, `{"iss":"ferry-agent","sub":"alice","aud":"ferry-cloud","role":"user","iat":"2026-03-04T05:06:07Z","exp":1893456000}`), atSec, ErrTokenMalformed},
		{"negative exp", TokenPolicy{Key: pub}, rawToken(priv, hdr, claimsJSON(`,"nbf":-1`)), atSec, ErrTokenMalformed},
		{"wrong audience", TokenPolicy{Key: pub}, sign(priv, with(func(c *Claims) { c.Audience = Audience{"ferry-admin"} })), atSec, ErrTokenAudience},
		{"missing audience", TokenPolicy{Key: pub}, rawToken(priv, hdr, `{"iss":"ferry-agent","sub":"alice","role":"user","iat":1772600767,"exp":1772604367}`), atSec, ErrTokenAudience},
		{"audience of another policy", TokenPolicy{Key: pub, Audience: "ferry-admin"}, tok, atSec, ErrTokenAudience},
		{"wrong issuer", TokenPolicy{Key: pub}, sign(priv, with(func(c *Claims) { c.Issuer = "someone-else" })), atSec, ErrTokenIssuer},
		{"missing issuer", TokenPolicy{Key: pub}, rawToken(priv, hdr, `{"sub":"alice","aud":"ferry-cloud","role":"user","iat":1772600767,"exp":1772604367}`), atSec, ErrTokenIssuer},
		{"unknown role", TokenPolicy{Key: pub}, rawToken(priv, hdr, `{"iss":"ferry-agent","sub":"alice","aud":"ferry-cloud","role":"root","iat":1772600767,"exp":1772604367}`), atSec, ErrTokenClaims},
		{"no expiry", TokenPolicy{Key: pub}, rawToken(priv, hdr, `{"iss":"ferry-agent","sub":"alice","aud":"ferry-cloud","role":"user","iat":1772600767}`), atSec, ErrTokenClaims},
		{"issued in the future", TokenPolicy{Key: pub}, tok, atSec.Add(-MaxClockSkew - time.Second), ErrTokenIssuedLater},
		{"issued within the skew", TokenPolicy{Key: pub}, tok, atSec.Add(-MaxClockSkew), nil},
		{"not yet valid", TokenPolicy{Key: pub}, sign(priv, with(func(c *Claims) { c.NotBefore = atSec.Add(30 * time.Minute) })), atSec.Add(time.Minute), ErrTokenNotYetValid},
		{"nbf within a custom skew", TokenPolicy{Key: pub, ClockSkew: 40 * time.Minute}, sign(priv, with(func(c *Claims) { c.NotBefore = atSec.Add(30 * time.Minute) })), atSec.Add(time.Minute), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.pol.Verify(tc.token, tc.now)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
			if err != nil && !errors.Is(err, ErrTokenExpired) && !errors.Is(err, ErrBadToken) {
				t.Errorf("%v is not ErrBadToken", err)
			}
			if err != nil && len(CloseReason{Reason: err.Error()}.String()) > maxCloseReason {
				t.Errorf("reason %q does not fit a close frame", err)
			}
		})
	}
}

// flipLastBit changes the last base64url character to its neighbour in the
// alphabet: for a 64-byte signature that sets one of the unused low bits.
func flipLastBit(tok string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, tok[len(tok)-1])
	return tok[:len(tok)-1] + string(alphabet[i^1])
}

func TestTokenPolicyValidate(t *testing.T) {
	pub, _ := testKey(t)
	if err := (TokenPolicy{Key: pub}).Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	for name, p := range map[string]TokenPolicy{
		"no key":        {},
		"HS256 allowed": {Key: pub, Algorithms: []string{AlgEdDSA, "HS256"}},
		"none allowed":  {Key: pub, Algorithms: []string{"none"}},
		"empty list":    {Key: pub, Algorithms: []string{}},
		"bad issuer":    {Key: pub, Issuer: " x"},
		"bad audience":  {Key: pub, Audience: "a\nb"},
		"negative skew": {Key: pub, ClockSkew: -time.Second},
	} {
		if err := p.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, p)
		}
	}
}

func TestAudienceJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Audience
		ok   bool
	}{
		{`"a"`, Audience{"a"}, true},
		{`["a","b"]`, Audience{"a", "b"}, true},
		{`[]`, Audience{}, true},
		{`null`, nil, false},
		{`["a",null]`, nil, false},
		{`5`, nil, false},
	} {
		var a Audience
		err := a.UnmarshalJSON([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && !cmp.Equal(a, tc.want)) {
			t.Errorf("%s: %v, %v", tc.in, a, err)
		}
	}
}

func TestSignTokenRefusesBadClaims(t *testing.T) {
	_, priv := testKey(t)
	for name, f := range map[string]func(*Claims){
		"no subject":     func(c *Claims) { c.Subject = "" },
		"unknown role":   func(c *Claims) { c.Role = "root" },
		"no expiry":      func(c *Claims) { c.ExpiresAt = time.Time{} },
		"no issuer":      func(c *Claims) { c.Issuer = "" },
		"no audience":    func(c *Claims) { c.Audience = nil },
		"empty audience": func(c *Claims) { c.Audience = Audience{""} },
		"no iat":         func(c *Claims) { c.IssuedAt = time.Time{} },
		"nbf after exp":  func(c *Claims) { c.NotBefore = c.ExpiresAt },
	} {
		c := testClaims()
		f(&c)
		if _, err := SignToken(priv, c); err == nil {
			t.Errorf("%s: SignToken(%+v) succeeded", name, c)
		}
	}
}
