package cloudwire

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Session tokens are JSON Web Tokens (RFC 7519) in JWS compact
// serialization (RFC 7515), signed with Ed25519 (alg "EdDSA", RFC 8037):
//
//	base64url(header) "." base64url(claims) "." base64url(signature)
//
// where the signature covers the ASCII text "header.claims" exactly as it
// stands in the token. The agent signs them (SignToken); every verifier
// checks them against a TokenPolicy: the algorithm in the header against an
// allowed list before any key is used, the signature, the issuer, the
// audience and the times. What used to be the key's domain separation (a
// "ferry-token-v1\n" prefix under the signature) is now the header's typ
// "JWT" together with iss and aud: a token for another purpose or another
// service names another audience and is refused.

// Token algorithms, issuer and audiences.
const (
	// AlgEdDSA is the only algorithm tokens are signed and verified with.
	AlgEdDSA = "EdDSA"
	// DefaultIssuer is the iss of tokens the agent issues unless configured
	// otherwise.
	DefaultIssuer = "ferry-agent"
	// DefaultAudience is the aud the cloud service expects unless
	// configured otherwise; user and bridge tokens carry it.
	DefaultAudience = "ferry-cloud"
)

// MaxClockSkew is the default TokenPolicy.ClockSkew: how far in the future
// a token's iat and nbf may lie, for verifiers whose clock runs behind the
// issuer's.
const MaxClockSkew = 5 * time.Minute

// maxNumericDate is 9999-12-31T23:59:59Z: later NumericDates are refused.
const maxNumericDate = 253402300799

// maxAudiences bounds the aud array.
const maxAudiences = 16

// tokenHeader is the base64url of the only header SignToken writes.
var tokenHeader = b64.EncodeToString([]byte(`{"alg":"EdDSA","typ":"JWT"}`))

// Reasons a token is refused, each wrapping ErrBadToken (errors.Is works for
// both); TokenPolicy.Verify returns them wrapped with the detail. An expired
// token is ErrTokenExpired instead.
var (
	// ErrTokenMalformed: empty, too long, a character outside base64url,
	// not three parts, bad base64url, JSON that is not one object, invalid
	// UTF-8 or a duplicate member.
	ErrTokenMalformed = fmt.Errorf("%w: malformed", ErrBadToken)
	// ErrTokenAlgorithm: the header's alg is missing or not allowed by the
	// policy ("none", HS256, RS256, ES256, ...). Checked before any key is
	// used.
	ErrTokenAlgorithm = fmt.Errorf("%w: algorithm not allowed", ErrBadToken)
	// ErrTokenHeader: the header's typ is not JWT, or it carries crit, cty
	// or a key (jwk, jku, x5u, x5c, x5t) that the verifier will not use.
	ErrTokenHeader = fmt.Errorf("%w: unsupported header", ErrBadToken)
	// ErrTokenSignature: the signature does not verify with the policy's key.
	ErrTokenSignature = fmt.Errorf("%w: bad signature", ErrBadToken)
	// ErrTokenIssuer: iss is missing or not the policy's issuer.
	ErrTokenIssuer = fmt.Errorf("%w: wrong issuer", ErrBadToken)
	// ErrTokenAudience: aud is missing or does not name the policy's
	// audience.
	ErrTokenAudience = fmt.Errorf("%w: wrong audience", ErrBadToken)
	// ErrTokenClaims: a claim is missing or invalid (sub, role, iat, exp).
	ErrTokenClaims = fmt.Errorf("%w: invalid claims", ErrBadToken)
	// ErrTokenIssuedLater: iat lies further in the future than the clock
	// skew allows.
	ErrTokenIssuedLater = fmt.Errorf("%w: issued in the future", ErrBadToken)
	// ErrTokenNotYetValid: nbf lies further in the future than the clock
	// skew allows.
	ErrTokenNotYetValid = fmt.Errorf("%w: not valid yet", ErrBadToken)
)

// Audience is the aud claim: a string or an array of strings in JSON
// (RFC 7519 §4.1.3). One audience is written as a string.
type Audience []string

// MarshalJSON writes one audience as a string and several as an array.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or an array of strings.
func (a *Audience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Audience{s}
		return nil
	case len(b) > 0 && b[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(b, &raw); err != nil {
			return err
		}
		out := make(Audience, 0, len(raw))
		for _, r := range raw {
			if len(r) == 0 || r[0] != '"' {
				return errors.New("aud: not an array of strings")
			}
			var s string
			if err := json.Unmarshal(r, &s); err != nil {
				return err
			}
			out = append(out, s)
		}
		*a = out
		return nil
	}
	return errors.New("aud: not a string or an array of strings")
}

