package legacy

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLoadOrCreateAuthority(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "authority.key")
	a, err := LoadOrCreateAuthority(path)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode = %v, want 0600", fi.Mode().Perm())
	}
	b, err := LoadOrCreateAuthority(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if !a.PublicKey().Equal(b.PublicKey()) {
		t.Error("loaded authority differs from the created one")
	}

	bad := filepath.Join(t.TempDir(), "bad.key")
	if err := os.WriteFile(bad, []byte("not a seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateAuthority(bad); !errors.Is(err, ErrBadKeyFile) {
		t.Errorf("load bad file = %v, want ErrBadKeyFile", err)
	}
}

func TestAuthorityCertify(t *testing.T) {
	a := newTestAuthority(t)
	h := newTestHost(t)
	tests := []struct {
		name    string
		id      peer.ID
		user    string
		ttl     time.Duration
		wantErr bool
	}{
		{name: "ok", id: h.ID(), user: "alice", ttl: time.Hour},
		{name: "empty user", id: h.ID(), user: "", ttl: time.Hour, wantErr: true},
		{name: "zero ttl", id: h.ID(), user: "alice", ttl: 0, wantErr: true},
		{name: "bad peer id", id: peer.ID(""), user: "alice", ttl: time.Hour, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := a.Certify(tt.id, tt.user, "ios", "1.0", nil, tt.ttl)
			if tt.wantErr {
				if err == nil {
					t.Fatal("Certify succeeded, want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Certify: %v", err)
			}
			if err := c.Verify(a.PublicKey(), h.ID().String(), time.Now()); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if err := c.Verify(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)), h.ID().String(), time.Now()); err == nil {
				t.Error("certificate verified against another key")
			}
		})
	}
}
