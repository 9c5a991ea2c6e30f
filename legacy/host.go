package legacy

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxConns is HostConfig.MaxConns when zero: enough for a supernode or
// a bridge holding thousands of peers.
const DefaultMaxConns = 4096

// connGracePeriod is how long a new connection is safe from the connection
// manager's trimming.
const connGracePeriod = time.Minute

// HostConfig configures NewHost. The zero value listens on an ephemeral
// loopback TCP port with a fresh key.
type HostConfig struct {
	// ListenAddrs are multiaddrs to listen on; default ["/ip4/127.0.0.1/tcp/0"].
	ListenAddrs []string
	// PrivKey is the host's identity; nil generates a new Ed25519 key.
	PrivKey crypto.PrivKey
	// MaxConns sizes the resource manager (explicit system limits instead of
	// go-libp2p's ~256 inbound default) and the connection manager's high
	// water mark; default DefaultMaxConns.
	MaxConns int
	// Registerer receives go-libp2p's own metrics (swarm, identify, resource
	// manager). Nil disables them, so hosts built in tests and the simulator
	// touch no global registry.
	Registerer prometheus.Registerer
	// Gater, when set, is the host's connection gater: it refuses peers cut
	// off for abuse. NewHost attaches it to the host's network so that
	// Gater.Cut also closes their connections. One gater serves one host.
	Gater *Gater
	// LimitLoopback removes go-libp2p's exemption of 127.0.0.0/8 and ::1
	// from the per-IP connection limit, so that loopback peers count like
	// any other address (abuse tests on loopback need it; so does a
	// supernode behind a local proxy).
	LimitLoopback bool
	// MaxConnsPerIP is the per-IP connection limit applied to loopback when
	// LimitLoopback is set; default DefaultMaxConnsPerIP. Other addresses
	// keep go-libp2p's per-subnet defaults.
	MaxConnsPerIP int
	// MaxStreamsPerPeer bounds one peer's inbound streams at the resource
	// manager (0 keeps go-libp2p's scaled default): a peer that opens
	// streams faster than the handlers finish them is refused new ones
	// without slowing the others.
	MaxStreamsPerPeer int
	// Relay, when set, runs a circuit relay v2 service on the host with
	// these limits (supernodes and the bridge): NATed devices reserve a
	// slot there and are reached through it when no direct path works.
	Relay *RelayConfig
	// RelayClient enables the circuit relay transport (dialing and
	// accepting relayed connections) and DCUtR hole punching
	// (libp2p.EnableHolePunching): what a device behind a NAT needs, and the
	// bridge, which dials such devices.
	RelayClient bool
	// Stats, when set, counts the host's connections by path, its relay's
	// circuits and reservations, and its hole-punch outcomes.
	Stats *NetStats

	// testOptions are appended to the libp2p options (tests only: a
	// connection gater that refuses direct connections to one peer).
	testOptions []libp2p.Option
}

// DefaultMaxConnsPerIP is HostConfig.MaxConnsPerIP when zero.
const DefaultMaxConnsPerIP = 64

// Validate reports whether the config can build a host.
func (c HostConfig) Validate() error {
	if c.MaxConnsPerIP < 0 || c.MaxStreamsPerPeer < 0 {
		return fmt.Errorf("%w: negative per-IP or per-peer limit", ErrInvalidConfig)
	}
	if c.Relay != nil {
		if err := c.Relay.Validate(); err != nil {
			return err
		}
	}
	if c.MaxConns < 0 {
		return fmt.Errorf("%w: MaxConns %d is negative", ErrInvalidConfig, c.MaxConns)
	}
	for _, a := range c.ListenAddrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return fmt.Errorf("%w: listen address %q: %v", ErrInvalidConfig, a, err)
		}
	}
	return nil
}

