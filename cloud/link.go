package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Defaults for LinkConfig fields left zero.
const (
	DefaultBackoffMin = 250 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
)

const (
	// stableAfter is how long a connection must have lasted for the next
	// reconnect to start again from BackoffMin: a service that welcomes
	// and then drops every session at once is retried with growing waits.
	stableAfter = 5 * time.Second
	// retryPauseMin and retryPauseMax bound the pause before a request
	// the service answered with "internal" is sent again.
	retryPauseMin = 50 * time.Millisecond
	retryPauseMax = 2 * time.Second
)

// LinkConfig configures a Link.
type LinkConfig struct {
	// Client is how every connection is dialled. Client.Hello.Cursor is
	// where the first connection resumes; later ones resume from the
	// cursor of the last event put on Events.
	Client ClientConfig
	// BackoffMin and BackoffMax bound the reconnect backoff (full jitter,
	// doubling after every failed attempt); 0 means DefaultBackoffMin and
	// DefaultBackoffMax.
	BackoffMin, BackoffMax time.Duration
	// OnConnect, when set, is told of every welcome, on Run's goroutine;
	// it must not block.
	OnConnect func(cloudwire.Welcome)
}

// Validate reports a configuration NewLink cannot run with.
func (c LinkConfig) Validate() error {
	var errs []error
	if c.Client.URL == "" {
		errs = append(errs, errors.New("Client.URL is required"))
	}
	if c.BackoffMin < 0 || c.BackoffMax < 0 {
		errs = append(errs, errors.New("negative BackoffMin or BackoffMax"))
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax {
		errs = append(errs, errors.New("BackoffMin above BackoffMax"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cloud: link config: %w", errors.Join(errs...))
	}
	return nil
}

// Link is a session with the cloud service that outlives its connections:
// Run dials, and after a drop or a "going away" close dials again (after
// the close's retry hint or a 503's Retry-After when there is one, else
// after a jittered exponential backoff), resuming from the cursor of the
// last event it put on Events, so that Events carries every inbox event
// once, in cursor order, across reconnects. Requests wait for a
// connection and are sent again on the next one when theirs dropped
// before the answer, with the same message id, which the service
// answers with the original ack.
//
// Requests may come from many goroutines at once: they are pipelined on
// the connection and answers are matched by ref, so on a bridge session
// (which the service runs concurrently across acting users, in order per
// user; see PROTOCOL.md) one user's slow request does not hold up
// another's. Callers that need one user's requests in order make each
// after the previous one's answer.
//
// Run stops for good when the service refuses the client in a way that a
// retry cannot change: close 4401, 4403 or 4426 (a *CloseError, or an
// *UpgradeRequiredError), or HTTP 401 or 403 before the upgrade (a
// *DialError).
//
// Calls are not on Link: a call's state is live and ends with the
// connection that holds it.
type Link struct {
	cfg    LinkConfig
	log    *slog.Logger
	events chan cloudwire.Event
	live   chan cloudwire.Frame
	cursor atomic.Uint64
	conns  atomic.Int64

	mu      sync.Mutex
	cur     *Client       // nil while not connected
	changed chan struct{} // closed and replaced whenever cur changes or the link ends
	welcome cloudwire.Welcome
	started bool
	ended   bool
	err     error
}

// NewLink returns a Link; Run connects it.
func NewLink(cfg LinkConfig) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = min(DefaultBackoffMin, max(cfg.BackoffMax, 1))
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = max(DefaultBackoffMax, cfg.BackoffMin)
	}
	if cfg.Client.EventBuffer <= 0 {
		cfg.Client.EventBuffer = DefaultEventBuffer
	}
	log := cfg.Client.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Link{
		cfg:     cfg,
		log:     log.With("component", "cloud-link"),
		events:  make(chan cloudwire.Event, cfg.Client.EventBuffer),
		live:    make(chan cloudwire.Frame, liveBuffer),
		changed: make(chan struct{}),
	}
	l.cursor.Store(cfg.Client.Hello.Cursor)
	return l, nil
}

// Events delivers inbox events in cursor order, each once, across
// reconnects. It is closed when Run returns. It must be drained, as
// Client.Events.
func (l *Link) Events() <-chan cloudwire.Event { return l.events }

// Live delivers the live-only frames of every connection (as Client.Live,
// a PresenceSnapshot after each welcome); frames that do not fit are
// dropped. It is closed when Run returns.
func (l *Link) Live() <-chan cloudwire.Frame { return l.live }

// Cursor returns the cursor of the last event put on Events.
func (l *Link) Cursor() uint64 { return l.cursor.Load() }

// Connections returns how many connections the service welcomed so far.
func (l *Link) Connections() int64 { return l.conns.Load() }

// Welcome returns the current connection's welcome; ok is false while
// disconnected.
func (l *Link) Welcome() (w cloudwire.Welcome, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.welcome, l.cur != nil
}

// Run keeps the link connected until ctx ends (it returns nil) or the
// service refuses the client for good (it returns the refusal). It
// returns once the connection is closed, and closes Events and Live.
func (l *Link) Run(ctx context.Context) error {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return errors.New("cloud: Link.Run called twice")
	}
	l.started = true
	l.mu.Unlock()
	err := l.run(ctx)
	l.mu.Lock()
	l.ended, l.err = true, err
	if err == nil {
		l.err = ErrClientClosed
	}
	close(l.changed)
	l.mu.Unlock()
	close(l.events)
	close(l.live)
	return err
}

