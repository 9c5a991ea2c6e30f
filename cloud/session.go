package cloud

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// WebSocket timing, shared by the service and the client.
const (
	// writeWait bounds one frame write.
	writeWait = 10 * time.Second
	// pongWait is how long a peer may stay silent (no frame, no pong)
	// before the connection is considered dead.
	pongWait = 60 * time.Second
	// pingPeriod is how often the service pings; below pongWait so that a
	// live peer always answers in time.
	pingPeriod = pongWait * 9 / 10
	// helloTimeout bounds the wait for the first frame after the upgrade.
	helloTimeout = 10 * time.Second
	// closeGrace is how long a closing side waits for the peer's close
	// frame (and flushes queued frames) before dropping the connection.
	closeGrace = time.Second
	// opTimeout bounds the storage work of one request.
	opTimeout = 15 * time.Second
	// bridgeQueueFactor multiplies the queue of bridge sessions, which
	// carry every user's events.
	bridgeQueueFactor = 16
	// pendingFactor sizes the buffer of live events held during the
	// initial sync, relative to the queue.
	pendingFactor = 8
)

var errFrameTooLarge = errors.New("frame too large")

// framePool recycles read buffers between frames and sessions.
var framePool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// session is one WebSocket connection. The handler's goroutine sets it up
// (serve: hello, authentication, welcome) and hands over to a fresh reader
// goroutine (readRequests), the only goroutine an idle session has. Writes
// go through a bounded queue drained by a writer goroutine that exists only
// while there is something to write (writeFrames); pings come from a timer,
// and closing runs on its own short-lived goroutine (closeAndWait). A sync
// goroutine replays the inbox and then hands over to live delivery
// (syncLoop).
//
// An idle session is kept small (gateway bench cloud-idle): no context of
// its own (only the sync has one, while it runs), no read or write buffer
// beyond the library's small bufio reader, and a reader goroutine whose
// stack was never grown by the set-up.
type session struct {
	svc  *Service
	conn *websocket.Conn
	id   string
	log  *slog.Logger
	// ctx is the service's base context, canceled on forced shutdown: a
	// request runs on the reader goroutine or, for a bridge session's
	// sends and receipts, on a dispatcher worker the reader waits for
	// before it ends, so none is in flight once the reader ends.
	ctx context.Context
	// stop cancels the initial sync (syncLoop); set by open, called when
	// the reader ends.
	stop context.CancelFunc

	// Set by serve before the session is added to the hub; read-only after.
	user, role, device, token string
	kind                      string // kindNative, kindBrowser or kindBridge
	bridge                    bool
	noFeed                    bool // a request-only bridge session (v10; puppets.go)
	welcomed                  bool
	notice                    string // the version policy's notice, for welcome (notice.go)

	// wrMu is held by whoever writes data frames or the close frame (the
	// writer or the closer), so that they never interleave.
	wrMu sync.Mutex
	// wmu guards the queue and the writer's state.
	wmu      sync.Mutex
	queue    [][]byte      // frames waiting; nil when empty, so idle sessions hold no buffer
	qcap     int           // set by open; 0 before: nothing but a close frame is written
	writing  bool          // a writeFrames goroutine runs
	finished bool          // the connection is closed: nothing more is written
	room     chan struct{} // non-nil while a push waits; closed when frames are taken
	ping     *time.Timer

	closing    chan struct{}
	closeOnce  sync.Once
	finishOnce sync.Once
	closeCode  int
	closeText  string
	readerDone chan struct{}
	writerDone chan struct{} // closed once the connection is closed
	syncDone   chan struct{}

	// setUp gives back the session's admission slot (Service.admit); the
	// sync goroutine calls it when the initial sync ends, the handler when
	// the session ends.
	setUp func()

	// welcomeSent is set once welcome is queued: live-only frames
	// (dispatchEphemeral) must not overtake it.
	welcomeSent atomic.Bool
	// disp runs a bridge session's sends and receipts (dispatch.go); nil
	// until the first one, and always for user sessions. Reader only.
	disp *dispatcher
	// puppets are a bridge session's open puppets (puppets.go); nil until
	// its first act.
	puppets *puppetSet
	// Used by the handler goroutine only (presence.go).
	limit      tokenBucket
	contacts   []string
	contactsAt time.Time
	touchedAt  time.Time

	mu         sync.Mutex
	syncing    bool
	pending    []delivery
	maxPending int
	lastSent   uint64
}

