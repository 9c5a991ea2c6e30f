package legacy

import (
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
)

func TestNewHostLimits(t *testing.T) {
	tests := []struct {
		name      string
		cfg       HostConfig
		wantConns int
	}{
		{name: "default", cfg: HostConfig{}, wantConns: DefaultMaxConns},
		{name: "sized", cfg: HostConfig{MaxConns: 10000}, wantConns: 10000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := NewHost(tt.cfg)
			if err != nil {
				t.Fatalf("NewHost: %v", err)
			}
			defer h.Close()
			err = h.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
				l := s.(rcmgr.ResourceScopeLimiter).Limit()
				if got := l.GetConnLimit(network.DirInbound); got != tt.wantConns {
					t.Errorf("system inbound conns limit = %d, want %d", got, tt.wantConns)
				}
				if got := l.GetConnTotalLimit(); got != tt.wantConns {
					t.Errorf("system conns limit = %d, want %d", got, tt.wantConns)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range h.Addrs() {
				if a.String()[:len("/ip4/127.0.0.1/tcp/")] != "/ip4/127.0.0.1/tcp/" {
					t.Errorf("listening on %s, want loopback TCP only", a)
				}
			}
		})
	}
}

func TestHostConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  HostConfig
		ok   bool
	}{
		{name: "zero", cfg: HostConfig{}, ok: true},
		{name: "negative conns", cfg: HostConfig{MaxConns: -1}},
		{name: "bad listen address", cfg: HostConfig{ListenAddrs: []string{"127.0.0.1:0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
