package cloud

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// DefaultEventBuffer is the default capacity of Client.Events.
const DefaultEventBuffer = 1024

// liveBuffer is the capacity of Client.Live.
const liveBuffer = 256

// dialTimeout bounds the handshake and the wait for welcome when the
// caller's context has no earlier deadline.
const dialTimeout = 10 * time.Second

// ClientConfig configures Dial.
type ClientConfig struct {
	// URL of the service's WebSocket endpoint, e.g. ws://127.0.0.1:7070/v1/ws.
	URL string
	// Token is sent as "Authorization: Bearer". Leave it empty and set
	// Hello.Token to authenticate in the first frame instead, as browsers do.
	Token string
	// Hello is sent as the first frame; set Device, and Cursor to resume.
	Hello cloudwire.Hello
	// Logger is tagged component=cloud-client; nil discards.
	Logger *slog.Logger
	// EventBuffer is the capacity of Events; 0 means DefaultEventBuffer.
	EventBuffer int
	// Header holds extra handshake headers (Origin, for instance).
	Header http.Header
}

// Client is a session with the cloud service, as used by the bridge and by
// tests. It has one reader and one writer goroutine; Close stops both.
//
// Events must be drained: when its buffer is full the reader waits, the
// socket stops being read, and the service eventually closes the session
// as a slow consumer (reconnect with Cursor to resume).
type Client struct {
	conn    *websocket.Conn
	log     *slog.Logger
	welcome cloudwire.Welcome

	events     chan cloudwire.Event
	live       chan cloudwire.Frame
	synced     chan struct{}
	syncedOnce sync.Once
	cursor     atomic.Uint64
	nextRef    atomic.Uint64

	out        chan []byte
	closeReq   chan struct{}
	closeOnce  sync.Once
	readerDone chan struct{}
	writerDone chan struct{}
	done       chan struct{}

	mu      sync.Mutex
	pending map[string]chan result
	ended   bool
	err     error
}

type result struct {
	ack    cloudwire.Ack
	page   cloudwire.Page
	acting cloudwire.Acting
	err    error
}

// Dial connects, sends the hello and returns once the welcome has arrived.
// A refused handshake is a *DialError, a refused hello a *CloseError.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "cloud-client")
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	header := http.Header{}
	for k, v := range cfg.Header {
		header[k] = v
	}
	if cfg.Token != "" {
		header.Set("Authorization", "Bearer "+cfg.Token)
	}
	d := websocket.Dialer{
		HandshakeTimeout: dialTimeout,
		Subprotocols:     []string{cloudwire.Subprotocol},
		ReadBufferSize:   4 << 10,
		WriteBufferSize:  4 << 10,
	}
	conn, resp, err := d.DialContext(ctx, cfg.URL, header)
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return nil, &DialError{StatusCode: resp.StatusCode, Body: string(body), RetryAfter: retryAfter(resp.Header.Get("Retry-After"))}
		}
		return nil, fmt.Errorf("cloud: dial %s: %w", cfg.URL, err)
	}
	if conn.Subprotocol() != cloudwire.Subprotocol {
		conn.Close()
		return nil, fmt.Errorf("%w: server chose subprotocol %q", ErrProtocol, conn.Subprotocol())
	}
	w, err := handshake(ctx, conn, cfg.Hello)
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &Client{
		conn: conn, log: log.With("session", w.Session), welcome: w,
		events:     make(chan cloudwire.Event, cfg.EventBuffer),
		live:       make(chan cloudwire.Frame, liveBuffer),
		synced:     make(chan struct{}),
		out:        make(chan []byte, 64),
		closeReq:   make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
		pending:    make(map[string]chan result),
	}
	c.cursor.Store(cfg.Hello.Cursor)
	conn.SetPingHandler(func(data string) error {
		_ = conn.SetReadDeadline(time.Now().Add(pongWait))
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	go c.readLoop()
	go c.writeLoop()
	go func() {
		<-c.readerDone
		<-c.writerDone
		close(c.done)
	}()
	return c, nil
}

// retryAfter parses a Retry-After header in seconds; 0 when absent or not
// a number of seconds.
func retryAfter(h string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}

// handshake writes the hello and reads the welcome on the caller's
// goroutine, before the client's goroutines start.
func handshake(ctx context.Context, conn *websocket.Conn, h cloudwire.Hello) (cloudwire.Welcome, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(dialTimeout)
	}
	// A cancel does not interrupt a blocked read or write; closing does.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b, err := cloudwire.Encode(h)
	if err != nil {
		return cloudwire.Welcome{}, err
	}
	_ = conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		return cloudwire.Welcome{}, fmt.Errorf("cloud: send hello: %w", err)
	}
	_ = conn.SetReadDeadline(deadline)
	_, msg, err := conn.ReadMessage()
	if err != nil {
		if ctx.Err() != nil {
			return cloudwire.Welcome{}, fmt.Errorf("cloud: wait for welcome: %w", ctx.Err())
		}
		return cloudwire.Welcome{}, closeErr(err)
	}
	f, err := cloudwire.Decode(msg)
	if err != nil {
		return cloudwire.Welcome{}, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	switch f := f.(type) {
	case cloudwire.Welcome:
		return f, nil
	case cloudwire.Error:
		return cloudwire.Welcome{}, &ServerError{Code: f.Code, Message: f.Message}
	}
	return cloudwire.Welcome{}, fmt.Errorf("%w: expected welcome, got %s", ErrProtocol, f.FrameType())
}

