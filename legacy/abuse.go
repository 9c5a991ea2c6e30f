package legacy

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Per-peer rate limit defaults (RateLimit's zero fields).
const (
	// DefaultRatePerPeer is how many requests (directory) or frames (chat)
	// one peer may send per second, sustained.
	DefaultRatePerPeer = 20
	// DefaultBurstPerPeer is how many it may send at once after a quiet
	// spell.
	DefaultBurstPerPeer = 40
	// DefaultRateLimitPeers bounds the peers a PeerLimiter tracks; the least
	// recently seen is forgotten first (it comes back with a full bucket,
	// which only ever helps a well-behaved peer).
	DefaultRateLimitPeers = 16384
	// DefaultCutAfter is how many refusals in a row cut a peer off.
	DefaultCutAfter = 100
	// DefaultCutFor is how long a cut-off peer stays blocked at the gater.
	DefaultCutFor = 10 * time.Minute
)

// RateLimit configures a PeerLimiter. The zero value uses the defaults
// above.
type RateLimit struct {
	// Rate is the sustained allowance per peer, per second.
	Rate float64
	// Burst is the bucket size: what a peer may send at once.
	Burst int
	// MaxPeers bounds the tracked peers (least recently seen evicted).
	MaxPeers int
	// CutAfter is how many refusals in a row (no allowed request between
	// them) make the peer abusive: OnCut is called once and the counter
	// restarts. Negative never cuts.
	CutAfter int
	// OnCut is called, outside the limiter's lock, when a peer is found
	// abusive; Gater.Cut is the usual choice. Nil only counts.
	OnCut func(peer.ID)
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Validate reports whether the limit is usable.
func (c RateLimit) Validate() error {
	if c.Rate < 0 || c.Burst < 0 || c.MaxPeers < 0 {
		return fmt.Errorf("%w: negative rate limit", ErrInvalidConfig)
	}
	return nil
}

// PeerLimiter is a token bucket per peer ID, shared by the stream handlers
// of one host (directory and chat count separately when given separate
// limiters). Its map is bounded: memory does not grow with the number of
// peers ever seen.
type PeerLimiter struct {
	cfg RateLimit

	mu    sync.Mutex
	peers map[peer.ID]*list.Element // of *bucket
	lru   *list.List                // front: most recently seen

	refused atomic.Int64
	cut     atomic.Int64
}

type bucket struct {
	id      peer.ID
	tokens  float64
	last    time.Time
	strikes int
}

// NewPeerLimiter returns a limiter; it fails only on an invalid config.
func NewPeerLimiter(cfg RateLimit) (*PeerLimiter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRatePerPeer
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultBurstPerPeer
	}
	if cfg.MaxPeers == 0 {
		cfg.MaxPeers = DefaultRateLimitPeers
	}
	if cfg.CutAfter == 0 {
		cfg.CutAfter = DefaultCutAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &PeerLimiter{cfg: cfg, peers: make(map[peer.ID]*list.Element), lru: list.New()}, nil
}

// Allow takes one token from p's bucket and reports whether there was one.
// A nil limiter allows everything.
func (l *PeerLimiter) Allow(p peer.ID) bool {
	if l == nil {
		return true
	}
	now := l.cfg.Now()
	l.mu.Lock()
	b := l.bucketLocked(p, now)
	b.tokens = min(float64(l.cfg.Burst), b.tokens+now.Sub(b.last).Seconds()*l.cfg.Rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		b.strikes = 0
		l.mu.Unlock()
		return true
	}
	b.strikes++
	cut := l.cfg.CutAfter > 0 && b.strikes >= l.cfg.CutAfter
	if cut {
		b.strikes = 0
	}
	l.mu.Unlock()
	l.refused.Add(1)
	if cut {
		l.cut.Add(1)
		if l.cfg.OnCut != nil {
			l.cfg.OnCut(p)
		}
	}
	return false
}

// bucketLocked returns p's bucket, creating it full and evicting the least
// recently seen peer when the map is at MaxPeers.
func (l *PeerLimiter) bucketLocked(p peer.ID, now time.Time) *bucket {
	if e, ok := l.peers[p]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*bucket)
	}
	if l.lru.Len() >= l.cfg.MaxPeers {
		old := l.lru.Back()
		l.lru.Remove(old)
		delete(l.peers, old.Value.(*bucket).id)
	}
	b := &bucket{id: p, tokens: float64(l.cfg.Burst), last: now}
	l.peers[p] = l.lru.PushFront(b)
	return b
}

// Stats reports how many requests were refused and how many times a peer
// was cut off, since the limiter was made.
func (l *PeerLimiter) Stats() (refused, cut int64) {
	if l == nil {
		return 0, 0
	}
	return l.refused.Load(), l.cut.Load()
}

// Tracked returns the number of peers the limiter holds a bucket for.
func (l *PeerLimiter) Tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.peers)
}

var _ connmgr.ConnectionGater = (*Gater)(nil)

// Gater is the overlay's connection gater (HostConfig.Gater): it refuses
// peers that were cut off for abuse until their block expires, on dial and
// once the peer ID is known on accept (after the security handshake: the
// remote ID is not known before). Its map is bounded by how many peers are
// cut within DefaultCutFor; expired entries are dropped as they are met and
// at each Cut.
type Gater struct {
	net    network.Network // set by Attach; nil until then
	cutFor time.Duration
	now    func() time.Time

	mu      sync.Mutex
	blocked map[peer.ID]time.Time // → until
	cuts    atomic.Int64
}

// NewGater returns a gater that blocks a cut peer for cutFor (0 means
// DefaultCutFor).
func NewGater(cutFor time.Duration) *Gater {
	if cutFor <= 0 {
		cutFor = DefaultCutFor
	}
	return &Gater{cutFor: cutFor, now: time.Now, blocked: make(map[peer.ID]time.Time)}
}

// Attach lets Cut close the connections of a cut peer on n (the host's
// network, known only once the host exists).
func (g *Gater) Attach(n network.Network) {
	g.mu.Lock()
	g.net = n
	g.mu.Unlock()
}

// Cut blocks p for the gater's cut duration and closes its connections. It
// is what RateLimit.OnCut should call.
func (g *Gater) Cut(p peer.ID) {
	now := g.now()
	g.mu.Lock()
	for id, until := range g.blocked {
		if !now.Before(until) {
			delete(g.blocked, id)
		}
	}
	g.blocked[p] = now.Add(g.cutFor)
	n := g.net
	g.mu.Unlock()
	g.cuts.Add(1)
	if n != nil {
		_ = n.ClosePeer(p)
	}
}

// Cuts returns how many times a peer was cut off.
func (g *Gater) Cuts() int64 { return g.cuts.Load() }

// Blocked reports whether p is cut off now.
func (g *Gater) Blocked(p peer.ID) bool {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.blocked[p]
	if ok && !now.Before(until) {
		delete(g.blocked, p)
		return false
	}
	return ok
}

// InterceptPeerDial refuses dials to a blocked peer.
func (g *Gater) InterceptPeerDial(p peer.ID) bool { return !g.Blocked(p) }

// InterceptAddrDial allows every address.
func (g *Gater) InterceptAddrDial(peer.ID, ma.Multiaddr) bool { return true }

// InterceptAccept allows every inbound connection: the peer is not known
// yet (the resource manager's per-IP limits apply here).
func (g *Gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses a blocked peer once the handshake names it.
func (g *Gater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.Blocked(p)
}

// InterceptUpgraded allows every connection that got this far.
func (g *Gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }
