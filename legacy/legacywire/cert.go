package legacywire

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"
)

// Certificate binds a device (a libp2p peer ID, as its string form) to a user,
// platform and client version until NotAfter. The network authority signs it;
// every stream on the overlay checks the certificate of the remote peer, so a
// peer can never speak for a user it is not certified for.
type Certificate struct {
	PeerID        string    `json:"peer_id"`
	User          string    `json:"user"`
	Platform      string    `json:"platform"`
	ClientVersion string    `json:"client_version"`
	Capabilities  []string  `json:"capabilities,omitempty"`
	NotAfter      time.Time `json:"not_after"`
	Signature     []byte    `json:"sig,omitempty"`
}

// SignCertificate returns c with NotAfter normalized (UTC, milliseconds) and
// Signature set by key over c's canonical signing bytes. The signature is
// deterministic: signing the same certificate twice gives the same bytes.
func SignCertificate(key ed25519.PrivateKey, c Certificate) Certificate {
	c.NotAfter = canonicalTime(c.NotAfter)
	c.Capabilities = slices.Clone(c.Capabilities)
	c.Signature = ed25519.Sign(key, c.signingBytes())
	return c
}

func (c Certificate) signingBytes() []byte {
	s := newSigner(certDomain)
	s.str(c.PeerID)
	s.str(c.User)
	s.str(c.Platform)
	s.str(c.ClientVersion)
	s.strs(c.Capabilities)
	s.time(c.NotAfter)
	return s.b
}

// Verify checks, in this order, that the certificate is signed by authority
// (ErrBadSignature), that it names peerID, the string form of the peer
// presenting it (ErrPeerMismatch), and that it has not expired at now
// (ErrExpired).
func (c Certificate) Verify(authority ed25519.PublicKey, peerID string, now time.Time) error {
	if len(authority) != ed25519.PublicKeySize || len(c.Signature) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	if !ed25519.Verify(authority, c.signingBytes(), c.Signature) {
		return ErrBadSignature
	}
	return c.checkUse(peerID, now)
}

// checkUse is what Verify checks after the signature: the certificate names
// peerID and has not expired at now.
func (c Certificate) checkUse(peerID string, now time.Time) error {
	if c.PeerID != peerID {
		return fmt.Errorf("%w: certificate for %q presented by %q", ErrPeerMismatch, c.PeerID, peerID)
	}
	if !now.Before(c.NotAfter) {
		return fmt.Errorf("%w: certificate not after %s", ErrExpired, c.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// Has reports whether the certificate grants capability.
func (c Certificate) Has(capability string) bool {
	return slices.Contains(c.Capabilities, capability)
}
