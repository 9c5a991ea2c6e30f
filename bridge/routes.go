package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// routePublisher keeps the supernode's route records in step with phases: a
// user whose inbound home becomes the cloud gets a record pointing lookups at
// the bridge; a user who leaves it gets a withdrawal. Phase changes arrive
// from the memdb listener, which must never block, so they are coalesced in a
// map and published by one goroutine.
type routePublisher struct {
	b *Bridge
	// kind is legacywire.RouteHome, or RouteMirror for the shadow mirror's
	// publisher (newMirrorPublisher); wants says whether a user gets a live
	// record of it.
	kind  string
	wants func(u migrate.User) bool

	mu      sync.Mutex
	pending map[string]bool // user → cloud home
	wake    chan struct{}
}

// routeRetry is how long a failed publication waits before it is tried again.
const routeRetry = time.Second

func newRoutePublisher(b *Bridge) *routePublisher {
	p := &routePublisher{b: b, kind: legacywire.RouteHome, wants: migrate.User.CloudHome, pending: make(map[string]bool), wake: make(chan struct{}, 1)}
	b.cfg.State.OnChange(func(prev *migrate.User, cur migrate.User) {
		if prev != nil && prev.CloudHome() == cur.CloudHome() {
			return
		}
		if prev == nil && !cur.CloudHome() {
			return // a new legacy user has no route to withdraw
		}
		// The flip mark goes on before the route is queued (doc.go). A
		// user first seen with a cloud home (a node starting) did not flip.
		switch {
		case cur.CloudHome() && prev != nil:
			b.flipStart(cur.ID)
		case !cur.CloudHome():
			b.flipCancel(cur.ID)
		}
		p.enqueue(cur.ID, cur.CloudHome())
	})
	return p
}

func (p *routePublisher) enqueue(user string, home bool) {
	p.mu.Lock()
	p.pending[user] = home
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// refreshAll queues a route for every user in a snapshot who gets one.
func (p *routePublisher) refreshAll() {
	snap := p.b.cfg.State.Snapshot()
	for _, u := range snap.List("", "", 0) {
		if p.wants(u) {
			p.enqueue(u.ID, true)
		}
	}
}

func (p *routePublisher) run(ctx context.Context) error {
	p.refreshAll()
	refresh := time.NewTicker(p.b.cfg.RouteTTL / 3)
	defer refresh.Stop()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
			p.refreshAll()
		case <-p.wake:
		case <-retry.C:
		}
		p.mu.Lock()
		batch := p.pending
		p.pending = make(map[string]bool)
		p.mu.Unlock()
		failed := false
		for user, home := range batch {
			if err := p.publish(ctx, user, home); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				p.b.log.Warn("publish route", "user", user, "err", err)
				failed = true
				p.mu.Lock()
				if _, newer := p.pending[user]; !newer {
					p.pending[user] = home
				}
				p.mu.Unlock()
				continue
			}
			if home && p.kind == legacywire.RouteHome {
				p.b.flipRouted(user)
			}
		}
		if failed {
			retry.Reset(routeRetry)
		}
	}
}

// publish signs and sends one route record. Seq is the wall clock in
// nanoseconds: one publisher orders its own records, and a restarted bridge
// supersedes what it published before.
func (p *routePublisher) publish(ctx context.Context, user string, home bool) error {
	b := p.b
	now := b.now().UTC()
	addrs := make([]string, 0, len(b.cfg.Host.Addrs()))
	for _, a := range b.cfg.Host.Addrs() {
		addrs = append(addrs, a.String())
	}
	rec := b.cfg.Authority.SignRoute(legacywire.RouteRecord{
		User:      user,
		PeerID:    b.cfg.Host.ID().String(),
		Addrs:     addrs,
		Seq:       uint64(now.UnixNano()),
		NotAfter:  now.Add(b.cfg.RouteTTL),
		Withdrawn: !home,
		Kind:      p.kind,
	})
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	kind := "route"
	if !home {
		kind = "withdrawal"
	}
	if p.kind == legacywire.RouteMirror {
		kind = "mirror_" + kind // mirror_route, mirror_withdrawal
	}
	err := b.dir.PublishRoute(ctx, rec)
	b.metrics.routes.WithLabelValues(kind, resultOf(err)).Inc()
	return err
}

func resultOf(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
