package legacywire

import (
	"crypto/ed25519"
	"errors"
	"strconv"
	"testing"
	"time"
)

// TestCertCacheAgreesWithVerify checks that a cache primed with the valid
// certificate answers every case as Verify does, both the first time and
// again: a tampered certificate is not taken for the one it was made from,
// and the peer and expiry are checked on every use.
func TestCertCacheAgreesWithVerify(t *testing.T) {
	signed, pub, now, tests := verifyCases(t)
	for _, cache := range []*CertCache{NewCertCache(0), nil} {
		if err := cache.Verify(signed, pub, signed.PeerID, now); err != nil {
			t.Fatalf("priming: %v", err)
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				for round := range 2 {
					err := cache.Verify(tt.cert, tt.authority, tt.peer, tt.now)
					plain := tt.cert.Verify(tt.authority, tt.peer, tt.now)
					switch {
					case tt.want == nil && err != nil:
						t.Fatalf("round %d: Verify = %v, want nil", round, err)
					case tt.want != nil && !errors.Is(err, tt.want):
						t.Fatalf("round %d: Verify = %v, want %v", round, err, tt.want)
					case (err == nil) != (plain == nil) || (err != nil && err.Error() != plain.Error()):
						t.Fatalf("round %d: cached %v, Certificate.Verify %v", round, err, plain)
					}
				}
			})
		}
	}
}

// TestCertCacheBounded checks that the cache never holds more than its size
// and keeps verifying correctly after it was cleared.
func TestCertCacheBounded(t *testing.T) {
	authority := testKey(t, 1)
	pub := authority.Public().(ed25519.PublicKey)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cache := NewCertCache(4)
	for i := range 10 {
		c := SignCertificate(authority, Certificate{PeerID: "peer" + strconv.Itoa(i), User: "u" + strconv.Itoa(i), NotAfter: now.Add(time.Hour)})
		for range 2 {
			if err := cache.Verify(c, pub, c.PeerID, now); err != nil {
				t.Fatalf("certificate %d: %v", i, err)
			}
		}
		if n := cache.Len(); n > 4 || n < 1 {
			t.Fatalf("after %d certificates the cache holds %d, want 1..4", i+1, n)
		}
	}
}

// BenchmarkCertVerify compares a certificate's plain verification with a
// cache hit: the cost a chat hello or a directory request pays for its
// certificate.
func BenchmarkCertVerify(b *testing.B) {
	authority := testKey(b, 1)
	pub := authority.Public().(ed25519.PublicKey)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := SignCertificate(authority, Certificate{PeerID: "12D3KooWpeerA", User: "alice", Platform: "desktop",
		ClientVersion: "7.1.0", Capabilities: []string{"chat1"}, NotAfter: now.Add(time.Hour)})
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if err := c.Verify(pub, c.PeerID, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		cache := NewCertCache(0)
		for b.Loop() {
			if err := cache.Verify(c, pub, c.PeerID, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}