// closeErr turns a WebSocket close into a *CloseError.
func closeErr(err error) error {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		reason, _ := cloudwire.ParseCloseReason(ce.Text)
		out := &CloseError{Code: ce.Code, Text: ce.Text, Reason: reason}
		if ce.Code == cloudwire.CloseUpgradeRequired {
			up, _ := cloudwire.ParseUpgradeRequired(ce.Text)
			return &UpgradeRequiredError{Reason: up, Close: out}
		}
		return out
	}
	return err
}

// Welcome returns the server's welcome.
func (c *Client) Welcome() cloudwire.Welcome { return c.welcome }

// Events delivers inbox events in cursor order, first the replay after
// Hello.Cursor, then live ones. It is closed when the connection ends.
func (c *Client) Events() <-chan cloudwire.Event { return c.events }

// Live delivers the live-only frames: the PresenceSnapshot sent after
// welcome, others' Presence and Typing, CallState, and
// Error frames the server could not attribute to a request (a presence or
// typing frame refused, for instance). When nobody drains it, frames that
// do not fit in its buffer are dropped: they never hold up Events. It is
// closed when the connection ends.
func (c *Client) Live() <-chan cloudwire.Frame { return c.live }

// SetPresence reports this device's presence (PresenceActive or
// PresenceIdle) to the people who share a conversation with its user.
// The service answers only refusals, on Live.
func (c *Client) SetPresence(ctx context.Context, state string) error {
	return c.fireAndForget(ctx, cloudwire.Presence{State: state})
}

// SetTyping reports that the user is (or stopped) typing in conv.
func (c *Client) SetTyping(ctx context.Context, conv string, typing bool) error {
	return c.fireAndForget(ctx, cloudwire.Typing{Conv: conv, Typing: typing})
}

func (c *Client) fireAndForget(ctx context.Context, f cloudwire.Frame) error {
	b, err := cloudwire.Encode(f)
	if err != nil {
		return err
	}
	select {
	case c.out <- b:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return c.Err()
	}
}

func (c *Client) deliverLive(f cloudwire.Frame) {
	select {
	case c.live <- f:
	default:
		c.log.Debug("live frame dropped", "type", f.FrameType())
	}
}