func (c HostConfig) withDefaults() HostConfig {
	if len(c.ListenAddrs) == 0 {
		c.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	return c
}

// NewHost builds a libp2p host for the overlay: TCP, Noise and Yamux only (no
// QUIC, WebTransport or WebRTC), with a resource manager and a connection
// manager sized from MaxConns; the relay service (Relay), and the relay
// transport with hole punching (RelayClient), when configured.
func NewHost(cfg HostConfig) (host.Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()

	rm, err := newResourceManager(cfg)
	if err != nil {
		return nil, fmt.Errorf("legacy: resource manager: %w", err)
	}
	low := cfg.MaxConns * 3 / 4
	if low < 1 {
		low = 1
	}
	cm, err := connmgr.NewConnManager(low, cfg.MaxConns, connmgr.WithGracePeriod(connGracePeriod))
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("legacy: connection manager: %w", err)
	}

	opts := []libp2p.Option{
		libp2p.ListenAddrStrings(cfg.ListenAddrs...),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
	}
	opts = append(opts, relayClientOptions(cfg)...)
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}
	opts = append(opts, cfg.testOptions...)
	if cfg.PrivKey != nil {
		opts = append(opts, libp2p.Identity(cfg.PrivKey))
	}
	if cfg.Registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(cfg.Registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("legacy: new host: %w", err)
	}
	if cfg.Gater != nil {
		cfg.Gater.Attach(h.Network())
	}
	if cfg.Stats != nil {
		cfg.Stats.attach(h.Network())
	}
	if cfg.Relay != nil {
		rh, err := startRelay(h, *cfg.Relay, cfg.Registerer, cfg.Stats)
		if err != nil {
			h.Close()
			return nil, err
		}
		h = rh
	}
	return h, nil
}

// relayClientOptions are the libp2p options of HostConfig.RelayClient: the
// relay transport and DCUtR, whose outcomes go to Stats and whose own
// metrics go to Registerer.
func relayClientOptions(cfg HostConfig) []libp2p.Option {
	if !cfg.RelayClient {
		return []libp2p.Option{libp2p.DisableRelay()}
	}
	var hp []holepunch.Option
	var mt holepunch.MetricsTracer
	if cfg.Registerer != nil {
		mt = holepunch.NewMetricsTracer(holepunch.WithRegisterer(cfg.Registerer))
	}
	if cfg.Stats != nil {
		// Replaces the metrics-only tracer libp2p adds for Registerer.
		hp = append(hp, holepunch.WithMetricsAndEventTracer(mt, &holePunchTracer{stats: cfg.Stats}))
	}
	return []libp2p.Option{libp2p.EnableRelay(), libp2p.EnableHolePunching(hp...)}
}

// newResourceManager scales go-libp2p's default limits to the machine and
// then raises the connection and stream limits of the system and transient
// scopes to what maxConns peers need. Per-peer limits stay at their defaults
// unless MaxStreamsPerPeer is set; loopback loses its per-IP exemption when
// LimitLoopback is set.
func newResourceManager(cfg HostConfig) (network.ResourceManager, error) {
	maxConns, metrics := cfg.MaxConns, cfg.Registerer != nil
	defaults := rcmgr.DefaultLimits.AutoScale()
	transient := max(maxConns/4, 64)
	fd := max(maxConns+maxConns/8, 256)
	limits := rcmgr.PartialLimitConfig{
		System: rcmgr.ResourceLimits{
			Conns:           rcmgr.LimitVal(maxConns),
			ConnsInbound:    rcmgr.LimitVal(maxConns),
			ConnsOutbound:   rcmgr.LimitVal(maxConns),
			Streams:         rcmgr.LimitVal(maxConns * 16),
			StreamsInbound:  rcmgr.LimitVal(maxConns * 8),
			StreamsOutbound: rcmgr.LimitVal(maxConns * 8),
			FD:              rcmgr.LimitVal(fd),
		},
		Transient: rcmgr.ResourceLimits{
			Conns:           rcmgr.LimitVal(transient),
			ConnsInbound:    rcmgr.LimitVal(transient),
			ConnsOutbound:   rcmgr.LimitVal(transient),
			Streams:         rcmgr.LimitVal(transient * 4),
			StreamsInbound:  rcmgr.LimitVal(transient * 2),
			StreamsOutbound: rcmgr.LimitVal(transient * 2),
			FD:              rcmgr.LimitVal(transient),
		},
	}
	if n := cfg.MaxStreamsPerPeer; n > 0 {
		limits.PeerDefault = rcmgr.ResourceLimits{
			Streams:         rcmgr.LimitVal(2 * n),
			StreamsInbound:  rcmgr.LimitVal(n),
			StreamsOutbound: rcmgr.LimitVal(n),
		}
	}
	concrete := limits.Build(defaults)
	var opts []rcmgr.Option
	if !metrics {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	if cfg.LimitLoopback {
		n := cfg.MaxConnsPerIP
		// A prefix limit of /32 (/128) replaces the default unlimited
		// 127.0.0.0/8 (::1) entry: every loopback address gets its own cap.
		opts = append(opts, rcmgr.WithNetworkPrefixLimit(
			[]rcmgr.NetworkPrefixLimit{{Network: netip.MustParsePrefix("127.0.0.1/32"), ConnCount: n}},
			[]rcmgr.NetworkPrefixLimit{{Network: netip.MustParsePrefix("::1/128"), ConnCount: n}},
		))
	}
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(concrete), opts...)
}
