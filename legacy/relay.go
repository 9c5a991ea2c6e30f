package legacy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// Relay limits of our own relays (RelayConfig's zero fields). go-libp2p's
// defaults (2 minutes and 128 KiB per circuit, 128 reservations, 8 per IP)
// are sized for volunteer relays that only carry a hole punch's
// coordination; ours carry a call's media when neither hole punching nor a
// direct dial works, for a supernode or bridge holding thousands of peers.
const (
	// DefaultRelayDuration is how long one relayed circuit may live: the
	// longest call we carry without the caller reopening its stream.
	DefaultRelayDuration = 2 * time.Hour
	// DefaultRelayData is how many bytes one circuit may carry in each
	// direction: two hours of a 1 Mbit/s video call is about 900 MiB.
	DefaultRelayData = 1 << 30
	// DefaultRelayReservations bounds the reservations (relay slots) a relay
	// holds at once: every NATed device of a supernode's share of users.
	DefaultRelayReservations = 4096
	// DefaultRelayCircuitsPerPeer bounds the open circuits per peer (go-libp2p: 16).
	DefaultRelayCircuitsPerPeer = 64
	// DefaultRelayReservationsPerIP bounds the reservations from one IP
	// address (go-libp2p: 8): carrier-grade NAT puts many devices behind one.
	DefaultRelayReservationsPerIP = 128
	// DefaultRelayReservationsPerASN bounds the reservations from one ASN
	// (go-libp2p: 32).
	DefaultRelayReservationsPerASN = 2048
	// DefaultRelayReservationTTL is a reservation's life before its client
	// must refresh it (go-libp2p's default).
	DefaultRelayReservationTTL = time.Hour
	// DefaultRelayBufferSize is the copy buffer per circuit and direction
	// (go-libp2p: 2 KiB): a few media packets per read.
	DefaultRelayBufferSize = 8 << 10
)

// RelayConfig sizes the circuit relay v2 service a host runs
// (HostConfig.Relay). The zero value uses the defaults above.
type RelayConfig struct {
	// Duration and Data are the per-circuit limits; a circuit that reaches
	// either is reset and its media stream must be reopened.
	Duration time.Duration
	Data     int64
	// Reservations bounds the relay slots held at once.
	Reservations int
	// CircuitsPerPeer bounds one peer's open circuits.
	CircuitsPerPeer int
	// ReservationsPerIP and ReservationsPerASN bound reservations by origin.
	ReservationsPerIP  int
	ReservationsPerASN int
	// ReservationTTL is how long a reservation lasts before a refresh.
	ReservationTTL time.Duration
	// BufferSize is the copy buffer per circuit and direction, in bytes.
	BufferSize int
	// Access decides who may reserve a slot or open a circuit: our own
	// supernodes and bridge, and certified live devices (RelayAccess).
	// Nil leaves the relay open to any peer: only for tests and closed
	// labs; the agent and the simulator always set it.
	Access *RelayAccess
}

// Validate reports whether the config can build a relay.
func (c RelayConfig) Validate() error {
	if c.Duration < 0 || c.Data < 0 || c.Reservations < 0 || c.CircuitsPerPeer < 0 ||
		c.ReservationsPerIP < 0 || c.ReservationsPerASN < 0 || c.ReservationTTL < 0 || c.BufferSize < 0 {
		return fmt.Errorf("%w: negative relay limit", ErrInvalidConfig)
	}
	return nil
}

// resources turns the config, defaults filled in, into go-libp2p's relay
// resources.
func (c RelayConfig) resources() relayv2.Resources {
	or := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	r := relayv2.DefaultResources()
	r.Limit = &relayv2.RelayLimit{Duration: DefaultRelayDuration, Data: DefaultRelayData}
	if c.Duration > 0 {
		r.Limit.Duration = c.Duration
	}
	if c.Data > 0 {
		r.Limit.Data = c.Data
	}
	r.MaxReservations = or(c.Reservations, DefaultRelayReservations)
	r.MaxCircuits = or(c.CircuitsPerPeer, DefaultRelayCircuitsPerPeer)
	r.MaxReservationsPerIP = or(c.ReservationsPerIP, DefaultRelayReservationsPerIP)
	r.MaxReservationsPerASN = or(c.ReservationsPerASN, DefaultRelayReservationsPerASN)
	r.BufferSize = or(c.BufferSize, DefaultRelayBufferSize)
	r.ReservationTTL = DefaultRelayReservationTTL
	if c.ReservationTTL > 0 {
		r.ReservationTTL = c.ReservationTTL
	}
	return r
}