// Synced is closed when the server has sent every event up to the welcome's
// head (the synced frame arrived).
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Cursor returns the cursor of the last event put on Events (or the hello's
// cursor before any); reconnect with it to resume.
func (c *Client) Cursor() uint64 { return c.cursor.Load() }

// Done is closed when the connection has ended and both goroutines exited.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the connection ended: ErrClientClosed after Close, a
// *CloseError when the server closed it, or the transport error. It is nil
// while the connection is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection with 1000 and waits for the goroutines to
// exit. It is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.setErr(ErrClientClosed)
		close(c.closeReq)
	})
	<-c.done
	return nil
}

// Send writes a message and waits for its ack. An empty MsgID is filled with
// a new UUIDv7 (returned in the ack). A refusal is a *ServerError; resending
// the same MsgID after any error is safe.
func (c *Client) Send(ctx context.Context, s cloudwire.Send) (cloudwire.Ack, error) {
	var err error
	if s.MsgID, err = orNewID(s.MsgID); err != nil {
		return cloudwire.Ack{}, err
	}
	s.Ref = c.ref()
	return c.request(ctx, s.Ref, s)
}

// Receipt reports a delivery or read receipt and waits for the server to
// store it.
func (c *Client) Receipt(ctx context.Context, r cloudwire.Receipt) error {
	_, err := c.ReceiptAck(ctx, r)
	return err
}

// ReceiptAck is Receipt returning the server's ack. For a cumulative
// receipt (UpTo set) the ack's Seq is the device's watermark, and
// Duplicate says it had already reached UpTo.
func (c *Client) ReceiptAck(ctx context.Context, r cloudwire.Receipt) (cloudwire.Ack, error) {
	r.Ref = c.ref()
	return c.request(ctx, r.Ref, r)
}

// Group creates a group or changes its members and waits for the change
// to be stored. An empty MsgID is filled with a new UUIDv7; the ack's Conv
// is the group and Seq the change's place in it.
func (c *Client) Group(ctx context.Context, g cloudwire.Group) (cloudwire.Ack, error) {
	var err error
	if g.MsgID, err = orNewID(g.MsgID); err != nil {
		return cloudwire.Ack{}, err
	}
	if g.Members == nil {
		g.Members = []string{}
	}
	g.Ref = c.ref()
	return c.request(ctx, g.Ref, g)
}

// Call starts a call (Op invite, To set; an empty CallID is filled with a
// new UUIDv7, returned as the ack's MsgID) or acts on one (answer, reject,
// cancel, hangup). The call's states arrive on Live as CallState frames.
func (c *Client) Call(ctx context.Context, f cloudwire.Call) (cloudwire.Ack, error) {
	var err error
	if f.CallID, err = orNewID(f.CallID); err != nil {
		return cloudwire.Ack{}, err
	}
	f.Ref = c.ref()
	return c.request(ctx, f.Ref, f)
}

// History fetches a page of a conversation's log: the latest messages,
// those before h.Before (paging backwards) or after h.After (filling a gap).
func (c *Client) History(ctx context.Context, h cloudwire.History) (cloudwire.Page, error) {
	h.Ref = c.ref()
	r, err := c.roundTrip(ctx, h.Ref, h)
	return r.page, err
}

// orNewID returns id, or a new UUIDv7 when id is empty: message and call
// ids are assigned once, at the origin.
func orNewID(id string) (string, error) {
	if id != "" {
		return id, nil
	}
	u, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func (c *Client) ref() string {
	return strconv.FormatUint(c.nextRef.Add(1), 36)
}

func (c *Client) request(ctx context.Context, ref string, f cloudwire.Frame) (cloudwire.Ack, error) {
	r, err := c.roundTrip(ctx, ref, f)
	return r.ack, err
}

// roundTrip sends a request and waits for the frame answering its ref.
func (c *Client) roundTrip(ctx context.Context, ref string, f cloudwire.Frame) (result, error) {
	b, err := cloudwire.Encode(f)
	if err != nil {
		return result{}, err
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.ended {
		err := c.err
		c.mu.Unlock()
		return result{}, err
	}
	c.pending[ref] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.pending, ref)
		c.mu.Unlock()
	}
	select {
	case c.out <- b:
	case <-ctx.Done():
		forget()
		return result{}, ctx.Err()
	case <-c.done:
		forget()
		return result{}, c.Err()
	}
	select {
	case r := <-ch:
		return r, r.err
	case <-ctx.Done():
		forget()
		return result{}, ctx.Err()
	}
}

