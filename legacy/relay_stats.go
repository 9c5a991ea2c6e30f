package legacy

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
)

// Path is how a connection or a media stream reaches its peer. Its values
// are stable: they are metric labels.
type Path string

const (
	// PathDirect is a direct connection, dialed or accepted.
	PathDirect Path = "direct"
	// PathHolePunched is a direct connection made while a relayed one to
	// the same peer was open: what DCUtR's hole punch produces.
	PathHolePunched Path = "hole_punched"
	// PathRelayed goes through a circuit relay v2 (a supernode or the
	// bridge).
	PathRelayed Path = "relayed"
)

// Paths returns every Path, in a fixed order.
func Paths() []Path { return []Path{PathDirect, PathHolePunched, PathRelayed} }

func (p Path) index() int {
	switch p {
	case PathHolePunched:
		return 1
	case PathRelayed:
		return 2
	}
	return 0
}

// Relay refusal reasons (NetSnapshot.CircuitsRefused keys): a bounded set
// mapped from the circuit v2 status codes.
const (
	RefusedResourceLimit = "resource_limit"
	RefusedNoReservation = "no_reservation"
	RefusedPermission    = "permission_denied"
	RefusedConnection    = "connection_failed"
	RefusedMalformed     = "malformed"
)

// RelayRefusals returns every relay refusal reason, in a fixed order.
func RelayRefusals() []string {
	return []string{RefusedResourceLimit, RefusedNoReservation, RefusedPermission, RefusedConnection, RefusedMalformed}
}

// Hole-punch outcomes (NetSnapshot.HolePunches keys).
const (
	// HolePunchDirect: DCUtR's first direct dial got through, no punch
	// needed.
	HolePunchDirect = "direct"
	// HolePunchSuccess: a hole punch made a direct connection.
	HolePunchSuccess = "success"
	// HolePunchFailure: every hole-punch attempt failed; the peers stay
	// relayed.
	HolePunchFailure = "failure"
	// HolePunchProtocolError: the DCUtR exchange itself failed.
	HolePunchProtocolError = "protocol_error"
)

// HolePunchOutcomes returns every hole-punch outcome, in a fixed order.
func HolePunchOutcomes() []string {
	return []string{HolePunchDirect, HolePunchSuccess, HolePunchFailure, HolePunchProtocolError}
}

// NetStats counts, for the hosts and media endpoints it is given to
// (HostConfig.Stats, MediaConfig.Stats), connections and media streams by
// Path, relay circuits and reservations, and hole-punch outcomes. It holds
// no peer IDs beyond the open connections' paths, so its memory is bounded
// by the hosts' connection limits. One NetStats may serve several hosts.
type NetStats struct {
	mu   sync.Mutex
	open map[network.Conn]Path

	openNow [3]atomic.Int64
	opened  [3]atomic.Int64
	media   [3]atomic.Int64

	circuitsActive atomic.Int64
	circuitsOpened atomic.Int64
	refused        [5]atomic.Int64 // by RelayRefusals index
	reservations   atomic.Int64
	holePunches    [4]atomic.Int64 // by HolePunchOutcomes index
}

// NewNetStats returns empty counters.
func NewNetStats() *NetStats {
	return &NetStats{open: make(map[network.Conn]Path)}
}

// NetSnapshot is a copy of a NetStats' counters.
type NetSnapshot struct {
	// Open is connections open now, OpenedTotal connections opened, by path.
	Open, OpenedTotal map[Path]int64
	// MediaStreams is media streams opened (either end), by path.
	MediaStreams map[Path]int64
	// CircuitsActive is relayed circuits open now through this node's
	// relays; CircuitsOpened those ever opened.
	CircuitsActive, CircuitsOpened int64
	// CircuitsRefused is circuit and reservation requests the relay
	// refused, by reason (RelayAccess refusals: RefusedPermission).
	CircuitsRefused map[string]int64
	// Reservations is relay slots held now at this node's relays.
	Reservations int64
	// HolePunches is hole-punch outcomes, by outcome.
	HolePunches map[string]int64
}

// Snapshot copies the counters. A nil NetStats gives zeros.
func (s *NetStats) Snapshot() NetSnapshot {
	out := NetSnapshot{
		Open: map[Path]int64{}, OpenedTotal: map[Path]int64{}, MediaStreams: map[Path]int64{},
		CircuitsRefused: map[string]int64{}, HolePunches: map[string]int64{},
	}
	for i, p := range Paths() {
		out.Open[p], out.OpenedTotal[p], out.MediaStreams[p] = 0, 0, 0
		if s != nil {
			out.Open[p], out.OpenedTotal[p], out.MediaStreams[p] = s.openNow[i].Load(), s.opened[i].Load(), s.media[i].Load()
		}
	}
	for i, r := range RelayRefusals() {
		out.CircuitsRefused[r] = 0
		if s != nil {
			out.CircuitsRefused[r] = s.refused[i].Load()
		}
	}
	for i, o := range HolePunchOutcomes() {
		out.HolePunches[o] = 0
		if s != nil {
			out.HolePunches[o] = s.holePunches[i].Load()
		}
	}
	if s != nil {
		out.CircuitsActive, out.CircuitsOpened = s.circuitsActive.Load(), s.circuitsOpened.Load()
		out.Reservations = s.reservations.Load()
	}
	return out
}