func newSession(svc *Service, conn *websocket.Conn, id string) *session {
	return &session{
		svc: svc, conn: conn, id: id, ctx: svc.baseCtx, stop: func() {},
		log:        svc.log.With("session", id, "remote", conn.RemoteAddr().String()),
		limit:      tokenBucket{rate: svc.cfg.PresenceRate, burst: float64(svc.cfg.PresenceBurst)},
		closing:    make(chan struct{}),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		syncDone:   make(chan struct{}),
	}
}

// closeWith starts closing the session with a close frame carrying code and
// text. The first call wins; later calls do nothing.
func (s *session) closeWith(code int, text string) {
	s.closeOnce.Do(func() {
		s.closeCode, s.closeText = code, text
		close(s.closing)
		go s.closeAndWait()
		s.svc.m.closed(code)
		s.log.Debug("closing session", "code", code, "reason", text)
	})
}

func (s *session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// enqueue results.
const (
	queued = iota
	queueFull
	queueClosed
)

// enqueue adds b to the write queue and starts the writer if none runs.
// It never blocks.
func (s *session) enqueue(b []byte) int {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	switch {
	case s.finished || s.isClosing():
		return queueClosed
	case len(s.queue) >= s.qcap:
		return queueFull
	}
	s.queue = append(s.queue, b)
	if !s.writing {
		s.writing = true
		go s.writeFrames()
	}
	return queued
}

// push queues a frame, waiting for room; it reports false when the session
// is closing and the frame will not be sent.
func (s *session) push(b []byte) bool {
	for {
		switch s.enqueue(b) {
		case queued:
			return true
		case queueClosed:
			return false
		}
		s.wmu.Lock()
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		full := len(s.queue) >= s.qcap
		s.wmu.Unlock()
		if !full {
			continue
		}
		select {
		case <-room:
		case <-s.closing:
			return false
		case <-s.writerDone:
			return false
		}
	}
}

func (s *session) pushFrame(f cloudwire.Frame) bool {
	b, err := cloudwire.Encode(f)
	if err != nil {
		s.log.Error("frame not encodable", "type", f.FrameType(), "err", err)
		return false
	}
	return s.push(b)
}

func (s *session) pushError(ref, code, msg string) {
	s.pushFrame(cloudwire.Error{Ref: ref, Code: code, Message: msg})
}

// deliverLive is called by the hub, in cursor order. During the initial
// sync events wait in pending; afterwards they are queued without blocking,
// and a session whose queue is full is closed as a slow consumer (it
// resumes from its cursor when it reconnects).
func (s *session) deliverLive(d delivery) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncing {
		if len(s.pending) >= s.maxPending {
			s.closeWith(cloudwire.CloseSlowConsumer, "slow consumer: too many events during sync")
			return
		}
		s.pending = append(s.pending, d)
		return
	}
	if d.cursor <= s.lastSent {
		return
	}
	switch s.enqueue(d.frame) {
	case queued:
		s.lastSent = d.cursor
		s.svc.m.events.WithLabelValues("live").Inc()
	case queueFull:
		s.closeWith(cloudwire.CloseSlowConsumer, "slow consumer")
	}
}

