package legacywire

import (
	"crypto/ed25519"
	"time"
)

// Revocation withdraws one device certificate before its NotAfter: the
// authority signs it, supernodes learn it through OpRevoke and hand it out
// through OpRevocations, and every handler that checks certificates refuses
// the revoked peer (CodeRevoked). NotAfter is the revoked certificate's own
// NotAfter: after it the certificate is dead anyway and the revocation may be
// forgotten, which keeps revocation lists bounded.
type Revocation struct {
	PeerID    string    `json:"peer_id"`
	User      string    `json:"user"`
	Reason    string    `json:"reason,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	NotAfter  time.Time `json:"not_after"`
	Signature []byte    `json:"sig,omitempty"`
}

// SignRevocation returns r with its times normalized (UTC, milliseconds) and
// Signature set by key over r's canonical signing bytes.
func SignRevocation(key ed25519.PrivateKey, r Revocation) Revocation {
	r.RevokedAt = canonicalTime(r.RevokedAt)
	r.NotAfter = canonicalTime(r.NotAfter)
	r.Signature = ed25519.Sign(key, r.signingBytes())
	return r
}

func (r Revocation) signingBytes() []byte {
	s := newSigner(revokeDomain)
	s.str(r.PeerID)
	s.str(r.User)
	s.str(r.Reason)
	s.time(r.RevokedAt)
	s.time(r.NotAfter)
	return s.b
}

// Verify checks that the revocation is signed by authority
// (ErrBadSignature). A revocation never expires as an error: see Needed.
func (r Revocation) Verify(authority ed25519.PublicKey) error {
	if len(authority) != ed25519.PublicKeySize || len(r.Signature) != ed25519.SignatureSize || r.PeerID == "" {
		return ErrBadSignature
	}
	if !ed25519.Verify(authority, r.signingBytes(), r.Signature) {
		return ErrBadSignature
	}
	return nil
}

// Needed reports whether the revocation still matters at now: the revoked
// certificate has not expired on its own yet.
func (r Revocation) Needed(now time.Time) bool { return now.Before(r.NotAfter) }
