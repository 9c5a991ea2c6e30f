package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudweb"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// idleReadBuffer is each session's read buffer in bytes.
const idleReadBuffer = 256

// Service is one node of the cloud service: it serves WebSocket sessions
// and keeps their state in JetStream. Several nodes can share one
// JetStream; each runs its own live feed.
type Service struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	store    *store
	hub      *hub
	upgrader websocket.Upgrader
	origins  map[string]bool

	// feedNext is the inbox cursor the live feed resumes from. It is set
	// in New, before any session can read its head, so that live delivery
	// covers every event after any session's head.
	feedNext atomic.Uint64
	running  atomic.Bool

	baseCtx    context.Context // parent of session contexts; canceled on forced shutdown
	baseCancel context.CancelFunc

	mu           sync.Mutex
	sessions     map[*session]struct{} // every upgraded connection
	shuttingDown bool
	shutdownCh   chan struct{}
	shutdownOnce sync.Once
	wg           sync.WaitGroup // one per tracked connection
	welcomed     atomic.Int64
	// adm bounds the sessions between admission and the end of their
	// initial sync (MaxHandshakes) and lines up the handshakes beyond.
	adm *admission

	calls calls // the calls this node owns (calls.go)

	// clientPolicy, when set, supersedes cfg.CheckClient (notice.go).
	clientPolicy atomic.Pointer[ClientPolicy]
	// notes are the phase moves waiting for their system notes (system.go).
	notes chan phaseNote
}

// New creates or binds the service's streams and bucket and returns a
// Service ready to serve. Call Run to deliver live events and Shutdown to
// stop.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("cloud: metrics: %w", err)
	}
	st, err := openStore(ctx, cfg.JS, cfg.Replicas, cfg.Retention, m, cfg.Logger)
	if err != nil {
		return nil, err
	}
	info, err := st.inbox.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("cloud: inbox state: %w", err)
	}
	if st.lease, err = openLease(ctx, cfg.JS, cfg.Replicas, cfg.NodeLease); err != nil {
		return nil, err
	}
	if st.files, err = openFileStore(ctx, cfg.JS, cfg.Replicas, cfg.Files, cfg.Registerer); err != nil {
		return nil, err
	}
	baseCtx, baseCancel := context.WithCancel(context.Background())
	s := &Service{
		cfg: cfg, log: cfg.Logger, m: m, store: st, hub: newHub(),
		origins:    make(map[string]bool),
		baseCtx:    baseCtx,
		baseCancel: baseCancel,
		sessions:   make(map[*session]struct{}),
		shutdownCh: make(chan struct{}),
		calls:      calls{m: make(map[string]*call)},
		notes:      make(chan phaseNote, noteQueueLen),
	}
	s.adm = newAdmission(cfg.MaxHandshakes, cfg.MaxSessions, &s.welcomed, m.settingUp)
	for _, o := range cfg.AllowedOrigins {
		s.origins[strings.ToLower(strings.TrimSuffix(o, "/"))] = true
	}
	s.feedNext.Store(info.State.LastSeq + 1)
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: helloTimeout,
		// A small read buffer of our own rather than the HTTP server's
		// 4 KiB one (what 0 would reuse): an idle session mostly waits,
		// and a frame's payload is read straight into the frame buffer
		// (readFrame), so only headers and small frames pass through it.
		// With the handler returning after the upgrade (runSession) this
		// took an idle session from about 35 KB to 14 KB, and with 256
		// bytes and a fresh reader goroutine (session.serve) under 10 KB
		// (gateway bench cloud-idle).
		ReadBufferSize: idleReadBuffer,
		// Write buffers are taken from the pool only while a frame is
		// being written, so idle connections hold none.
		WriteBufferSize: 4 << 10,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{cloudwire.Subprotocol},
		// The allowlist was applied before Upgrade is called.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	return s, nil
}

// Handler serves GET /v1/ws (the WebSocket endpoint), GET /healthz and the
// reference browser client (cloudweb) at GET /. The
// http.Server running it must set ReadHeaderTimeout: the WebSocket library
// clears deadlines after the upgrade, and the service sets its own.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.serveWS)
	mux.HandleFunc("GET /healthz", s.serveHealth)
	s.mountFiles(mux) // PUT and GET /v1/files (files.go)
	mux.Handle("GET /", cloudweb.Handler())
	return mux
}