// writeFrames writes queued frames until the queue is empty, then exits:
// an idle session has no writer goroutine. It stops early when the session
// starts closing (the closer flushes the rest) or a write fails.
func (s *session) writeFrames() {
	for {
		s.wrMu.Lock()
		s.wmu.Lock()
		if len(s.queue) == 0 || s.finished || s.isClosing() {
			s.writing = false
			s.wmu.Unlock()
			s.wrMu.Unlock()
			return
		}
		batch := s.queue
		s.queue = nil
		s.wakePushers()
		s.wmu.Unlock()
		err := s.writeBatch(batch, time.Now().Add(writeWait))
		s.wrMu.Unlock()
		if err != nil {
			s.log.Debug("write failed", "err", err)
			s.wmu.Lock()
			s.writing = false
			s.wmu.Unlock()
			s.finish()
			return
		}
	}
}

// wakePushers wakes the pushes waiting for room; s.wmu is held.
func (s *session) wakePushers() {
	if s.room != nil {
		close(s.room)
		s.room = nil
	}
}

// writeBatch writes frames, one message each, within deadline, corked
// (cork.go): the batch reaches the kernel in one write.
func (s *session) writeBatch(batch [][]byte, deadline time.Time) error {
	_ = s.conn.SetWriteDeadline(deadline)
	cc, _ := s.conn.NetConn().(*corkConn)
	corked := cc != nil && len(batch) > 1
	if corked {
		cc.cork()
	}
	var err error
	for _, b := range batch {
		if err = s.conn.WriteMessage(websocket.TextMessage, b); err != nil {
			break
		}
		s.svc.m.sent(b)
	}
	if corked {
		if uerr := cc.uncork(); err == nil {
			err = uerr
		}
	}
	return err
}

// startPings arms the ping timer; its function runs on a goroutine of its
// own only when it fires.
func (s *session) startPings() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if !s.finished {
		s.ping = time.AfterFunc(pingPeriod, s.sendPing)
	}
}

// sendPing pings the peer (WriteControl may run alongside other writes) and
// re-arms the timer.
func (s *session) sendPing() {
	if s.isClosing() {
		return
	}
	if err := s.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
		s.log.Debug("ping failed", "err", err)
		s.finish()
		return
	}
	s.wmu.Lock()
	if !s.finished {
		s.ping.Reset(pingPeriod)
	}
	s.wmu.Unlock()
}

// finish closes the connection and stops every writer: nothing more is
// written. It is idempotent.
func (s *session) finish() {
	s.finishOnce.Do(func() {
		s.wmu.Lock()
		s.finished = true
		s.queue = nil
		s.wakePushers()
		if s.ping != nil {
			s.ping.Stop()
		}
		s.wmu.Unlock()
		s.conn.Close()
		close(s.writerDone)
	})
}

// closeAndWait runs once the session starts closing: it flushes the queue,
// sends the close frame, waits at most closeGrace for the peer's close (the
// reader ends), and drops the connection.
func (s *session) closeAndWait() {
	s.flushAndClose()
	s.waitPeerClose()
}

// waitPeerClose waits at most closeGrace for the reader to end, then drops
// the connection.
func (s *session) waitPeerClose() {
	t := time.NewTimer(closeGrace)
	select {
	case <-s.readerDone:
	case <-t.C:
	}
	t.Stop()
	s.finish()
}

// flushAndClose writes the queued frames (within closeGrace) and then the
// close frame.
func (s *session) flushAndClose() {
	deadline := time.Now().Add(closeGrace)
	s.wrMu.Lock()
	defer s.wrMu.Unlock()
	s.wmu.Lock()
	batch, finished := s.queue, s.finished
	s.queue = nil
	s.wakePushers()
	s.wmu.Unlock()
	if finished {
		return
	}
	if s.writeBatch(batch, deadline) != nil {
		return
	}
	s.writeClose(deadline)
}

func (s *session) writeClose(deadline time.Time) {
	msg := websocket.FormatCloseMessage(s.closeCode, s.closeText)
	if err := s.conn.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
		s.log.Debug("close frame not written", "err", err)
	}
}