// mediaOpened counts one media stream on path p.
func (s *NetStats) mediaOpened(p Path) {
	if s != nil {
		s.media[p.index()].Add(1)
	}
}

// attach makes s count n's connections by path.
func (s *NetStats) attach(n network.Network) {
	n.Notify(&network.NotifyBundle{ConnectedF: s.connected, DisconnectedF: s.disconnected})
}

// connPath classifies a new connection: relayed through a circuit, hole
// punched when a relayed connection to the same peer is already open
// (DCUtR upgrades exactly such a pair), direct otherwise.
func connPath(n network.Network, c network.Conn) Path {
	if isRelayed(c) {
		return PathRelayed
	}
	for _, other := range n.ConnsToPeer(c.RemotePeer()) {
		if other != c && isRelayed(other) {
			return PathHolePunched
		}
	}
	return PathDirect
}

func (s *NetStats) connected(n network.Network, c network.Conn) {
	p := connPath(n, c)
	s.mu.Lock()
	if _, dup := s.open[c]; dup {
		s.mu.Unlock()
		return
	}
	s.open[c] = p
	s.mu.Unlock()
	s.openNow[p.index()].Add(1)
	s.opened[p.index()].Add(1)
}

func (s *NetStats) disconnected(_ network.Network, c network.Conn) {
	s.mu.Lock()
	p, ok := s.open[c]
	delete(s.open, c)
	s.mu.Unlock()
	if ok {
		s.openNow[p.index()].Add(-1)
	}
}

// pathOf returns the path c was counted under when it opened, or its
// classification now if s did not see it open (or s is nil).
func (s *NetStats) pathOf(n network.Network, c network.Conn) Path {
	if s != nil {
		s.mu.Lock()
		p, ok := s.open[c]
		s.mu.Unlock()
		if ok {
			return p
		}
	}
	return connPath(n, c)
}

var _ relayv2.MetricsTracer = (*relayTracer)(nil)

// relayTracer counts circuits and reservations in stats and passes every
// event on to go-libp2p's own relay metrics (next, nil without a registry).
type relayTracer struct {
	next  relayv2.MetricsTracer
	stats *NetStats
}

func (t *relayTracer) RelayStatus(enabled bool) {
	if t.next != nil {
		t.next.RelayStatus(enabled)
	}
}

func (t *relayTracer) ConnectionOpened() {
	if t.stats != nil {
		t.stats.circuitsActive.Add(1)
		t.stats.circuitsOpened.Add(1)
	}
	if t.next != nil {
		t.next.ConnectionOpened()
	}
}

func (t *relayTracer) ConnectionClosed(d time.Duration) {
	if t.stats != nil {
		t.stats.circuitsActive.Add(-1)
	}
	if t.next != nil {
		t.next.ConnectionClosed(d)
	}
}

func (t *relayTracer) ConnectionRequestHandled(status pbv2.Status) {
	if i := refusalIndex(status); i >= 0 && t.stats != nil {
		t.stats.refused[i].Add(1)
	}
	if t.next != nil {
		t.next.ConnectionRequestHandled(status)
	}
}

func (t *relayTracer) ReservationAllowed(isRenewal bool) {
	if !isRenewal && t.stats != nil {
		t.stats.reservations.Add(1)
	}
	if t.next != nil {
		t.next.ReservationAllowed(isRenewal)
	}
}

func (t *relayTracer) ReservationClosed(cnt int) {
	if t.stats != nil {
		t.stats.reservations.Add(-int64(cnt))
	}
	if t.next != nil {
		t.next.ReservationClosed(cnt)
	}
}

func (t *relayTracer) ReservationRequestHandled(status pbv2.Status) {
	if i := refusalIndex(status); i >= 0 && t.stats != nil {
		t.stats.refused[i].Add(1)
	}
	if t.next != nil {
		t.next.ReservationRequestHandled(status)
	}
}

func (t *relayTracer) BytesTransferred(cnt int) {
	if t.next != nil {
		t.next.BytesTransferred(cnt)
	}
}

// refusalIndex maps a circuit request's status to its RelayRefusals index,
// or -1 for OK.
func refusalIndex(s pbv2.Status) int {
	switch s {
	case pbv2.Status_OK:
		return -1
	case pbv2.Status_RESOURCE_LIMIT_EXCEEDED, pbv2.Status_RESERVATION_REFUSED:
		return 0
	case pbv2.Status_NO_RESERVATION:
		return 1
	case pbv2.Status_PERMISSION_DENIED:
		return 2
	case pbv2.Status_CONNECTION_FAILED:
		return 3
	}
	return 4 // malformed, unexpected or unknown
}

var _ holepunch.EventTracer = (*holePunchTracer)(nil)

// holePunchTracer counts DCUtR's outcomes in stats.
type holePunchTracer struct{ stats *NetStats }

func (t *holePunchTracer) Trace(evt *holepunch.Event) {
	i := -1
	switch e := evt.Evt.(type) {
	case *holepunch.DirectDialEvt:
		if e.Success {
			i = 0
		}
	case *holepunch.EndHolePunchEvt:
		i = 2
		if e.Success {
			i = 1
		}
	case *holepunch.ProtocolErrorEvt:
		i = 3
	}
	if i >= 0 {
		t.stats.holePunches[i].Add(1)
	}
}