// relayHost is a host running a relay service: closing it stops the relay
// first. (go-libp2p's own EnableRelayService starts the relay only once
// AutoNAT has declared the host public, some time after New returns; ours
// serves from the first moment, which a supernode is.)
type relayHost struct {
	host.Host
	relay *relayv2.Relay
}

func (h *relayHost) Close() error {
	return errors.Join(h.relay.Close(), h.Host.Close())
}

// startRelay runs a circuit relay v2 service on h with cfg's limits,
// counting circuits in stats and exporting go-libp2p's relay metrics on reg
// (either may be nil). Reservations answer with every listen address,
// loopback and private ones included: our relays are known by their
// directory entries, not discovered.
func startRelay(h host.Host, cfg RelayConfig, reg prometheus.Registerer, stats *NetStats) (host.Host, error) {
	var next relayv2.MetricsTracer
	if reg != nil {
		next = relayv2.NewMetricsTracer(relayv2.WithRegisterer(reg))
	}
	opts := []relayv2.Option{
		relayv2.WithResources(cfg.resources()),
		relayv2.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true }),
	}
	if cfg.Access != nil {
		opts = append(opts, relayv2.WithACL(cfg.Access))
	}
	if next != nil || stats != nil {
		opts = append(opts, relayv2.WithMetricsTracer(&relayTracer{next: next, stats: stats}))
	}
	r, err := relayv2.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("legacy: relay service: %w", err)
	}
	return &relayHost{Host: h, relay: r}, nil
}

// Reserve takes a relay slot on relay (a supernode or the bridge), so that
// peers can reach h through it (CircuitAddrs) while h cannot take inbound
// connections. h needs HostConfig.RelayClient. The reservation expires (see
// its Expiration) unless Reserve is called again before; KeepReservation
// does that.
func Reserve(ctx context.Context, h host.Host, relay peer.AddrInfo) (*client.Reservation, error) {
	if err := h.Connect(ctx, relay); err != nil {
		return nil, fmt.Errorf("legacy: connect to relay %s: %w", relay.ID, err)
	}
	rsvp, err := client.Reserve(ctx, h, relay)
	if err != nil {
		return nil, fmt.Errorf("legacy: reserve at relay %s: %w", relay.ID, err)
	}
	return rsvp, nil
}

// reservationRetry is how long KeepReservation waits after a failed
// reservation before trying again.
const reservationRetry = 30 * time.Second

// KeepReservation holds a slot at relay until ctx is done: it reserves, and
// reserves again when three quarters of the reservation's life are gone
// (or reservationRetry after a failure). It returns ctx's error; failures in
// between (not those caused by ctx ending) go to onErr (nil ignores them:
// the next attempt follows).
func KeepReservation(ctx context.Context, h host.Host, relay peer.AddrInfo, onErr func(error)) error {
	for {
		wait := reservationRetry
		rsvp, err := Reserve(ctx, h, relay)
		switch {
		case err != nil && onErr != nil && ctx.Err() == nil:
			onErr(err)
		case err == nil:
			wait = max(time.Until(rsvp.Expiration)*3/4, time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// CircuitAddrs returns the relayed addresses of target through each relay
// address: <relay addr>/p2p/<relay>/p2p-circuit. Dialing them reaches a
// target that holds a reservation at the relay.
func CircuitAddrs(relays []peer.AddrInfo) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, r := range relays {
		suffix, err := ma.NewMultiaddr("/p2p/" + r.ID.String() + "/p2p-circuit")
		if err != nil {
			return nil, fmt.Errorf("legacy: circuit address via %s: %w", r.ID, err)
		}
		for _, a := range r.Addrs {
			out = append(out, a.Encapsulate(suffix))
		}
	}
	return out, nil
}

// isRelayedAddr reports whether a is a circuit address.
func isRelayedAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

// isRelayed reports whether c goes through a relay.
func isRelayed(c network.Conn) bool {
	return c.Stat().Limited || isRelayedAddr(c.RemoteMultiaddr())
}

// directAddrs returns the addresses of addrs that are not circuit addresses.
func directAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if !isRelayedAddr(a) {
			out = append(out, a)
		}
	}
	return out
}
