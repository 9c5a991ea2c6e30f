package cloud

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Puppets (protocol v10). A bridge session announces each user it is about
// to act for with an act request: the open is checked once against
// Config.ActFor (a refusal is an error frame with code forbidden, which
// the bridge shows as the user's puppet state "refused"), the session
// remembers its open puppets, and the node counts them in
// gateway_cloud_bridge_puppets. A close, or the end of the session,
// forgets them.
//
// An open puppet grants nothing: every request naming a user is still
// checked by actor against ActFor, so a user who moves to the cloud after
// their puppet was opened is refused at their next request, with no
// invalidation to get right. ActFor reads memdb, so the repeated check
// costs a map lookup; the puppet is what makes the bridge's per-user
// sessions visible (and refused ones known before a message waits on
// them), not a cache of the decision. Requests for a user with no open
// puppet are still served, as before v10.
//
// Acts are dispatched like sends and receipts (dispatch.go), in order with
// the same user's requests, so an open is answered before the requests
// the bridge sends after it for that user, and no other user waits on it.

// puppetSet is the puppets one bridge session holds open. The reader
// creates it at the session's first act; dispatcher workers and the
// reader (when reading ends) use it.
type puppetSet struct {
	gauge prometheus.Gauge

	mu   sync.Mutex
	open map[string]struct{}
}

// set changes whether as is open and returns how many are open after it.
func (p *puppetSet) set(as string, open bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, was := p.open[as]
	switch {
	case open && !was:
		p.open[as] = struct{}{}
		p.gauge.Inc()
	case !open && was:
		delete(p.open, as)
		p.gauge.Dec()
	}
	return len(p.open)
}

// clear forgets every puppet: the session is over.
func (p *puppetSet) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gauge.Sub(float64(len(p.open)))
	p.open = nil
}

// dispatchAct hands an act to the dispatcher, behind the requests already
// read for the same user; the reader creates the session's set at the
// first one. False means stop reading.
func (s *session) dispatchAct(f cloudwire.Act) bool {
	if s.puppets == nil {
		s.puppets = &puppetSet{gauge: s.svc.m.puppets, open: make(map[string]struct{})}
	}
	return s.dispatch(f.As, f)
}

// handleAct opens or closes a puppet and answers acting, or an error frame
// (forbidden: not a bridge session, or ActFor refuses the user).
func (s *session) handleAct(f cloudwire.Act) {
	if !s.bridge || s.puppets == nil {
		s.pushError(f.Ref, cloudwire.CodeForbidden, "only bridge sessions act for other users")
		return
	}
	open := f.Op == cloudwire.ActOpen
	if open {
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		_, err := s.actor(ctx, f.As)
		cancel()
		if err != nil {
			s.puppets.set(f.As, false)
			code := errorCode(err)
			s.pushError(f.Ref, code, s.publicMessage(code, err))
			return
		}
	}
	n := s.puppets.set(f.As, open)
	s.pushFrame(cloudwire.Acting{Ref: f.Ref, Op: f.Op, As: f.As, Puppets: n})
}

// closePuppets forgets the session's puppets once its reader has ended and
// every dispatched request has been answered.
func (s *session) closePuppets() {
	if s.puppets != nil {
		s.puppets.clear()
	}
}

// feedHead is the head of a session's initial sync: the hello's cursor for
// a request-only bridge session (v10 no_feed: nothing to replay), the
// inbox head otherwise.
func (s *session) feedHead(ctx context.Context, h cloudwire.Hello) (uint64, error) {
	if s.noFeed {
		return h.Cursor, nil
	}
	return s.svc.store.head(ctx, s.user, s.bridge)
}

// Act opens (cloudwire.ActOpen) or closes (ActClose) a puppet for as on a
// bridge session and waits for the answer. A refusal is a *ServerError
// (code forbidden when the bridge may not act for as).
func (c *Client) Act(ctx context.Context, op, as string) (cloudwire.Acting, error) {
	f := cloudwire.Act{Ref: c.ref(), Op: op, As: as}
	r, err := c.roundTrip(ctx, f.Ref, f)
	return r.acting, err
}
