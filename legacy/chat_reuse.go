package legacy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// CodeNotHere is the refusal a peer gives a message for a user it does not
// (or no longer) route for: the bridge's answer once the recipient's route
// moved away. The sender looks the user up again.
const CodeNotHere = "not_here"

// What a device keeps between its messages, so that a run of messages to
// a user behind the bridge costs one chat frame each instead of a
// directory lookup and a fresh chat stream each.
const (
	// RouteCacheTTL is how long a device reuses a lookup that resolved to
	// a live route (a user served by the bridge), at most until the
	// route's NotAfter. A refusal with CodeNotHere, or a transport
	// failure, on a remembered route drops it and retries the message
	// once with a fresh lookup, so a route that moved costs one attempt.
	// Lookups that name devices are never remembered: devices come and
	// go, and a user's phase change first withdraws or publishes a route.
	RouteCacheTTL = 5 * time.Second
	// ChatStreamIdle is how long a device keeps an idle chat v2+ stream to
	// a peer for its next frame: long enough for the next message of a
	// conversation, well under ChatReadTimeout (after which the other end
	// gives up on the stream), and short because every idle stream holds
	// a goroutine and buffers at the other end (the bridge holds one per
	// device that talks to it).
	ChatStreamIdle = 15 * time.Second
	// maxIdleChatStreams bounds the idle streams a device keeps per peer
	// (frames in flight beyond it open streams of their own), and
	// maxChatStreamPeers the peers it keeps them for.
	maxIdleChatStreams = 2
	maxChatStreamPeers = 16
	// maxCachedRoutes bounds the routes a device remembers.
	maxCachedRoutes = 1024
)

// routeCache is a device's remembered lookups of users with a live route.
type routeCache struct {
	mu sync.Mutex
	m  map[string]cachedRoute
}

type cachedRoute struct {
	look  Lookup
	until time.Time
}

// get returns the remembered lookup of user, if still fresh at now.
func (c *routeCache) get(user string, now time.Time) (Lookup, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[user]
	if !ok || !now.Before(e.until) {
		return Lookup{}, false
	}
	return e.look, true
}

// put remembers look for user if it resolves to a live route, and forgets
// any earlier lookup of user otherwise.
func (c *routeCache) put(user string, look Lookup, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if look.Route == nil || look.Route.Withdrawn {
		delete(c.m, user)
		return
	}
	until := now.Add(RouteCacheTTL)
	if na := look.Route.NotAfter; !na.IsZero() && na.Before(until) {
		until = na
	}
	if c.m == nil || len(c.m) >= maxCachedRoutes {
		c.m = make(map[string]cachedRoute)
	}
	c.m[user] = cachedRoute{look: look, until: until}
}

func (c *routeCache) forget(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, user)
}

// lookup returns a lookup of user: the remembered one when fresh (cached
// true), otherwise the directory's, remembered when it names a live route.
func (d *Device) lookup(ctx context.Context, user string) (look Lookup, cached bool, err error) {
	if look, ok := d.routes.get(user, time.Now()); ok {
		return look, true, nil
	}
	look, err = d.dir.Lookup(ctx, user)
	if err != nil {
		return Lookup{}, false, err
	}
	d.routes.put(user, look, time.Now())
	return look, false, nil
}

// chatStreams keeps a device's idle chat v2+ streams per peer. The chat
// protocol has always allowed several frames per stream (a hello, then
// frames each answered by an ack: chat.go serves them in a loop), so a
// stream kept open is read by every version of the other end as it
// always was; only the sender decides to reuse it.
type chatStreams struct {
	mu   sync.Mutex
	idle map[peer.ID][]idleChat
}

type idleChat struct {
	s     network.Stream
	since time.Time
}

// get takes an idle stream to p that has not been idle too long, closing
// the ones that have.
func (c *chatStreams) get(p peer.ID, now time.Time) (idleChat, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.idle[p]
	for len(q) > 0 {
		ic := q[len(q)-1]
		q[len(q)-1] = idleChat{}
		q = q[:len(q)-1]
		if now.Sub(ic.since) < ChatStreamIdle {
			c.idle[p] = q
			return ic, true
		}
		_ = ic.s.Close()
	}
	delete(c.idle, p)
	return idleChat{}, false
}

// put keeps ic as an idle stream to p, or closes it when p has enough
// idle streams or too many peers have some.
func (c *chatStreams) put(p peer.ID, ic idleChat) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q, ok := c.idle[p]
	if len(q) >= maxIdleChatStreams || (!ok && len(c.idle) >= maxChatStreamPeers) {
		_ = ic.s.Close()
		return
	}
	if c.idle == nil {
		c.idle = make(map[peer.ID][]idleChat)
	}
	c.idle[p] = append(q, ic)
}

// sendFrame sends the message frame f (type legacywire.FrameMsg) to the
// peer to as SendChatFrame does, but on a kept stream when there is one,
// and keeps the stream for the next frame when the exchange ends cleanly
// on chat v2 or v3. A kept
// stream that fails (the other end closed it, the connection went away)
// is dropped and the frame goes out again on a fresh stream: it carries
// the same message ID, which every receiver deduplicates.
func (d *Device) sendFrame(ctx context.Context, to peer.AddrInfo, f legacywire.ChatFrame) (legacywire.ChatAck, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, ChatRoundTripTimeout))
	defer cancel()
	if ic, ok := d.chats.get(to.ID, time.Now()); ok {
		ack, err := d.exchangeKept(ctx, to.ID, ic, f, false)
		if err == nil || ctx.Err() != nil {
			return ack, err
		}
		d.log.Debug("kept chat stream failed, opening a fresh one", "peer", to.ID, "err", err)
	}
	s, version, err := openChat(ctx, d.cfg.Host, to, d.cfg.MaxChatVersion)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	if version < 2 { // chat v1: one stream per message
		ack, _, err := chatOnce(ctx, s, version, d.cfg.Cert, to.ID, f)
		return ack, err
	}
	return d.exchangeKept(ctx, to.ID, idleChat{s: s}, f, true)
}

// exchangeKept writes f (after the hello on a fresh stream) on ic's
// stream without half-closing it, reads the ack, and keeps the stream for
// the next frame if the ack answers f; on any failure it resets the
// stream.
func (d *Device) exchangeKept(ctx context.Context, p peer.ID, ic idleChat, f legacywire.ChatFrame, fresh bool) (legacywire.ChatAck, error) {
	s := ic.s
	stop := resetOnCancel(ctx, s)
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)
	w := getWriter(s)
	var err error
	if fresh {
		err = legacywire.WriteFrame(w, legacywire.ChatHello{Cert: d.cfg.Cert})
	}
	if err == nil {
		err = legacywire.WriteFrame(w, f)
	}
	if err == nil {
		err = w.Flush()
	}
	putWriter(w)
	var (
		ack  legacywire.ChatAck
		kept bool
	)
	if err == nil {
		r := getReader(s)
		ack, kept, err = readChatAck(r, f.ID)
		kept = kept && r.Buffered() == 0
		putReader(r)
	}
	// A context that ends after the ack was read has reset the stream
	// (resetOnCancel): the ack stands, the stream is not kept.
	live := stop()
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return legacywire.ChatAck{}, fmt.Errorf("chat with %s: %w", p, err)
	}
	if !live || !kept {
		_ = s.Close()
		return ack, nil
	}
	_ = s.SetDeadline(time.Time{})
	ic.since = time.Now()
	d.chats.put(p, ic)
	return ack, nil
}