func (l *Link) run(ctx context.Context) error {
	backoff := l.cfg.BackoffMin
	for {
		cc := l.cfg.Client
		cc.Hello.Cursor = l.cursor.Load()
		c, err := Dial(ctx, cc)
		if err == nil {
			start := time.Now()
			l.conns.Add(1)
			l.setCurrent(c)
			if fn := l.cfg.OnConnect; fn != nil {
				fn(c.Welcome())
			}
			err = l.pump(ctx, c)
			l.setCurrent(nil)
			if time.Since(start) >= stableAfter {
				backoff = l.cfg.BackoffMin
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if permanent(err) {
			l.log.Warn("cloud refused the client; not reconnecting", "err", err)
			return err
		}
		wait := hintedDelay(err)
		if wait == 0 {
			// Full jitter: clients dropped together do not come back
			// together.
			wait = time.Duration(rand.Int64N(int64(backoff))) + time.Millisecond
		}
		backoff = min(2*backoff, l.cfg.BackoffMax)
		l.log.Info("cloud connection down; reconnecting", "err", err, "retry_in", wait, "cursor", l.cursor.Load())
		if !sleep(ctx, wait) {
			return nil
		}
	}
}

// sleep waits for d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pump forwards c's events (skipping any at or below the cursor) and live
// frames until c ends, and returns why it ended.
func (l *Link) pump(ctx context.Context, c *Client) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() {
		for f := range c.Live() {
			select {
			case l.live <- f:
			default:
				l.log.Debug("live frame dropped", "type", f.FrameType())
			}
		}
	})
	for ev := range c.Events() {
		if ev.Cursor <= l.cursor.Load() {
			continue
		}
		select {
		case l.events <- ev:
			l.cursor.Store(ev.Cursor)
		case <-ctx.Done():
			for range c.Events() {
			}
		}
	}
	wg.Wait()
	<-c.Done()
	return c.Err()
}