// readFrame reads one message, at most MaxFrameSize bytes of it. The
// returned buffer goes back to framePool once decoded.
//
// The limit is applied here rather than with Conn.SetReadLimit because the
// library answers an over-limit frame with its own close 1009 at once,
// before the service could send the error frame that explains it; reading
// stops at MaxFrameSize+1 bytes either way, so memory stays bounded.
func (s *session) readFrame() (*bytes.Buffer, int, error) {
	typ, r, err := s.conn.NextReader()
	if err != nil {
		return nil, 0, err
	}
	buf := framePool.Get().(*bytes.Buffer)
	buf.Reset()
	if _, err := buf.ReadFrom(io.LimitReader(r, cloudwire.MaxFrameSize+1)); err != nil {
		framePool.Put(buf)
		return nil, 0, err
	}
	if buf.Len() > cloudwire.MaxFrameSize {
		framePool.Put(buf)
		return nil, typ, errFrameTooLarge
	}
	return buf, typ, nil
}

// drain keeps reading after the service started closing, so that the
// peer's close frame is consumed and the connection ends cleanly.
func (s *session) drain() {
	if !s.isClosing() {
		return
	}
	_ = s.conn.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, _, err := s.conn.NextReader(); err != nil {
			return
		}
	}
}

// serve sets the session up on the calling goroutine (hello,
// authentication, welcome) and then reads requests on a goroutine of its
// own until the connection ends; end runs on that goroutine once reading
// has ended, or on the calling one when set-up fails. claims are those of
// the Authorization header, or nil when the token must come in hello.
//
// The set-up grows a goroutine's stack (JetStream requests, JSON, the
// version policy) to 8 KiB or more, and the runtime only halves an idle
// stack when at most a quarter of it is in use: a fresh reader starts at
// 2 KiB and stays at 4 KiB while idle, about a third of an idle session.
func (s *session) serve(claims *cloudwire.Claims, end func(*session)) {
	h, ok := s.readHello()
	ok = ok && s.authenticate(claims, h) && s.open(h)
	if !ok {
		s.endReading()
		end(s)
		return
	}
	go s.readRequests(end)
}

// endReading runs when the session stops reading: it consumes the peer's
// close frame if the service is closing, stops the sync, and closes the
// connection unless a close is under way.
func (s *session) endReading() {
	s.drain()
	close(s.readerDone)
	if !s.isClosing() {
		// The peer left or the connection failed: nothing to flush.
		s.finish()
	}
	s.stop()
}

func (s *session) readHello() (cloudwire.Hello, bool) {
	_ = s.conn.SetReadDeadline(time.Now().Add(helloTimeout))
	buf, typ, err := s.readFrame()
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, errFrameTooLarge):
			s.closeWith(cloudwire.CloseTooLarge, "hello too large")
		case errors.As(err, &ne) && ne.Timeout():
			s.closeWith(cloudwire.CloseHelloTimeout, "no hello in time")
		}
		return cloudwire.Hello{}, false
	}
	defer framePool.Put(buf)
	if typ != websocket.TextMessage {
		s.closeWith(cloudwire.CloseProtocol, "expected a hello text frame")
		return cloudwire.Hello{}, false
	}
	f, err := cloudwire.Decode(buf.Bytes())
	if err != nil {
		s.svc.m.frames.WithLabelValues("invalid").Inc()
		s.closeWith(cloudwire.CloseProtocol, "bad hello: "+err.Error())
		return cloudwire.Hello{}, false
	}
	h, ok := f.(cloudwire.Hello)
	if !ok {
		s.closeWith(cloudwire.CloseProtocol, "the first frame must be hello, got "+f.FrameType())
		return cloudwire.Hello{}, false
	}
	s.svc.m.frames.WithLabelValues(cloudwire.TypeHello).Inc()
	return h, true
}