func (c *Client) setErr(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// readLoop reads frames until the connection ends, then fails the pending
// requests and closes Events.
func (c *Client) readLoop() {
	defer func() {
		c.mu.Lock()
		c.ended = true
		err := c.err
		for ref, ch := range c.pending {
			ch <- result{err: err}
			delete(c.pending, ref)
		}
		c.mu.Unlock()
		close(c.events)
		close(c.live)
		close(c.readerDone)
	}()
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
		f, err := c.readFrame()
		if err != nil {
			c.setErr(closeErr(err))
			return
		}
		if f == nil {
			continue // undecodable, logged
		}
		switch f := f.(type) {
		case cloudwire.Event:
			if !c.deliver(f) {
				continue // closing: keep reading until the server's close
			}
		case cloudwire.Synced:
			c.syncedOnce.Do(func() { close(c.synced) })
		case cloudwire.Ack:
			c.answer(f.Ref, result{ack: f})
		case cloudwire.Page:
			c.answer(f.Ref, result{page: f})
		case cloudwire.Acting:
			c.answer(f.Ref, result{acting: f})
		case cloudwire.Error:
			if f.Ref == "" || !c.answer(f.Ref, result{err: &ServerError{Code: f.Code, Message: f.Message}}) {
				c.log.Debug("error from server", "code", f.Code, "message", f.Message)
				c.deliverLive(f)
			}
		case cloudwire.Presence, cloudwire.PresenceSnapshot, cloudwire.Typing, cloudwire.CallState:
			c.deliverLive(f)
		default:
			c.log.Warn("unexpected frame from server", "type", f.FrameType())
		}
	}
}

func (c *Client) deliver(ev cloudwire.Event) bool {
	select {
	case c.events <- ev:
		c.cursor.Store(ev.Cursor)
		return true
	case <-c.closeReq:
		return false
	}
}

func (c *Client) answer(ref string, r result) bool {
	c.mu.Lock()
	ch, ok := c.pending[ref]
	delete(c.pending, ref)
	c.mu.Unlock()
	if ok {
		ch <- r
	}
	return ok
}

// readFrame reads one message into a buffer of framePool, which goes back
// once decoded (decoding copies what it keeps). An undecodable frame is
// logged and returned as nil; err is a read's error.
func (c *Client) readFrame() (cloudwire.Frame, error) {
	_, r, err := c.conn.NextReader()
	if err != nil {
		return nil, err
	}
	buf := framePool.Get().(*bytes.Buffer)
	defer framePool.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	f, err := cloudwire.Decode(buf.Bytes())
	if err != nil {
		c.log.Warn("undecodable frame from server", "err", err)
		return nil, nil
	}
	return f, nil
}

// writeLoop is the client's only writer of data frames. On Close it sends
// close 1000 and waits briefly for the server's answer.
func (c *Client) writeLoop() {
	defer close(c.writerDone)
	for {
		select {
		case b := <-c.out:
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				c.setErr(err)
				c.conn.Close()
				return
			}
		case <-c.closeReq:
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			_ = c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(writeWait))
			t := time.NewTimer(closeGrace)
			select {
			case <-c.readerDone:
			case <-t.C:
			}
			t.Stop()
			c.conn.Close()
			return
		case <-c.readerDone:
			c.conn.Close()
			return
		}
	}
}