func (l *Link) setCurrent(c *Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur = c
	if c != nil {
		l.welcome = c.Welcome()
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// permanent reports a refusal that reconnecting cannot change.
func permanent(err error) bool {
	var ce *CloseError
	if errors.As(err, &ce) {
		switch ce.Code {
		case cloudwire.CloseUnauthorized, cloudwire.CloseForbidden, cloudwire.CloseUpgradeRequired:
			return true
		}
	}
	var de *DialError
	if errors.As(err, &de) {
		return de.StatusCode == http.StatusUnauthorized || de.StatusCode == http.StatusForbidden
	}
	return false
}

// hintedDelay is the wait the service asked for: the retry hint of a
// "going away" close or the Retry-After of a 503; 0 when it gave none.
func hintedDelay(err error) time.Duration {
	var ce *CloseError
	if errors.As(err, &ce) && ce.Code == cloudwire.CloseGoingAway && ce.Reason.RetryMS > 0 {
		return time.Duration(ce.Reason.RetryMS) * time.Millisecond
	}
	var de *DialError
	if errors.As(err, &de) && de.RetryAfter > 0 {
		return de.RetryAfter
	}
	return 0
}

// client waits for a connection other than failed (nil: any).
func (l *Link) client(ctx context.Context, failed *Client) (*Client, error) {
	for {
		l.mu.Lock()
		c, ch, ended, err := l.cur, l.changed, l.ended, l.err
		l.mu.Unlock()
		if ended {
			return nil, err
		}
		if c != nil && c != failed {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// do runs fn on the current connection until it succeeds, the service
// refuses it (a *ServerError other than internal or unavailable), ctx
// ends or the link ends. A request whose connection ended before the
// answer runs again on the next connection; one answered "internal" runs
// again after a pause; "unavailable" (the node is shutting down) waits for
// the next connection.
func (l *Link) do(ctx context.Context, fn func(*Client) error) error {
	var failed *Client
	pause := retryPauseMin
	for {
		c, err := l.client(ctx, failed)
		if err != nil {
			return err
		}
		err = fn(c)
		if err == nil || ctx.Err() != nil {
			return err
		}
		var se *ServerError
		switch {
		case errors.As(err, &se) && se.Code == cloudwire.CodeInternal:
			if !sleep(ctx, pause) {
				return ctx.Err()
			}
			pause = min(2*pause, retryPauseMax)
		case errors.As(err, &se) && se.Code == cloudwire.CodeUnavailable:
			failed = c
		case se != nil:
			return err
		case c.Err() != nil:
			failed = c // the connection ended under the request
		default:
			return err // a local failure (the frame could not be encoded)
		}
	}
}

// linkRequest runs a request with l.do and returns its answer.
func linkRequest[T any](ctx context.Context, l *Link, fn func(*Client) (T, error)) (T, error) {
	var out T
	err := l.do(ctx, func(c *Client) (err error) {
		out, err = fn(c)
		return err
	})
	return out, err
}

// Send writes a message and waits for its ack, across reconnects. An empty
// MsgID is filled with a new UUIDv7 once, before the first attempt, so
// every attempt carries the same id; the ack of a resend has Duplicate set
// when an earlier attempt was stored.
func (l *Link) Send(ctx context.Context, s cloudwire.Send) (cloudwire.Ack, error) {
	var err error
	if s.MsgID, err = orNewID(s.MsgID); err != nil {
		return cloudwire.Ack{}, err
	}
	return linkRequest(ctx, l, func(c *Client) (cloudwire.Ack, error) { return c.Send(ctx, s) })
}

// ReceiptAck reports a receipt and waits for the service to store it,
// across reconnects (receipts are idempotent). See Client.ReceiptAck.
func (l *Link) ReceiptAck(ctx context.Context, r cloudwire.Receipt) (cloudwire.Ack, error) {
	return linkRequest(ctx, l, func(c *Client) (cloudwire.Ack, error) { return c.ReceiptAck(ctx, r) })
}

// Group creates a group or changes its members, across reconnects; an
// empty MsgID is filled once, as for Send.
func (l *Link) Group(ctx context.Context, g cloudwire.Group) (cloudwire.Ack, error) {
	var err error
	if g.MsgID, err = orNewID(g.MsgID); err != nil {
		return cloudwire.Ack{}, err
	}
	return linkRequest(ctx, l, func(c *Client) (cloudwire.Ack, error) { return c.Group(ctx, g) })
}

// History fetches a page of a conversation's log, across reconnects.
func (l *Link) History(ctx context.Context, h cloudwire.History) (cloudwire.Page, error) {
	return linkRequest(ctx, l, func(c *Client) (cloudwire.Page, error) { return c.History(ctx, h) })
}

// SetPresence reports this device's presence on the current connection,
// waiting for one. A presence is not carried over a reconnect: the
// service reports a new session as active.
func (l *Link) SetPresence(ctx context.Context, state string) error {
	c, err := l.client(ctx, nil)
	if err != nil {
		return err
	}
	return c.SetPresence(ctx, state)
}