// authenticate settles the session's identity from the header's claims or
// the hello token, and applies the role rules and Admit.
func (s *session) authenticate(claims *cloudwire.Claims, h cloudwire.Hello) bool {
	s.kind = kindNative
	if claims == nil {
		s.kind = kindBrowser
		if h.Token == "" {
			s.svc.m.handshakes.WithLabelValues("no_token").Inc()
			s.closeWith(cloudwire.CloseUnauthorized, cloudwire.CloseReason{Reason: "token required"}.String())
			return false
		}
		c, err := s.svc.cfg.verifyToken(h.Token)
		if err != nil {
			s.svc.m.handshakes.WithLabelValues("bad_token").Inc()
			s.closeWith(cloudwire.CloseUnauthorized, cloudwire.CloseReason{Reason: err.Error()}.String())
			return false
		}
		claims = &c
	}
	switch claims.Role {
	case cloudwire.RoleUser:
		if admit := s.svc.cfg.Admit; admit != nil {
			ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
			err := admit(ctx, claims.Subject)
			cancel()
			if err != nil {
				s.svc.m.handshakes.WithLabelValues("not_admitted").Inc()
				s.closeWith(cloudwire.CloseForbidden, cloudwire.CloseReason{Reason: err.Error()}.String())
				return false
			}
		}
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		v := s.svc.clientVerdict(ctx, claims.Subject, h)
		cancel()
		if v.Refuse != nil {
			s.svc.m.handshakes.WithLabelValues("upgrade_required").Inc()
			s.closeWith(cloudwire.CloseUpgradeRequired, v.Refuse.String())
			return false
		}
		s.notice = v.Notice
	case cloudwire.RoleBridge:
		s.bridge, s.kind = true, kindBridge
	default:
		s.svc.m.handshakes.WithLabelValues("forbidden_role").Inc()
		s.closeWith(cloudwire.CloseForbidden, cloudwire.CloseReason{Reason: "role " + claims.Role + " cannot open sessions"}.String())
		return false
	}
	s.user, s.role, s.device = claims.Subject, claims.Role, h.Device
	s.token = subjectToken(s.user)
	return true
}

// open registers the session for live events, sends welcome and starts the
// initial sync. Registering before reading the head is what makes sync and
// live meet without a gap: every event after the head reaches the hub after
// the registration.
func (s *session) open(h cloudwire.Hello) bool {
	if fn := s.svc.cfg.OnHello; fn != nil {
		h.Token = ""
		fn(s.user, h)
	}
	queue := s.svc.cfg.QueueLen
	if s.bridge {
		queue *= bridgeQueueFactor
	}
	s.wmu.Lock()
	s.qcap = queue
	s.wmu.Unlock()
	s.startPings()
	s.mu.Lock()
	s.syncing = true
	s.maxPending = queue * pendingFactor
	s.mu.Unlock()
	s.noFeed = s.bridge && h.NoFeed
	if !s.noFeed {
		s.svc.hub.add(s)
	}
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	head, err := s.feedHead(ctx, h)
	cancel()
	if err != nil {
		s.log.Error("session head", "err", err)
		s.closeWith(cloudwire.CloseInternal, "storage unavailable")
		return false
	}
	if !s.pushFrame(cloudwire.Welcome{
		ProtocolVersion: cloudwire.ProtocolVersion, User: s.user, Role: s.role,
		Device: s.device, Session: s.id, Head: head, Notice: s.notice,
	}) {
		return false
	}
	s.welcomeSent.Store(true)
	s.svc.m.handshakes.WithLabelValues("ok").Inc()
	s.svc.sessionWelcomed(s)
	// Other lines of this session carry only its id (s.log is shared with
	// goroutines that started before the identity was known).
	s.log.Debug("session open", "user", s.user, "role", s.role, "device", s.device, "cursor", h.Cursor, "head", head)
	syncCtx, stopSync := context.WithCancel(s.ctx)
	s.stop = stopSync
	go s.syncLoop(syncCtx, h.Cursor, head)
	if !s.bridge {
		s.touch(true)
		ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
		if err := s.announce(ctx, cloudwire.PresenceActive); err != nil {
			s.log.Warn("presence not announced", "err", err)
		}
		if err := s.sendPresenceSnapshot(ctx); err != nil {
			s.log.Warn("presence snapshot not sent", "err", err)
		}
		cancel()
	}
	return true
}

