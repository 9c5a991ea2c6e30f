package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// loadOrCreate returns the bytes in path, creating the file with make() and
// mode 0600 when it does not exist. The new file is written aside and linked
// into place, so a crash never leaves half a key behind, and when two agents
// sharing a data directory race to create it, both end up with the winner's.
func loadOrCreate(path string, make func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if b, err = make(); err != nil {
		return nil, err
	}
	tmp, err := writeTemp(path, b)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return b, nil
}

// writeFileAtomic replaces path with b.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := writeTemp(path, b)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Rename(tmp, path)
}

// writeTemp writes b, synced and with mode 0600, to a new file beside path.
func writeTemp(path string, b []byte) (string, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	err = f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(b)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// loadSigningKey loads (or creates) the ed25519 key the agent signs cloud and
// admin tokens with. The file holds the 32-byte seed.
func loadSigningKey(path string) (ed25519.PrivateKey, error) {
	seed, err := loadOrCreate(path, func() ([]byte, error) {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		return priv.Seed(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("token key %s: %d bytes, want %d", path, len(seed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// loadPeerKey loads (or creates) a libp2p identity, so that the agent's
// overlay peers keep their peer IDs across restarts.
func loadPeerKey(path string) (crypto.PrivKey, error) {
	b, err := loadOrCreate(path, func() ([]byte, error) {
		k, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			return nil, err
		}
		return crypto.MarshalPrivateKey(k)
	})
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("peer key %s: %w", path, err)
	}
	return k, nil
}

// adminAudience is the aud of admin tokens: the admin API, never the cloud
// service (which refuses them by audience before it looks at the role).
const adminAudience = "ferry-admin"

// tokenIssuer signs every token the agent hands out (admin tokens, cloud
// user tokens from the admin API, the bridge's credential, benchmarks) with
// the agent's key, its issuer and the right audience, and gives the policy
// the admin API checks tokens with. Its zero issuer and audience mean
// cloudwire's defaults.
type tokenIssuer struct {
	key      ed25519.PrivateKey
	issuer   string // iss; "" means cloudwire.DefaultIssuer
	audience string // aud of user and bridge tokens; "" means cloudwire.DefaultAudience
}

// issue signs a token for sub in role, valid for ttl from now.
func (t tokenIssuer) issue(sub, role string, ttl time.Duration) (string, error) {
	p := t.policy(role)
	now := time.Now().UTC()
	return cloudwire.SignToken(t.key, cloudwire.Claims{
		Issuer: p.Issuer, Subject: sub, Audience: cloudwire.Audience{p.Audience},
		Role: role, IssuedAt: now, ExpiresAt: now.Add(ttl),
	})
}

// policy is what a token of role is checked against: admin tokens by the
// admin API, the others by the cloud service.
func (t tokenIssuer) policy(role string) cloudwire.TokenPolicy {
	aud := t.audience
	if role == cloudwire.RoleAdmin {
		aud = adminAudience
	}
	return cloudwire.TokenPolicy{Key: t.key.Public().(ed25519.PublicKey), Issuer: t.issuer, Audience: aud}.WithDefaults()
}

// verifyAdmin returns nil when tok is a valid admin token of this agent.
func (t tokenIssuer) verifyAdmin(tok string) error {
	c, err := t.policy(cloudwire.RoleAdmin).Verify(tok, time.Now())
	if err != nil {
		return err
	}
	if c.Role != cloudwire.RoleAdmin {
		return fmt.Errorf("role %s is not admin", c.Role)
	}
	return nil
}
