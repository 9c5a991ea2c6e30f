package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// PuppetState is the state of the bridge's puppet session for one legacy
// user, stable in JSON and in the state label of gateway_bridge_puppets.
type PuppetState string

// Puppet states. A puppet is opening until the cloud answers its first
// open, then open; reconnecting once its link went down (or an open failed
// on the way), until the next use reopens it; refused when the cloud said
// the bridge may not act for the user (their home is the cloud: bad
// credentials for this user); closed after PuppetIdle without use.
const (
	PuppetOpening      PuppetState = "opening"
	PuppetOpen         PuppetState = "open"
	PuppetReconnecting PuppetState = "reconnecting"
	PuppetRefused      PuppetState = "refused"
	PuppetClosed       PuppetState = "closed"
)

var puppetStates = []PuppetState{PuppetOpening, PuppetOpen, PuppetReconnecting, PuppetRefused, PuppetClosed}

// Valid reports whether s is a known puppet state.
func (s PuppetState) Valid() bool { return slices.Contains(puppetStates, s) }

// DefaultPuppetIdle is how long a puppet stays open without a request
// before the bridge closes it (Config.PuppetIdle).
const DefaultPuppetIdle = 10 * time.Minute

// puppetForgetFactor: a puppet closed for this many idle periods is
// forgotten, so the table holds the users of the last hours, not every
// user ever bridged.
const puppetForgetFactor = 6

// MaxPuppetList bounds the puppets one status call lists.
const MaxPuppetList = 1000

// Open results, the result label of gateway_bridge_puppet_opens_total.
var puppetOpenResults = []string{resultOK, resultRefused, resultError}

