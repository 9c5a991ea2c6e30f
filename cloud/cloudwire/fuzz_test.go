package cloudwire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(bytes.TrimSpace(b))
		}
	}
	f.Add([]byte(`{"type":"send","to":"\ud800","msg_id":"m","text":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			if fr != nil {
				t.Fatalf("frame and error: %v, %v", fr, err)
			}
			return
		}
		// A decoded frame re-encodes, and the encoding decodes to a frame
		// that encodes to the same bytes.
		enc, err := Encode(fr)
		if err != nil {
			return // e.g. escaping grew it over MaxFrameSize
		}
		fr2, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-decode %s: %v", enc, err)
		}
		enc2, err := Encode(fr2)
		if err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("unstable encoding:\n%s\n%s (%v)", enc, enc2, err)
		}
	})
}

// FuzzVerifyToken: no input crashes the token parser, and the only token
// accepted is the one signed (no malleable encoding, no forgery).
func FuzzVerifyToken(f *testing.F) {
	pub, priv := testKey(f)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tok, err := SignToken(priv, Claims{Issuer: DefaultIssuer, Subject: "alice", Audience: Audience{DefaultAudience}, Role: RoleBridge, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tok)
	f.Add("")
	f.Add("a.b")
	f.Add(tok[:len(tok)-2] + "AA")
	f.Add(rawToken(nil, `{"alg":"none","typ":"JWT"}`, `{"sub":"alice"}`))
	f.Add(rawToken(priv, `{"alg":"EdDSA","typ":"JWT","crit":["b64"]}`, `{"aud":["ferry-cloud","x"],"iat":1.5e9}`))
	files, _ := filepath.Glob(filepath.Join("testdata", "token_*.txt"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(string(bytes.TrimSpace(b)))
		}
	}
	pol := TokenPolicy{Key: pub}
	f.Fuzz(func(t *testing.T, token string) {
		c, err := pol.Verify(token, now)
		if err != nil {
			if !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrTokenExpired) {
				t.Fatalf("error %v is neither ErrBadToken nor ErrTokenExpired", err)
			}
			return
		}
		if token != tok {
			// Any other accepted token would be a forgery (or a
			// malleable encoding of the same signature).
			t.Fatalf("accepted %q as %+v", token, c)
		}
	})
}

func FuzzCloseReason(f *testing.F) {
	f.Add(`{"reason":"server going away","retry_ms":1234}`)
	f.Add(CloseReason{Reason: string(bytes.Repeat([]byte("\u2028"), 60)), RetryMS: 1}.String())
	f.Add("going away")
	f.Add(`{"reason":"\ud800"}`)
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		c, ok := ParseCloseReason(text)
		if !ok {
			if c.Reason != text {
				t.Fatalf("unparsed reason %q, want the raw text %q", c.Reason, text)
			}
			return
		}
		s := c.String()
		if len(s) > maxCloseReason {
			t.Fatalf("String() is %d bytes, over %d: %q", len(s), maxCloseReason, s)
		}
		if s == "" {
			return
		}
		back, ok := ParseCloseReason(s)
		if !ok || back.RetryMS != c.RetryMS {
			t.Fatalf("ParseCloseReason(%q) = %+v, %v; want retry_ms %d", s, back, ok, c.RetryMS)
		}
	})
}