// syncLoop replays the inbox after cursor up to head, sends synced, then
// drains the live events buffered meanwhile and switches to live delivery.
func (s *session) syncLoop(ctx context.Context, cursor, head uint64) {
	defer close(s.syncDone)
	defer s.setUp()
	defer s.stop() // the context goes once the sync is done
	start := time.Now()
	last := cursor
	errClosed := errors.New("session closing")
	err := s.svc.store.replay(ctx, s.user, s.bridge, cursor+1, head, func(c uint64, subject string, data []byte) error {
		if c <= last {
			return nil
		}
		b, _ := s.svc.eventFrame(c, subject, data)
		if b == nil {
			return nil
		}
		if !s.push(b) {
			return errClosed
		}
		last = c
		s.svc.m.events.WithLabelValues("sync").Inc()
		return nil
	})
	if err != nil {
		if !errors.Is(err, errClosed) && ctx.Err() == nil {
			s.log.Error("sync failed", "err", err)
			s.closeWith(cloudwire.CloseInternal, "sync failed")
		}
		return
	}
	if !s.pushFrame(cloudwire.Synced{Cursor: last}) {
		return
	}
	s.svc.m.syncSeconds.Observe(time.Since(start).Seconds())
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		if len(batch) == 0 {
			s.syncing = false
			s.lastSent = last
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		for _, d := range batch {
			if d.cursor <= last {
				continue
			}
			if !s.push(d.frame) {
				return
			}
			last = d.cursor
			s.svc.m.events.WithLabelValues("live").Inc()
		}
	}
}

// readRequests is the session's reader goroutine: it handles the client's
// frames one at a time, so that one device's sends are stored in the order
// they were sent, and runs end when reading ends (after the bridge
// dispatcher's requests are answered). A bridge session's sends and
// receipts go to its dispatcher instead, in order per acting user. It is
// kept shallow: what
// sits on its stack while it waits is all an idle session's stack holds
// (see serve); handling happens in handleFrame.
func (s *session) readRequests(end func(*session)) {
	defer end(s)
	defer s.closePuppets()
	defer s.waitDispatched()
	defer s.endReading()
	s.conn.SetPongHandler(s.pong)
	for !s.isClosing() {
		_ = s.conn.SetReadDeadline(time.Now().Add(pongWait))
		buf, typ, err := s.readFrame()
		if !s.handleFrame(buf, typ, err) {
			return
		}
	}
}

// pong extends the read deadline when the peer answers a ping.
func (s *session) pong(string) error {
	return s.conn.SetReadDeadline(time.Now().Add(pongWait))
}

// handleFrame handles what one readFrame returned; false means stop
// reading.
//
//go:noinline
func (s *session) handleFrame(buf *bytes.Buffer, typ int, err error) bool {
	if errors.Is(err, errFrameTooLarge) {
		s.svc.m.frames.WithLabelValues("invalid").Inc()
		s.pushError("", cloudwire.CodeTooLarge, "frame over 65536 bytes")
		s.closeWith(cloudwire.CloseTooLarge, "frame too large")
		return false
	}
	if err != nil {
		if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
			s.log.Debug("read ended", "err", err)
		}
		return false
	}
	if typ != websocket.TextMessage {
		framePool.Put(buf)
		s.svc.m.frames.WithLabelValues("invalid").Inc()
		s.pushError("", cloudwire.CodeBadRequest, "binary frames are not supported")
		return true
	}
	f, err := cloudwire.Decode(buf.Bytes())
	framePool.Put(buf)
	if err != nil {
		s.svc.m.frames.WithLabelValues("invalid").Inc()
		var fe *cloudwire.FrameError
		ref := ""
		if errors.As(err, &fe) {
			ref = fe.Ref
		}
		s.pushError(ref, errorCode(err), err.Error())
		return true
	}
	s.svc.m.frames.WithLabelValues(f.FrameType()).Inc()
	if s.bridge {
		switch r := f.(type) {
		case cloudwire.Send:
			return s.dispatch(r.As, f)
		case cloudwire.Receipt:
			return s.dispatch(r.As, f)
		case cloudwire.Act:
			return s.dispatchAct(r)
		}
		// Any other request waits until the dispatched ones are
		// answered, so that it sees everything sent before it.
		s.waitDispatched()
	}
	s.handleRequest(f)
	return true
}

