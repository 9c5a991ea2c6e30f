package legacy

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Authority is the network authority (the old "login server"): an ed25519 key
// whose public half every device and supernode trusts. It signs device
// certificates and route records.
type Authority struct {
	key ed25519.PrivateKey
}

// GenerateAuthority returns an authority with a fresh random key.
func GenerateAuthority() (*Authority, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("legacy: generate authority key: %w", err)
	}
	return &Authority{key: key}, nil
}

// LoadOrCreateAuthority loads the authority key from path, a file holding the
// 32-byte ed25519 seed in hex. When the file does not exist it creates it
// (mode 0600, parent directories 0700) with a fresh seed. A file that exists
// but holds no valid seed is an error matching ErrBadKeyFile; it is never
// overwritten.
func LoadOrCreateAuthority(path string) (*Authority, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createAuthority(path)
	}
	if err != nil {
		return nil, fmt.Errorf("legacy: read authority key: %w", err)
	}
	return parseAuthority(path, data)
}

func createAuthority(path string) (*Authority, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("legacy: create authority key dir: %w", err)
	}
	a, err := GenerateAuthority()
	if err != nil {
		return nil, err
	}
	// O_EXCL: if another process created the file meanwhile, use theirs.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadOrCreateAuthority(path)
	}
	if err != nil {
		return nil, fmt.Errorf("legacy: create authority key: %w", err)
	}
	_, werr := f.WriteString(hex.EncodeToString(a.key.Seed()) + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return nil, fmt.Errorf("legacy: write authority key: %w", err)
	}
	return a, nil
}

func parseAuthority(path string, data []byte) (*Authority, error) {
	seed, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: %s: want %d hex-encoded bytes", ErrBadKeyFile, path, ed25519.SeedSize)
	}
	return &Authority{key: ed25519.NewKeyFromSeed(seed)}, nil
}

// PublicKey returns the key devices and supernodes verify against.
func (a *Authority) PublicKey() ed25519.PublicKey {
	return a.key.Public().(ed25519.PublicKey)
}

// Certify signs a certificate binding id to user, platform and client version
// for ttl from now, granting caps.
func (a *Authority) Certify(id peer.ID, user, platform, version string, caps []string, ttl time.Duration) (legacywire.Certificate, error) {
	if err := id.Validate(); err != nil {
		return legacywire.Certificate{}, fmt.Errorf("legacy: certify: peer id: %w", err)
	}
	if user == "" {
		return legacywire.Certificate{}, errors.New("legacy: certify: empty user")
	}
	if ttl <= 0 {
		return legacywire.Certificate{}, fmt.Errorf("legacy: certify: ttl %v is not positive", ttl)
	}
	return legacywire.SignCertificate(a.key, legacywire.Certificate{
		PeerID:        id.String(),
		User:          user,
		Platform:      platform,
		ClientVersion: version,
		Capabilities:  caps,
		NotAfter:      time.Now().Add(ttl),
	}), nil
}

// SignRoute returns r signed by the authority.
func (a *Authority) SignRoute(r legacywire.RouteRecord) legacywire.RouteRecord {
	return legacywire.SignRoute(a.key, r)
}

// Revoke signs a revocation of cert, effective now. Hand it to a supernode
// (Supernode.Revoke or Directory.Revoke): supernodes refuse the device from
// then on and give the revocation to every device that asks.
func (a *Authority) Revoke(cert legacywire.Certificate, reason string) legacywire.Revocation {
	return legacywire.SignRevocation(a.key, legacywire.Revocation{
		PeerID:    cert.PeerID,
		User:      cert.User,
		Reason:    reason,
		RevokedAt: time.Now(),
		NotAfter:  cert.NotAfter,
	})
}