// PuppetStatus is one puppet as the admin API shows it. User ids appear
// here, never in metric labels.
type PuppetStatus struct {
	User  string      `json:"user"`
	Link  int         `json:"link"`
	State PuppetState `json:"state"`
	// Since is when the puppet entered State; LastUsed its last request.
	Since    time.Time `json:"since"`
	LastUsed time.Time `json:"last_used"`
	// LastError is why the puppet was last refused or lost; it stays
	// after a reopen, with LastErrorAt, for the operator.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// PuppetSummary counts puppets by state (every state present) and lists
// some of them, in user order, when asked.
type PuppetSummary struct {
	Counts map[PuppetState]int `json:"counts"`
	List   []PuppetStatus      `json:"list,omitempty"`
}

// puppet is one row of the table; guarded by puppetTable.mu.
type puppet struct {
	st  PuppetStatus
	gen uint64 // the link generation the puppet was opened (or refused) on
	// busy is non-nil while an open or close is in flight; others wait
	// for it to close, so a user's acts never cross on the wire.
	busy chan struct{}
}

// puppetTable holds every puppet of the bridge. Puppets are opened
// lazily, at their user's first request (and again after a link drop,
// at the next request: no reopen storm after a cloud restart, since
// reopens follow traffic), and closed by sweep after idle without use.
type puppetTable struct {
	now     func() time.Time
	idle    time.Duration
	timeout time.Duration
	log     *slog.Logger
	gauge   *prometheus.GaugeVec
	opens   *prometheus.CounterVec

	mu     sync.Mutex
	by     map[string]*puppet
	counts map[PuppetState]int
}

func newPuppetTable(idle, timeout time.Duration, m *metrics, now func() time.Time, log *slog.Logger) *puppetTable {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &puppetTable{
		now: now, idle: idle, timeout: timeout, log: log,
		gauge: m.puppets, opens: m.puppetOpens,
		by: make(map[string]*puppet), counts: make(map[PuppetState]int),
	}
	for _, s := range puppetStates {
		t.gauge.WithLabelValues(string(s)).Set(0)
	}
	for _, r := range puppetOpenResults {
		t.opens.WithLabelValues(r)
	}
	return t
}

// move sets p's state (keeping Since when it stays) and its last error;
// t.mu is held.
func (t *puppetTable) move(p *puppet, state PuppetState, err error) {
	now := t.now().UTC()
	if err != nil {
		p.st.LastError, p.st.LastErrorAt = err.Error(), now
	}
	old := p.st.State
	if old == state {
		return
	}
	if old != "" {
		t.counts[old]--
		t.gauge.WithLabelValues(string(old)).Set(float64(t.counts[old]))
	}
	t.counts[state]++
	t.gauge.WithLabelValues(string(state)).Set(float64(t.counts[state]))
	p.st.State, p.st.Since = state, now
}

// acquire makes sure user has a puppet open on link's session c of
// generation gen, opening it if needed. It returns nil when the puppet
// is open, an error wrapping the cloud's *cloud.ServerError when the
// cloud refused it (state refused), or the transport error. A refused
// puppet is asked again at each use: the user may have come back to the
// overlay (a rollback), and a refusal costs the cloud no more than the
// refused request would have.
func (t *puppetTable) acquire(ctx context.Context, user string, link int, gen uint64, c *cloud.Client) error {
	for {
		t.mu.Lock()
		p := t.by[user]
		if p == nil {
			p = &puppet{st: PuppetStatus{User: user, Link: link}}
			t.by[user] = p
			t.move(p, PuppetOpening, nil)
		}
		if ch := p.busy; ch != nil {
			t.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		p.st.LastUsed = t.now().UTC()
		if p.st.State == PuppetOpen && p.gen == gen {
			t.mu.Unlock()
			return nil
		}
		if p.st.State == PuppetClosed {
			t.move(p, PuppetOpening, nil)
		}
		ch := make(chan struct{})
		p.busy = ch
		t.mu.Unlock()

		actx, cancel := context.WithTimeout(ctx, t.timeout)
		_, err := c.Act(actx, cloudwire.ActOpen, user)
		cancel()

		t.mu.Lock()
		p.busy = nil
		close(ch)
		var se *cloud.ServerError
		switch {
		case err == nil:
			p.gen = gen
			t.move(p, PuppetOpen, nil)
			t.opens.WithLabelValues(resultOK).Inc()
		case errors.As(err, &se) && se.Code == cloudwire.CodeForbidden:
			p.gen = gen
			t.move(p, PuppetRefused, err)
			t.opens.WithLabelValues(resultRefused).Inc()
			err = fmt.Errorf("bridge: the cloud refused to act for %s: %w", user, err)
		default:
			t.move(p, PuppetReconnecting, err)
			t.opens.WithLabelValues(resultError).Inc()
			err = fmt.Errorf("bridge: open puppet for %s: %w", user, err)
		}
		t.mu.Unlock()
		return err
	}
}

// linkDown moves the puppets open (or opening) on link to reconnecting:
// the cloud forgot them with the session. They reopen at their next use.
func (t *puppetTable) linkDown(link int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.by {
		if p.st.Link == link && (p.st.State == PuppetOpen || p.st.State == PuppetOpening) {
			t.move(p, PuppetReconnecting, errNoLink)
		}
	}
}

// run sweeps the table every tenth of the idle time until ctx ends.
func (t *puppetTable) run(ctx context.Context, clientOf func(link int) (*cloud.Client, uint64)) error {
	tick := time.NewTicker(max(t.idle/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.sweep(ctx, clientOf)
		}
	}
}

// sweep closes the puppets idle for t.idle (an open one with a close
// request on its link, the others in the table only) and forgets those
// closed long ago. Closes go one at a time: a sweep never floods a link.
func (t *puppetTable) sweep(ctx context.Context, clientOf func(link int) (*cloud.Client, uint64)) {
	now := t.now()
	type closing struct {
		p  *puppet
		ch chan struct{}
	}
	var closes []closing
	t.mu.Lock()
	for user, p := range t.by {
		if p.busy != nil {
			continue
		}
		idle := now.Sub(p.st.LastUsed)
		switch {
		case p.st.State == PuppetClosed && idle >= puppetForgetFactor*t.idle:
			t.counts[PuppetClosed]--
			t.gauge.WithLabelValues(string(PuppetClosed)).Set(float64(t.counts[PuppetClosed]))
			delete(t.by, user)
		case p.st.State == PuppetClosed || idle < t.idle:
		case p.st.State == PuppetOpen:
			ch := make(chan struct{})
			p.busy = ch
			closes = append(closes, closing{p, ch})
		default:
			t.move(p, PuppetClosed, nil)
		}
	}
	t.mu.Unlock()
	for _, cl := range closes {
		if c, gen := clientOf(cl.p.st.Link); c != nil && gen == cl.p.gen {
			actx, cancel := context.WithTimeout(ctx, t.timeout)
			if _, err := c.Act(actx, cloudwire.ActClose, cl.p.st.User); err != nil {
				t.log.Debug("puppet close", "link", cl.p.st.Link, "err", err)
			}
			cancel()
		}
		t.mu.Lock()
		t.move(cl.p, PuppetClosed, nil)
		cl.p.busy = nil
		close(cl.ch)
		t.mu.Unlock()
	}
}

// summary counts the puppets by state and lists up to limit of them (in
// user order) in state, or in any state when state is empty.
func (t *puppetTable) summary(state PuppetState, limit int) PuppetSummary {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := PuppetSummary{Counts: make(map[PuppetState]int, len(puppetStates))}
	for _, st := range puppetStates {
		s.Counts[st] = t.counts[st]
	}
	if limit <= 0 {
		return s
	}
	limit = min(limit, MaxPuppetList)
	for _, p := range t.by {
		if state == "" || p.st.State == state {
			s.List = append(s.List, p.st)
		}
	}
	slices.SortFunc(s.List, func(a, b PuppetStatus) int { return strings.Compare(a.User, b.User) })
	if len(s.List) > limit {
		s.List = s.List[:limit]
	}
	return s
}

// Puppets returns the bridge's puppet sessions: counts by state, and up to
// limit of them (at most MaxPuppetList) in state, or in any state when
// state is empty.
func (b *Bridge) Puppets(state PuppetState, limit int) PuppetSummary {
	return b.puppets.summary(state, limit)
}