// dispatch hands a bridge session's send or receipt to its dispatcher,
// creating it at the first; false means stop reading.
func (s *session) dispatch(as string, f cloudwire.Frame) bool {
	if s.disp == nil {
		waited := func(d time.Duration) { s.svc.m.bridgeQueue.Observe(d.Seconds()) }
		s.disp = newDispatcher(s.handleRequest, waited, s.closing, s.writerDone, maxBridgeInFlight)
	}
	return s.disp.dispatch(as, f)
}

// waitDispatched returns once every request handed to the dispatcher has
// been answered.
func (s *session) waitDispatched() {
	if s.disp != nil {
		s.disp.wait()
	}
}

// handleRequest handles one decoded client frame.
func (s *session) handleRequest(f cloudwire.Frame) {
	switch f := f.(type) {
	case cloudwire.Send:
		s.handleSend(f)
	case cloudwire.Receipt:
		s.handleReceipt(f)
	case cloudwire.History:
		s.handleHistory(f)
	case cloudwire.Group:
		s.handleGroup(f)
	case cloudwire.Presence:
		s.handlePresence(f)
	case cloudwire.Typing:
		s.handleTyping(f)
	case cloudwire.Call:
		s.handleCall(f)
	case cloudwire.Act:
		s.handleAct(f)
	case cloudwire.Hello:
		s.pushError("", cloudwire.CodeBadRequest, "hello was already received")
	default:
		s.pushError("", cloudwire.CodeUnknownType, f.FrameType()+" is not a client frame")
	}
}

// actor returns the user a request acts as: the session's user, or for a
// bridge session the user named in as, if ActFor allows it.
func (s *session) actor(ctx context.Context, as string) (string, error) {
	if !s.bridge {
		if as != "" && as != s.user {
			return "", fmt.Errorf("%w: only bridge sessions may act for another user", errForbidden)
		}
		return s.user, nil
	}
	if as == "" {
		return "", fmt.Errorf("%w: bridge sessions must name the user they act for in as", errBadRequest)
	}
	if fn := s.svc.cfg.ActFor; fn != nil {
		if err := fn(ctx, as); err != nil {
			return "", fmt.Errorf("%w: may not act for %s: %w", errForbidden, as, err)
		}
	}
	return as, nil
}

func (s *session) handleSend(f cloudwire.Send) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	from, device, err := s.sender(ctx, f)
	var rec sendRecord
	var dup bool
	if err == nil {
		rec, dup, err = s.svc.store.send(ctx, from, device, f, s.svc.cfg.Now())
	}
	if err != nil {
		code := errorCode(err)
		s.svc.m.sends.WithLabelValues(code).Inc()
		s.pushError(f.Ref, code, s.publicMessage(code, err))
		return
	}
	result := "ok"
	if dup {
		result = "duplicate"
	}
	s.svc.m.sends.WithLabelValues(result).Inc()
	s.svc.m.sendSeconds.Observe(time.Since(start).Seconds())
	if !s.bridge {
		s.touch(false)
		if f.To != "" && !slices.Contains(s.contacts, f.To) {
			s.contactsAt = time.Time{} // a new contact: look them up again
		}
	}
	s.pushFrame(rec.ack(f.Ref, dup))
}