// Run delivers the node's live feed (every inbox event, from the position
// reached when New returned) to the sessions of this node. It returns nil
// after ctx ends or Shutdown starts, once its goroutines have exited; a
// failing feed is retried from where it stopped.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("cloud: Run is already running")
	}
	defer s.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-s.shutdownCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() {
		cancel()
		<-stopped
	}()
	sub, err := s.subscribeLive()
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	notesDone := make(chan struct{})
	go func() { defer close(notesDone); s.runNotes(ctx) }()
	defer func() { cancel(); <-notesDone }()
	leaseDone := make(chan struct{})
	go func() { defer close(leaseDone); s.runLease(ctx) }()
	defer func() { cancel(); <-leaseDone }()
	for {
		err := s.feed(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.log.Error("live feed failed; retrying", "err", err, "from", s.feedNext.Load())
		t := time.NewTimer(feedRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// Shutdown refuses new sessions and closes every open one with 1001 going
// away, each with a random reconnect delay below ReconnectWindow in its
// close reason so that clients do not come back all at once. It waits for
// the sessions to end until ctx is done, then drops the rest and returns
// ctx's error. It is idempotent.
func (s *Service) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		s.mu.Lock()
		s.shuttingDown = true
		open := make([]*session, 0, len(s.sessions))
		for sess := range s.sessions {
			open = append(open, sess)
		}
		s.mu.Unlock()
		close(s.shutdownCh)
		s.endAllCalls(cloudwire.ReasonUnavailable)
		window := max(1, int64(s.cfg.ReconnectWindow/time.Millisecond)) // a window under 1 ms is 1 ms
		for _, sess := range open {
			hint := cloudwire.CloseReason{Reason: "server going away", RetryMS: 1 + rand.Int64N(window)}
			sess.closeWith(cloudwire.CloseGoingAway, hint.String())
		}
		s.log.Info("shutting down", "sessions", len(open))
	})
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.baseCancel()
	s.mu.Lock()
	for sess := range s.sessions {
		sess.conn.Close()
	}
	s.mu.Unlock()
	<-done
	return fmt.Errorf("cloud: shutdown: %w", ctx.Err())
}

// Sessions returns the number of open sessions (past welcome) on this node.
func (s *Service) Sessions() int { return int(s.welcomed.Load()) }

// track registers an upgraded connection; it refuses during shutdown.
func (s *Service) track(sess *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shuttingDown {
		return false
	}
	s.sessions[sess] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Service) untrack(sess *session) {
	s.mu.Lock()
	delete(s.sessions, sess)
	s.mu.Unlock()
	s.wg.Done()
}

func (s *Service) sessionWelcomed(sess *session) {
	sess.welcomed = true
	s.welcomed.Add(1)
	s.m.sessions.WithLabelValues(sess.kind).Inc()
}

func (s *Service) isShuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shuttingDown
}

func (s *Service) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.isShuttingDown() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "shutting down")
		return
	}
	fmt.Fprintln(w, "ok")
}

// refuse answers a handshake with an HTTP error before the upgrade.
func (s *Service) refuse(w http.ResponseWriter, r *http.Request, status int, result, msg string) {
	s.m.handshakes.WithLabelValues(result).Inc()
	s.log.Debug("handshake refused", "remote", r.RemoteAddr, "status", status, "reason", msg)
	http.Error(w, msg, status)
}

