package cloudwire

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// tokenDomain separates token signatures from any other use of the key.
const tokenDomain = "ferry-token-v1\n"

// MaxClockSkew is how far in the future a token's IssuedAt may lie.
const MaxClockSkew = 5 * time.Minute

// Claims are what a session token asserts. Tokens are issued by the agent
// and signed with its Ed25519 key.
type Claims struct {
	// Subject is the user id (role user) or the bridge's identity.
	Subject   string    `json:"sub"`
	Role      string    `json:"role"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
}

// MarshalJSON writes the times with millisecond precision.
func (c Claims) MarshalJSON() ([]byte, error) {
	type plain Claims
	return json.Marshal(struct {
		plain
		IssuedAt  string `json:"iat"`
		ExpiresAt string `json:"exp"`
	}{plain(c), FormatTime(c.IssuedAt), FormatTime(c.ExpiresAt)})
}

// Validate checks the claims' fields (not the times against a clock).
func (c Claims) Validate() error {
	if !ValidID(c.Subject) {
		return errors.New("subject is not a valid id")
	}
	if !ValidRole(c.Role) {
		return fmt.Errorf("unknown role %q", c.Role)
	}
	if c.ExpiresAt.IsZero() {
		return errors.New("no expiry")
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return errors.New("expires before it is issued")
	}
	return nil
}

// b64 is strict so that a token has exactly one encoding (no malleable
// trailing bits).
var b64 = base64.RawURLEncoding.Strict()

// SignToken returns the compact token for c: base64url(JSON claims) "."
// base64url(signature), where the signature covers a domain-separation
// prefix and the encoded claims.
func SignToken(key ed25519.PrivateKey, c Claims) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("cloudwire: sign token: bad private key size")
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("cloudwire: sign token: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("cloudwire: sign token: %w", err)
	}
	payload := b64.EncodeToString(body)
	sig := ed25519.Sign(key, signingBytes(payload))
	tok := payload + "." + b64.EncodeToString(sig)
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("cloudwire: sign token: %d bytes, limit %d", len(tok), MaxTokenSize)
	}
	return tok, nil
}

// VerifyToken checks token's signature with pub and its claims at now. It
// returns ErrTokenExpired for a well-signed token at or past its expiry and
// ErrBadToken (wrapped, with the reason) for anything else wrong.
func VerifyToken(pub ed25519.PublicKey, token string, now time.Time) (Claims, error) {
	bad := func(why string) (Claims, error) {
		return Claims{}, fmt.Errorf("%w: %s", ErrBadToken, why)
	}
	if len(pub) != ed25519.PublicKeySize {
		return bad("no valid verification key")
	}
	if token == "" {
		return bad("empty")
	}
	if len(token) > MaxTokenSize {
		return bad("too long")
	}
	payload, sigText, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(sigText, ".") {
		return bad("not two dot-separated parts")
	}
	sig, err := b64.DecodeString(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return bad("malformed signature")
	}
	if !ed25519.Verify(pub, signingBytes(payload), sig) {
		return bad("signature does not verify")
	}
	body, err := b64.DecodeString(payload)
	if err != nil {
		return bad("malformed claims encoding")
	}
	var c Claims
	if err := json.Unmarshal(body, &c); err != nil {
		return bad("malformed claims")
	}
	if err := c.Validate(); err != nil {
		return bad(err.Error())
	}
	if c.IssuedAt.After(now.Add(MaxClockSkew)) {
		return bad("issued in the future")
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, fmt.Errorf("%w at %s", ErrTokenExpired, FormatTime(c.ExpiresAt))
	}
	return c, nil
}

func signingBytes(payload string) []byte {
	b := make([]byte, 0, len(tokenDomain)+len(payload))
	b = append(b, tokenDomain...)
	return append(b, payload...)
}