// Claims are what a session token asserts. Times are JWT NumericDates
// (whole seconds since the epoch) on the wire.
type Claims struct {
	// Issuer is iss: who signed the token (the agent, DefaultIssuer).
	Issuer string `json:"iss"`
	// Subject is the user id (role user) or the bridge's identity.
	Subject string `json:"sub"`
	// Audience is aud: the services the token is for.
	Audience Audience `json:"aud"`
	Role     string   `json:"role"`
	// IssuedAt is iat; it must be set.
	IssuedAt time.Time `json:"iat"`
	// NotBefore is nbf; zero means none.
	NotBefore time.Time `json:"nbf,omitzero"`
	// ExpiresAt is exp; it must be set and after IssuedAt.
	ExpiresAt time.Time `json:"exp"`
}

// MarshalJSON writes the claims in a fixed member order with the times as
// NumericDates.
func (c Claims) MarshalJSON() ([]byte, error) {
	var nbf int64
	if !c.NotBefore.IsZero() {
		nbf = c.NotBefore.Unix()
	}
	return json.Marshal(struct {
		Issuer    string   `json:"iss"`
		Subject   string   `json:"sub"`
		Audience  Audience `json:"aud"`
		Role      string   `json:"role"`
		IssuedAt  int64    `json:"iat"`
		NotBefore int64    `json:"nbf,omitempty"`
		ExpiresAt int64    `json:"exp"`
	}{c.Issuer, c.Subject, c.Audience, c.Role, c.IssuedAt.Unix(), nbf, c.ExpiresAt.Unix()})
}

// UnmarshalJSON reads claims as TokenPolicy.Verify does: one JSON object
// without duplicate members, NumericDate times, aud a string or an array.
// Unknown claims are ignored.
func (c *Claims) UnmarshalJSON(b []byte) error {
	parsed, err := parseClaims(b)
	if err != nil {
		return err
	}
	*c = parsed
	return nil
}

// Validate checks the claims' fields (not the times against a clock).
func (c Claims) Validate() error {
	if c.Issuer == "" {
		return errors.New("no issuer")
	}
	if !ValidID(c.Issuer) {
		return errors.New("issuer is not a valid id")
	}
	if len(c.Audience) == 0 {
		return errors.New("no audience")
	}
	if len(c.Audience) > maxAudiences {
		return fmt.Errorf("more than %d audiences", maxAudiences)
	}
	for _, a := range c.Audience {
		if !ValidID(a) {
			return errors.New("audience is not a valid id")
		}
	}
	if !ValidID(c.Subject) {
		return errors.New("subject is not a valid id")
	}
	if !ValidRole(c.Role) {
		return fmt.Errorf("unknown role %.32q", c.Role)
	}
	if c.IssuedAt.IsZero() {
		return errors.New("no iat")
	}
	if c.ExpiresAt.IsZero() {
		return errors.New("no expiry")
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return errors.New("expires before it is issued")
	}
	if !c.NotBefore.IsZero() && !c.ExpiresAt.After(c.NotBefore) {
		return errors.New("expires before it is valid")
	}
	return nil
}

// b64 is strict so that a token has exactly one encoding (no padding, no
// malleable trailing bits). It still skips CR and LF, which is why Verify
// refuses any character outside the base64url alphabet and "." first.
var b64 = base64.RawURLEncoding.Strict()

// SignToken returns the JWS compact serialization of c, signed with key
// (EdDSA). c must carry an issuer and an audience; its times are written in
// whole seconds.
func SignToken(key ed25519.PrivateKey, c Claims) (string, error) {
	if len(key) != ed25519.PrivateKeySize {
		return "", errors.New("cloudwire: sign token: bad private key size")
	}
	c.IssuedAt, c.NotBefore, c.ExpiresAt = c.IssuedAt.Truncate(time.Second), c.NotBefore.Truncate(time.Second), c.ExpiresAt.Truncate(time.Second)
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("cloudwire: sign token: %w", err)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("cloudwire: sign token: %w", err)
	}
	signed := tokenHeader + "." + b64.EncodeToString(body)
	tok := signed + "." + b64.EncodeToString(ed25519.Sign(key, []byte(signed)))
	if len(tok) > MaxTokenSize {
		return "", fmt.Errorf("cloudwire: sign token: %d bytes, limit %d", len(tok), MaxTokenSize)
	}
	return tok, nil
}

// TokenPolicy is what a verifier accepts. The zero value of every field but
// Key is a sane default; Issuer and Audience are always checked.
type TokenPolicy struct {
	// Key is the issuer's Ed25519 public key.
	Key ed25519.PublicKey
	// Algorithms are the header algs accepted; nil means only AlgEdDSA,
	// which is also the only one Validate allows in the list. Everything
	// else ("none", HS256, RS256, ES256, ...) is refused before the key is
	// used.
	Algorithms []string
	// Issuer is the iss required; "" means DefaultIssuer.
	Issuer string
	// Audience must be one of the token's aud; "" means DefaultAudience.
	Audience string
	// ClockSkew is how far in the future iat and nbf may lie; 0 means
	// MaxClockSkew. Expiry gets no grace: a verifier whose clock is ahead
	// sees tokens end early rather than live longer than issued.
	ClockSkew time.Duration
}

