package legacywire

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"time"
)

// RouteRecord tells the directory that messages for User go to PeerID (a
// bridge) at Addrs. The authority signs it, and a live route wins over the
// user's own devices: it is how a user who moved to the cloud stays reachable
// from the overlay. Records are ordered by Seq; a withdrawn record with a
// higher Seq removes the route.
//
// Kind RouteMirror makes it a shadow route instead (shadow.go): the bridge
// is an additional mirror target of a user whose home is still the
// overlay. A supernode keeps one record of each kind per user, each ordered
// by its own Seq, and a mirror never displaces the user's devices.
type RouteRecord struct {
	User      string    `json:"user"`
	PeerID    string    `json:"peer_id"`
	Addrs     []string  `json:"addrs"`
	Seq       uint64    `json:"seq"`
	NotAfter  time.Time `json:"not_after"`
	Withdrawn bool      `json:"withdrawn,omitempty"`
	// Kind is RouteHome (empty) or RouteMirror.
	Kind      string `json:"kind,omitempty"`
	Signature []byte `json:"sig,omitempty"`
}

// SignRoute returns r with NotAfter normalized (UTC, milliseconds) and
// Signature set by key over r's canonical signing bytes.
func SignRoute(key ed25519.PrivateKey, r RouteRecord) RouteRecord {
	r.NotAfter = canonicalTime(r.NotAfter)
	r.Addrs = slices.Clone(r.Addrs)
	r.Signature = ed25519.Sign(key, r.signingBytes())
	return r
}

func (r RouteRecord) signingBytes() []byte {
	s := newSigner(routeDomain)
	s.str(r.User)
	s.str(r.PeerID)
	s.strs(r.Addrs)
	s.u64(r.Seq)
	s.time(r.NotAfter)
	s.bool(r.Withdrawn)
	if r.Kind != RouteHome {
		// Signed only when set, so that home routes keep their bytes of
		// protocol version 1; a signature never survives adding or
		// removing the kind.
		s.str(r.Kind)
	}
	return s.b
}

// Verify checks that the record is signed by authority (ErrBadSignature) and
// has not expired at now (ErrExpired).
func (r RouteRecord) Verify(authority ed25519.PublicKey, now time.Time) error {
	if len(authority) != ed25519.PublicKeySize || len(r.Signature) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	if !ed25519.Verify(authority, r.signingBytes(), r.Signature) {
		return ErrBadSignature
	}
	if !now.Before(r.NotAfter) {
		return fmt.Errorf("%w: route not after %s", ErrExpired, r.NotAfter.Format(time.RFC3339))
	}
	return nil
}

// Live reports whether the record routes traffic at now: not withdrawn and
// not expired. It does not check the signature.
func (r RouteRecord) Live(now time.Time) bool {
	return !r.Withdrawn && now.Before(r.NotAfter)
}
