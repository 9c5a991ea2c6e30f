package legacy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// MaxSimSupernodes bounds StartSimNetwork's supernodes.
const MaxSimSupernodes = 8

// simCertTTL is how long the certificates of a SimNetwork last.
const simCertTTL = 24 * time.Hour

// SimNetwork is an overlay of the simulator's own (gateway legacy sim
// -standalone): a fresh authority and supernodes on 127.0.0.1 that
// replicate to each other, each host running a relay that only our
// supernodes and the devices registered there may use (RelayAccess), as
// the agent runs them.
type SimNetwork struct {
	// Authority signs the devices' certificates (Certify).
	Authority *Authority
	// Supernodes and Infos are the directory, in the same order.
	Supernodes []*Supernode
	Infos      []peer.AddrInfo

	hosts  []host.Host
	cancel context.CancelFunc
	wg     sync.WaitGroup
	errs   []error
	mu     sync.Mutex
}

// StartSimNetwork starts n supernodes (1..MaxSimSupernodes) until Close.
func StartSimNetwork(ctx context.Context, n int, logger *slog.Logger) (*SimNetwork, error) {
	if n < 1 || n > MaxSimSupernodes {
		return nil, fmt.Errorf("%w: %d supernodes, want 1..%d", ErrInvalidConfig, n, MaxSimSupernodes)
	}
	auth, err := GenerateAuthority()
	if err != nil {
		return nil, err
	}
	s := &SimNetwork{Authority: auth}
	access := make([]*RelayAccess, n)
	for i := range n {
		access[i] = NewRelayAccess()
		h, err := NewHost(HostConfig{Relay: &RelayConfig{Access: access[i]}})
		if err != nil {
			return nil, errors.Join(err, s.closeHosts())
		}
		s.hosts = append(s.hosts, h)
		s.Infos = append(s.Infos, peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()})
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	for i, h := range s.hosts {
		cfg := SupernodeConfig{Authority: auth.PublicKey(), Logger: logger}
		if n > 1 {
			cert, err := auth.Certify(h.ID(), "supernode", "supernode", "sim", []string{legacywire.CapSupernode}, simCertTTL)
			if err != nil {
				return nil, errors.Join(err, s.Close())
			}
			cfg.Cert = &cert
			for j, p := range s.Infos {
				if j != i {
					cfg.Peers = append(cfg.Peers, p)
					access[i].Trust(p.ID)
				}
			}
		}
		sn, err := NewSupernode(h, cfg)
		if err != nil {
			return nil, errors.Join(err, s.Close())
		}
		access[i].UseDevices(sn)
		s.Supernodes = append(s.Supernodes, sn)
		s.wg.Go(func() {
			if err := sn.Run(runCtx); err != nil {
				s.mu.Lock()
				s.errs = append(s.errs, err)
				s.mu.Unlock()
			}
		})
	}
	return s, nil
}

// Certify is SimConfig.Certify for the network's authority: the device's
// profile (SimProfileFromContext) gives its platform, client version and
// chat capabilities (SimCapabilities).
func (s *SimNetwork) Certify(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
	p, ok := SimProfileFromContext(ctx)
	if !ok {
		return legacywire.Certificate{}, fmt.Errorf("legacy: sim network: no device profile for %s", user)
	}
	return s.Authority.Certify(id, user, p.Platform, p.ClientVersion, SimCapabilities(p.ChatVersion), simCertTTL)
}

// Devices returns the live registrations over every supernode (each
// device once per supernode that holds it).
func (s *SimNetwork) Devices() int {
	n := 0
	for _, sn := range s.Supernodes {
		n += sn.Devices()
	}
	return n
}

// WaitReplicated waits until every supernode holds at least devices live
// registrations (replication is asynchronous), or ctx ends.
func (s *SimNetwork) WaitReplicated(ctx context.Context, devices int) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		done := true
		for _, sn := range s.Supernodes {
			done = done && sn.Devices() >= devices
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d registrations on every supernode: %w", devices, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops the supernodes and closes their hosts.
func (s *SimNetwork) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	s.mu.Lock()
	err := errors.Join(s.errs...)
	s.mu.Unlock()
	return errors.Join(err, s.closeHosts())
}

func (s *SimNetwork) closeHosts() error {
	var errs []error
	for _, h := range s.hosts {
		errs = append(errs, h.Close())
	}
	s.hosts = nil
	return errors.Join(errs...)
}

// SimCapabilities returns the chat capabilities a client speaking chat
// versions up to chatVersion is certified for.
func SimCapabilities(chatVersion int) []string {
	caps := []string{legacywire.CapChat1, legacywire.CapChat2, legacywire.CapChat3}
	return caps[:min(max(chatVersion, 1), len(caps))]
}
