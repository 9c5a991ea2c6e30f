package bridge

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
)

// DefaultLinks is the size of the bridge's pool of cloud links when
// Config.Links is zero.
const DefaultLinks = 2

// MaxLinks bounds Config.Links (and so the link label of
// gateway_bridge_link_state).
const MaxLinks = 16

// cloudLink is one WebSocket bridge session of the pool. Link 0 carries
// the inbox feed (cursor, events); the others are request-only (hello
// no_feed, protocol v10). Each has its own state, backoff and generation.
type cloudLink struct {
	index int
	feed  bool
	state *linkTracker

	mu  sync.Mutex
	c   *cloud.Client // nil while down
	gen uint64        // counts the sessions that came up; puppets remember theirs
}

// client returns the link's session (nil while it is down) and its
// generation.
func (l *cloudLink) client() (*cloud.Client, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.c, l.gen
}

// set installs a new session (a new generation) or, with nil, marks the
// link down.
func (l *cloudLink) set(c *cloud.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.c = c
	if c != nil {
		l.gen++
	}
}

// newLinks makes the pool's n links, their state trackers curried on the
// link label.
func newLinks(n int, m *metrics, now func() time.Time) []*cloudLink {
	links := make([]*cloudLink, n)
	for i := range links {
		name := strconv.Itoa(i)
		gauge := m.link.MustCurryWith(prometheus.Labels{"link": name})
		links[i] = &cloudLink{index: i, feed: i == 0, state: newLinkTracker("link-"+name, gauge, now)}
	}
	return links
}

// linkIndex is the link that carries user's requests: a stable hash of
// the user id modulo the pool size. A user's requests all go to one link,
// so the cloud's per-user order (cloud/dispatch.go) is the order the
// bridge sent them in; a user is never moved to another link, and while
// their link is down their requests fail (and are retried by whoever
// retries them: the legacy device, the outbox, the flip hold) rather than
// overtake one another on another link.
func linkIndex(user string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(user))
	return int(h.Sum32() % uint32(n)) // #nosec G115 -- n is the pool size, 2..MaxLinks here
}

// linkOf returns the link that carries user's requests.
func (b *Bridge) linkOf(user string) *cloudLink {
	return b.links[linkIndex(user, len(b.links))]
}

// currentLink is the feed link's session (nil while it is down), for
// requests that act for nobody in particular (the flip probe).
func (b *Bridge) currentLink() *cloud.Client {
	c, _ := b.links[0].client()
	return c
}

// linkAs returns the session that carries user's requests, with a puppet
// open for user on it (puppets.go): errNoLink while the user's link is
// down, an error wrapping the cloud's refusal when it refuses the puppet.
//
// Users whose home is the cloud get no puppet: the bridge does not act for
// them; what it sends for them comes from one of their own legacy devices
// (Send.Device), which the cloud checks per request.
func (b *Bridge) linkAs(ctx context.Context, user string) (*cloud.Client, error) {
	l := b.linkOf(user)
	c, gen := l.client()
	if c == nil {
		return nil, errNoLink
	}
	if u, ok := b.cfg.State.Get(user); ok && u.CloudHome() {
		return c, nil
	}
	if err := b.puppets.acquire(ctx, user, l.index, gen, c); err != nil {
		return nil, err
	}
	return c, nil
}

// setLink installs or clears link l's session and keeps
// gateway_bridge_cloud_link_up (1 while every link is up) current.
func (b *Bridge) setLink(l *cloudLink, c *cloud.Client) {
	b.linkUpMu.Lock()
	defer b.linkUpMu.Unlock()
	l.set(c)
	up := true
	for _, k := range b.links {
		if kc, _ := k.client(); kc == nil {
			up = false
		}
	}
	b.metrics.linkUp.Set(boolGauge(up))
	if c == nil {
		b.puppets.linkDown(l.index)
	}
}

// linkRefusal is the text a legacy device gets when its user's link is
// down or the cloud refused the user's puppet.
func linkRefusal(err error) string {
	if errors.Is(err, errNoLink) {
		return errNoLink.Error()
	}
	return "cloud did not store the message"
}

// linkClient is link i's session and generation (the puppet sweep's view).
func (b *Bridge) linkClient(i int) (*cloud.Client, uint64) { return b.links[i].client() }
