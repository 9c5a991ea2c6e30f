package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// loadOrCreate returns the bytes in path, creating the file with make() and
// mode 0600 when it does not exist. The write goes through a temporary file
// and a rename, so a crash never leaves half a key behind.
func loadOrCreate(path string, make func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return b, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	b, err = make()
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return nil, err
	}
	return b, nil
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
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