// Validate reports a policy Verify cannot check tokens with.
func (p TokenPolicy) Validate() error {
	var errs []error
	if len(p.Key) != ed25519.PublicKeySize {
		errs = append(errs, fmt.Errorf("key must be an Ed25519 public key (%d bytes), got %d", ed25519.PublicKeySize, len(p.Key)))
	}
	for _, a := range p.Algorithms {
		if a != AlgEdDSA {
			errs = append(errs, fmt.Errorf("algorithm %q not supported (only %s)", a, AlgEdDSA))
		}
	}
	if p.Algorithms != nil && len(p.Algorithms) == 0 {
		errs = append(errs, errors.New("empty algorithm list"))
	}
	if p.Issuer != "" && !ValidID(p.Issuer) {
		errs = append(errs, fmt.Errorf("issuer %q is not a valid id", p.Issuer))
	}
	if p.Audience != "" && !ValidID(p.Audience) {
		errs = append(errs, fmt.Errorf("audience %q is not a valid id", p.Audience))
	}
	if p.ClockSkew < 0 {
		errs = append(errs, errors.New("negative clock skew"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("token policy: %w", errors.Join(errs...))
	}
	return nil
}

// WithDefaults fills the zero fields.
func (p TokenPolicy) WithDefaults() TokenPolicy {
	if p.Algorithms == nil {
		p.Algorithms = []string{AlgEdDSA}
	}
	if p.Issuer == "" {
		p.Issuer = DefaultIssuer
	}
	if p.Audience == "" {
		p.Audience = DefaultAudience
	}
	if p.ClockSkew == 0 {
		p.ClockSkew = MaxClockSkew
	}
	return p
}

// Verify checks token against the policy at now and returns its claims. An
// expired but otherwise good token is ErrTokenExpired; anything else wrong
// is one of the ErrToken* reasons (all ErrBadToken), wrapped with a detail
// that never contains the token. The checks run in this order: shape and
// size, header (alg against the allowed list, then typ, crit, cty and
// embedded keys), signature, issuer, audience, the other claims, iat, nbf,
// exp; nothing from the claims is believed before the signature verifies.
func (p TokenPolicy) Verify(token string, now time.Time) (Claims, error) {
	p = p.WithDefaults()
	fail := func(reason error, format string, args ...any) (Claims, error) {
		return Claims{}, fmt.Errorf("%w: "+format, append([]any{reason}, args...)...)
	}
	switch {
	case token == "":
		return fail(ErrTokenMalformed, "empty")
	case len(token) > MaxTokenSize:
		return fail(ErrTokenMalformed, "over %d bytes", MaxTokenSize)
	case strings.IndexFunc(token, notTokenChar) >= 0:
		return fail(ErrTokenMalformed, "character outside base64url")
	}
	headerText, rest, ok := strings.Cut(token, ".")
	if !ok {
		return fail(ErrTokenMalformed, "not three dot-separated parts")
	}
	if err := p.checkHeader(headerText); err != nil {
		return Claims{}, err
	}
	payloadText, sigText, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(sigText, ".") {
		return fail(ErrTokenMalformed, "not three dot-separated parts")
	}
	if len(p.Key) != ed25519.PublicKeySize {
		return Claims{}, fmt.Errorf("%w: no valid verification key", ErrBadToken)
	}
	sig, err := b64.DecodeString(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fail(ErrTokenSignature, "not a %d-byte base64url signature", ed25519.SignatureSize)
	}
	if !ed25519.Verify(p.Key, []byte(token[:len(headerText)+1+len(payloadText)]), sig) {
		return fail(ErrTokenSignature, "does not verify")
	}
	body, err := b64.DecodeString(payloadText)
	if err != nil {
		return fail(ErrTokenMalformed, "claims are not base64url")
	}
	c, err := parseClaims(body)
	if err != nil {
		return fail(ErrTokenMalformed, "claims: %v", err)
	}
	switch {
	case c.Issuer == "":
		return fail(ErrTokenIssuer, "no iss")
	case c.Issuer != p.Issuer:
		return fail(ErrTokenIssuer, "iss %.64q, want %q", c.Issuer, p.Issuer)
	case len(c.Audience) == 0:
		return fail(ErrTokenAudience, "no aud")
	case !slices.Contains(c.Audience, p.Audience):
		return fail(ErrTokenAudience, "aud does not name %q", p.Audience)
	}
	if err := c.Validate(); err != nil {
		return fail(ErrTokenClaims, "%v", err)
	}
	if c.IssuedAt.After(now.Add(p.ClockSkew)) {
		return fail(ErrTokenIssuedLater, "iat %s", FormatTime(c.IssuedAt))
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(p.ClockSkew)) {
		return fail(ErrTokenNotYetValid, "nbf %s", FormatTime(c.NotBefore))
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, fmt.Errorf("%w at %s", ErrTokenExpired, FormatTime(c.ExpiresAt))
	}
	return c, nil
}

// checkHeader decodes the protected header and applies the policy to it.
func (p TokenPolicy) checkHeader(text string) error {
	b, err := b64.DecodeString(text)
	if err != nil {
		return fmt.Errorf("%w: header is not base64url", ErrTokenMalformed)
	}
	m, err := jsonObject(b)
	if err != nil {
		return fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	}
	alg, ok, err := stringMember(m, "alg")
	switch {
	case err != nil:
		return fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	case !ok:
		return fmt.Errorf("%w: no alg", ErrTokenAlgorithm)
	case !slices.Contains(p.Algorithms, alg) || alg != AlgEdDSA:
		return fmt.Errorf("%w: %.32q", ErrTokenAlgorithm, alg)
	}
	typ, ok, err := stringMember(m, "typ")
	if err != nil || !ok || !strings.EqualFold(typ, "JWT") {
		return fmt.Errorf("%w: typ must be JWT", ErrTokenHeader)
	}
	if _, ok := m["crit"]; ok {
		return fmt.Errorf("%w: crit names extensions this verifier does not implement", ErrTokenHeader)
	}
	if _, ok := m["cty"]; ok {
		return fmt.Errorf("%w: cty (nested tokens) not supported", ErrTokenHeader)
	}
	for _, k := range []string{"jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"} {
		if _, ok := m[k]; ok {
			return fmt.Errorf("%w: %s: keys come from configuration only", ErrTokenHeader, k)
		}
	}
	if _, _, err := stringMember(m, "kid"); err != nil {
		return fmt.Errorf("%w: header: %v", ErrTokenMalformed, err)
	}
	return nil
}

// parseClaims reads a claims object: known members by exact name (not the
// case-insensitive match of encoding/json, so that no two readers of one
// token disagree), unknown ones ignored.
func parseClaims(b []byte) (Claims, error) {
	m, err := jsonObject(b)
	if err != nil {
		return Claims{}, err
	}
	var c Claims
	for _, f := range []struct {
		name string
		dst  *string
	}{{"iss", &c.Issuer}, {"sub", &c.Subject}, {"role", &c.Role}} {
		if *f.dst, _, err = stringMember(m, f.name); err != nil {
			return Claims{}, err
		}
	}
	if raw, ok := m["aud"]; ok {
		if err := c.Audience.UnmarshalJSON(raw); err != nil {
			return Claims{}, err
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"iat", &c.IssuedAt}, {"nbf", &c.NotBefore}, {"exp", &c.ExpiresAt}} {
		raw, ok := m[f.name]
		if !ok {
			continue
		}
		if *f.dst, err = numericDate(raw); err != nil {
			return Claims{}, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return c, nil
}

// numericDate reads a JWT NumericDate: seconds since the epoch, a whole or
// fractional JSON number from 0 to the end of year 9999.
func numericDate(raw json.RawMessage) (time.Time, error) {
	s := string(raw)
	if s == "" || s[0] < '0' || s[0] > '9' {
		return time.Time{}, errors.New("not a non-negative number")
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > maxNumericDate {
			return time.Time{}, errors.New("out of range")
		}
		return time.Unix(n, 0).UTC(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return time.Time{}, errors.New("out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// stringMember returns m[name] as a string; ok is false when it is absent.
// A member that is present but not a JSON string is an error (encoding/json
// would read null into a string as "").
func stringMember(m map[string]json.RawMessage, name string) (s string, ok bool, err error) {
	raw, ok := m[name]
	if !ok {
		return "", false, nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", true, fmt.Errorf("%s is not a string", name)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", true, fmt.Errorf("%s: %w", name, err)
	}
	return s, true, nil
}

// jsonObject parses b as exactly one JSON object of valid UTF-8 and returns
// its members by name. A duplicate member name is refused: RFC 7515 §5.2
// lets a parser refuse or take the last one, and two parsers that choose
// differently are how a forged member slips past a check.
func jsonObject(b []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := make(map[string]json.RawMessage)
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("duplicate member %.32q", k)
		}
		m[k] = v
	}
	if t, err := d.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not a JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return m, nil
}

// notTokenChar reports a rune that cannot appear in a compact token.
func notTokenChar(r rune) bool {
	return !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
}