func (s *session) handleReceipt(f cloudwire.Receipt) {
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	by, device, err := s.actorDevice(ctx, f.As, f.Device)
	var ack cloudwire.Ack
	if err == nil {
		if f.UpTo > 0 {
			ack, err = s.svc.store.receiptUpTo(ctx, by, device, f, s.svc.cfg.Now())
		} else {
			var rec sendRecord
			rec, err = s.svc.store.receipt(ctx, by, device, f, s.svc.cfg.Now())
			ack = rec.ack("", false)
		}
	}
	if err != nil {
		code := errorCode(err)
		s.svc.m.receipts.WithLabelValues(code).Inc()
		s.pushError(f.Ref, code, s.publicMessage(code, err))
		return
	}
	result := "ok"
	if ack.Duplicate {
		result = "duplicate"
	}
	s.svc.m.receipts.WithLabelValues(result).Inc()
	ack.Ref = f.Ref
	s.pushFrame(ack)
}

func (s *session) handleGroup(f cloudwire.Group) {
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	actor, err := s.actor(ctx, f.As)
	var rec sendRecord
	var dup bool
	if err == nil {
		rec, dup, err = s.svc.store.group(ctx, actor, s.device, f, s.svc.cfg.Now())
	}
	if err != nil {
		code := errorCode(err)
		s.pushError(f.Ref, code, s.publicMessage(code, err))
		return
	}
	s.contactsAt = time.Time{} // membership changed: look the contacts up again
	s.pushFrame(rec.ack(f.Ref, dup))
}

func (s *session) handleHistory(f cloudwire.History) {
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	user, err := s.actor(ctx, f.As)
	var page cloudwire.Page
	if err == nil {
		page, err = s.svc.store.history(ctx, user, f)
	}
	if err != nil {
		code := errorCode(err)
		s.pushError(f.Ref, code, s.publicMessage(code, err))
		return
	}
	page.Ref = f.Ref
	b, err := encodePage(page, f.After > 0)
	if err != nil {
		s.pushError(f.Ref, cloudwire.CodeInternal, s.publicMessage(cloudwire.CodeInternal, err))
		return
	}
	s.push(b)
}

// encodePage encodes p, dropping messages until it fits in a frame: the
// newest when paging forwards, the oldest otherwise, so that the page stays
// contiguous with what the client has and More tells it to ask again.
func encodePage(p cloudwire.Page, forwards bool) ([]byte, error) {
	for {
		b, err := cloudwire.Encode(p)
		if err == nil || !errors.Is(err, cloudwire.ErrFrameTooLarge) || len(p.Msgs) == 0 {
			return b, err
		}
		// Drop a quarter at a time (at least one message).
		cut := max(1, len(p.Msgs)/4)
		if forwards {
			p.Msgs = p.Msgs[:len(p.Msgs)-cut]
		} else {
			p.Msgs = p.Msgs[cut:]
		}
		p.More = true
	}
}

// publicMessage is what an error frame says: the error for the client's
// own mistakes, nothing internal otherwise (that goes to the log).
func (s *session) publicMessage(code string, err error) string {
	switch code {
	case cloudwire.CodeInternal:
		s.log.Error("request failed", "err", err)
		return "internal error; retry the request"
	case cloudwire.CodeUnavailable:
		return "service shutting down; retry on a new connection"
	}
	return err.Error()
}

// errorCode maps an error to its error-frame code; this is the only place
// where errors become wire codes.
func errorCode(err error) string {
	switch {
	case errors.Is(err, errForbidden):
		return cloudwire.CodeForbidden
	case errors.Is(err, errNotFound):
		return cloudwire.CodeNotFound
	case errors.Is(err, errConflict):
		return cloudwire.CodeConflict
	case errors.Is(err, errBadRequest),
		errors.Is(err, cloudwire.ErrInvalidField),
		errors.Is(err, cloudwire.ErrMalformedFrame),
		errors.Is(err, cloudwire.ErrInvalidUTF8):
		return cloudwire.CodeBadRequest
	case errors.Is(err, cloudwire.ErrUnknownFrame):
		return cloudwire.CodeUnknownType
	case errors.Is(err, cloudwire.ErrTextTooLong), errors.Is(err, cloudwire.ErrFrameTooLarge):
		return cloudwire.CodeTooLarge
	case errors.Is(err, context.Canceled):
		return cloudwire.CodeUnavailable
	}
	return cloudwire.CodeInternal
}
