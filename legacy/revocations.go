package legacy

import (
	"cmp"
	"crypto/ed25519"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// MaxRevocations bounds a Revocations list. Revocations are forgotten when
// the revoked certificate expires, so the list only holds certificates that
// are still within their lifetime.
const MaxRevocations = 100_000

// Revocations is a set of authority-signed certificate revocations, keyed by
// the revoked peer ID. A supernode keeps one and serves it (OpRevocations); a
// device or bridge keeps one, filled from its supernode, and its chat handler
// refuses revoked peers. It is safe for concurrent use.
type Revocations struct {
	authority ed25519.PublicKey
	mu        sync.RWMutex
	m         map[string]legacywire.Revocation
}

// NewRevocations returns an empty list that accepts revocations signed by
// authority.
func NewRevocations(authority ed25519.PublicKey) *Revocations {
	return &Revocations{authority: authority, m: make(map[string]legacywire.Revocation)}
}

// Add verifies r against the authority and stores it. It reports whether r
// was new, or replaced the peer's revocation because it lasts longer (a
// renewal). A revocation whose certificate has already expired is verified
// and ignored.
func (l *Revocations) Add(r legacywire.Revocation, now time.Time) (bool, error) {
	if err := r.Verify(l.authority); err != nil {
		return false, fmt.Errorf("revocation of %s: %w", r.PeerID, err)
	}
	if !r.Needed(now) {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if held, ok := l.m[r.PeerID]; ok {
		if !r.NotAfter.After(held.NotAfter) {
			return false, nil
		}
		l.m[r.PeerID] = r // a renewal: no new entry, nothing to bound
		return true, nil
	}
	if len(l.m) >= MaxRevocations {
		l.sweepLocked(now)
		if len(l.m) >= MaxRevocations {
			return false, fmt.Errorf("%w: revocation list full (%d)", ErrInvalidConfig, MaxRevocations)
		}
	}
	l.m[r.PeerID] = r
	return true, nil
}

// Revoked reports whether the certificate of peerID has been revoked. A nil
// list revokes nothing.
func (l *Revocations) Revoked(peerID string) bool {
	if l == nil {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	_, ok := l.m[peerID]
	return ok
}

// List returns the revocations still needed at now, sorted by peer ID, and
// forgets the others.
func (l *Revocations) List(now time.Time) []legacywire.Revocation {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	out := make([]legacywire.Revocation, 0, len(l.m))
	for _, r := range l.m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b legacywire.Revocation) int { return cmp.Compare(a.PeerID, b.PeerID) })
	return out
}

// Len returns the number of revocations held.
func (l *Revocations) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.m)
}

func (l *Revocations) sweepLocked(now time.Time) {
	for id, r := range l.m {
		if !r.Needed(now) {
			delete(l.m, id)
		}
	}
}

// verifyPeerCert checks cert against the authority, the presenting peer and
// the revocation list, in that order. It returns the refusal code and error,
// or "" and nil. certs, when not nil, spares the signature check of a
// certificate it has verified before (the handler's own cache).
func verifyPeerCert(certs *legacywire.CertCache, cert legacywire.Certificate, authority ed25519.PublicKey, peerID string, now time.Time, revoked *Revocations) (string, error) {
	if err := certs.Verify(cert, authority, peerID, now); err != nil {
		return legacywire.CertCode(err), err
	}
	if revoked.Revoked(cert.PeerID) {
		return legacywire.CodeRevoked, fmt.Errorf("%w: certificate of %s", ErrRevoked, cert.PeerID)
	}
	return "", nil
}
