package legacywire

import (
	"crypto/ed25519"
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultCertCacheSize bounds a CertCache made with size 0.
const DefaultCertCacheSize = 16384

// CertCache remembers certificates whose signature has verified, so that a
// peer presenting the same certificate again (every chat stream opens with
// its hello, every directory request carries it) costs a hash instead of an
// ed25519 verification, the largest cost of a stream's set-up. Only the
// signature check is skipped: whether the certificate names the presenting
// peer and is still live is checked on every use, exactly as by Verify. An
// entry is keyed by the SHA-256 of the authority key, the signed bytes and
// the signature, so a certificate changed in any signed field, or checked
// against another authority, is verified afresh. The cache is bounded: when
// full it is cleared, and the next certificates verify again. A nil
// *CertCache verifies every time. Safe for concurrent use.
type CertCache struct {
	max int

	mu   sync.Mutex
	seen map[[sha256.Size]byte]struct{}
}

// NewCertCache returns a cache of at most size certificates (0 means
// DefaultCertCacheSize). It grows with what it is given: a cache that sees
// few certificates holds few.
func NewCertCache(size int) *CertCache {
	if size <= 0 {
		size = DefaultCertCacheSize
	}
	return &CertCache{max: size}
}

// Verify is c.Verify(authority, peerID, now), with the signature check
// skipped for a certificate already verified against authority.
func (cc *CertCache) Verify(c Certificate, authority ed25519.PublicKey, peerID string, now time.Time) error {
	if cc == nil || len(authority) != ed25519.PublicKeySize || len(c.Signature) != ed25519.SignatureSize {
		return c.Verify(authority, peerID, now)
	}
	key := cc.key(c, authority)
	cc.mu.Lock()
	_, ok := cc.seen[key]
	cc.mu.Unlock()
	if !ok {
		if err := c.Verify(authority, peerID, now); err != nil {
			return err // a bad signature is never remembered, nor a good one on a bad use
		}
		cc.add(key)
		return nil
	}
	return c.checkUse(peerID, now)
}

// Len returns how many certificates the cache holds.
func (cc *CertCache) Len() int {
	if cc == nil {
		return 0
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return len(cc.seen)
}

func (cc *CertCache) key(c Certificate, authority ed25519.PublicKey) [sha256.Size]byte {
	h := sha256.New()
	h.Write(authority)
	h.Write(c.Signature)
	h.Write(c.signingBytes())
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (cc *CertCache) add(key [sha256.Size]byte) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.seen == nil || len(cc.seen) >= cc.max {
		cc.seen = make(map[[sha256.Size]byte]struct{})
	}
	cc.seen[key] = struct{}{}
}