// serveWS checks everything that can be checked before the upgrade
// (origin, subprotocol, admission, then the header token and role), upgrades, and
// hands the session to a goroutine of its own (runSession).
func (s *Service) serveWS(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" && !s.origins[strings.ToLower(origin)] {
		s.refuse(w, r, http.StatusForbidden, "bad_origin", "origin not allowed")
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		s.refuse(w, r, http.StatusUpgradeRequired, "not_websocket", "WebSocket upgrade required")
		return
	}
	if !offers(r, cloudwire.Subprotocol) {
		s.refuse(w, r, http.StatusBadRequest, "bad_subprotocol", "subprotocol "+cloudwire.Subprotocol+" required")
		return
	}
	if s.isShuttingDown() {
		s.refuse(w, r, http.StatusServiceUnavailable, "shutting_down", "shutting down")
		return
	}
	release, ok := s.admit(r.Context().Done())
	if !ok && s.isShuttingDown() { // it began while the handshake waited
		s.refuse(w, r, http.StatusServiceUnavailable, "shutting_down", "shutting down")
		return
	}
	if !ok {
		w.Header().Set("Retry-After", strconv.Itoa(s.adm.retryAfter(s.cfg.ShedRetry)))
		s.refuse(w, r, http.StatusServiceUnavailable, "shed", "too many sessions being set up; retry later")
		return
	}
	handedOver := false
	defer func() {
		if !handedOver {
			release()
		}
	}()
	// The token is checked once a slot is held: a storm that is shed
	// costs no signature check per refused handshake.
	var claims *cloudwire.Claims
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := bearer(h)
		if !ok {
			s.refuse(w, r, http.StatusUnauthorized, "bad_token", "Authorization must be Bearer <token>")
			return
		}
		c, err := s.cfg.verifyToken(tok)
		if err != nil {
			s.refuse(w, r, http.StatusUnauthorized, "bad_token", err.Error())
			return
		}
		if c.Role != cloudwire.RoleUser && c.Role != cloudwire.RoleBridge {
			s.refuse(w, r, http.StatusForbidden, "forbidden_role", "role "+c.Role+" cannot open sessions")
			return
		}
		claims = &c
	}
	conn, err := s.upgrader.Upgrade(&corkingWriter{ResponseWriter: w}, r, nil)
	if err != nil {
		// The upgrader has answered with an HTTP error.
		s.m.handshakes.WithLabelValues("upgrade_failed").Inc()
		s.log.Debug("upgrade failed", "remote", r.RemoteAddr, "err", err)
		return
	}
	id, err := uuid.NewV7()
	if err != nil {
		conn.Close()
		s.log.Error("session id", "err", err)
		return
	}
	sess := newSession(s, conn, id.String())
	sess.setUp = release
	if !s.track(sess) {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(cloudwire.CloseGoingAway, cloudwire.CloseReason{Reason: "server going away"}.String()),
			time.Now().Add(writeWait))
		conn.Close()
		return
	}
	// The session runs on a goroutine of its own and the handler returns:
	// what the HTTP server keeps per request (the request and its headers,
	// the response and its buffer) is then garbage instead of living as
	// long as the socket. An idle session still has one goroutine.
	handedOver = true
	go s.runSession(sess, claims)
}

// runSession serves an upgraded, tracked session until it ends (on the
// session's reader goroutine, session.serve), then endSession runs.
func (s *Service) runSession(sess *session, claims *cloudwire.Claims) {
	sess.serve(claims, s.endSession)
}

// endSession takes an ended session out of the hub and announces the
// device offline.
func (s *Service) endSession(sess *session) {
	defer sess.setUp()
	defer s.untrack(sess)
	<-sess.writerDone
	if sess.welcomed {
		<-sess.syncDone
		s.hub.remove(sess)
		if !sess.bridge {
			ctx, cancel := context.WithTimeout(context.Background(), writeWait)
			if err := sess.svc.store.touchDevice(ctx, sess.user, sess.device, false, s.cfg.Now()); err != nil {
				sess.log.Debug("device offline not recorded", "err", err)
			}
			if err := sess.announce(ctx, cloudwire.PresenceOffline); err != nil {
				sess.log.Debug("offline not announced", "err", err)
			}
			cancel()
		}
		s.welcomed.Add(-1)
		s.adm.sessionEnded()
		s.m.sessions.WithLabelValues(sess.kind).Dec()
	} else if sess.token != "" {
		s.hub.remove(sess)
	}
}

// admit takes a set-up slot for a new session, waiting in admission's
// line (at most handshakeWait, until gone is closed or the service shuts
// down) while the node is at MaxHandshakes sessions being set up (or at
// MaxSessions); false means shed. release gives the slot back; it is
// idempotent, and the session calls it once its initial sync is done.
func (s *Service) admit(gone <-chan struct{}) (release func(), ok bool) {
	return s.adm.acquire(gone, s.shutdownCh, handshakeWait)
}

func offers(r *http.Request, proto string) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == proto {
			return true
		}
	}
	return false
}

func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	tok = strings.TrimSpace(tok)
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}
