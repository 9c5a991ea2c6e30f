package legacy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// MediaProtocolID is the call media protocol. Once a call is accepted over
// chat, the caller opens one stream of it to the callee's device: a hello
// (the caller's certificate and the call id) answered by an accept or a
// refusal, both JSON frames (legacywire.WriteFrame), then media frames of
// opaque bytes (the codec's packets) both ways, each a 2-byte big-endian
// length and the bytes (media_frame.go).
//
// The media path: direct first; when the direct dial fails (a NAT on
// either side), a relayed connection through one of our relays (a
// supernode or the bridge, where the callee holds a reservation), and a
// short wait for DCUtR, which the callee starts on the relayed connection,
// to punch a direct one; the stream then goes over the direct connection if
// one appeared and over the relay otherwise. Which path it took is
// MediaStream.Path and is counted in NetStats.
const MediaProtocolID protocol.ID = "/ferry/media/1"

// Media stream timeouts.
const (
	// MediaHelloTimeout bounds the hello and its answer.
	MediaHelloTimeout = 10 * time.Second
	// MediaReadTimeout bounds the wait for each media frame: a call in
	// silence still sends comfort noise or keep-alive frames well within it.
	MediaReadTimeout = 30 * time.Second
	// MediaWriteTimeout bounds each media frame written.
	MediaWriteTimeout = 10 * time.Second
	// DefaultMediaDirectTimeout is MediaConfig.DirectTimeout when zero.
	DefaultMediaDirectTimeout = 5 * time.Second
	// DefaultMediaHolePunchWait is MediaConfig.HolePunchWait when zero:
	// DCUtR needs about three round trips through the relay and one
	// simultaneous dial.
	DefaultMediaHolePunchWait = 3 * time.Second
)

// mediaHello opens a media stream.
type mediaHello struct {
	Cert legacywire.Certificate `json:"cert"`
	Call string                 `json:"call"`
}

// mediaAnswer accepts (OK) or refuses a media hello.
type mediaAnswer struct {
	OK    bool   `json:"ok"`
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

// MediaConfig configures a media endpoint (NewMedia).
type MediaConfig struct {
	// Cert is this device's certificate, sent in the hello of the streams
	// it opens. Required to dial.
	Cert *legacywire.Certificate
	// Authority is the key the opener's certificate must be signed by.
	// Required to accept streams.
	Authority ed25519.PublicKey
	// Revocations, when set, refuses revoked openers.
	Revocations *Revocations
	// Accept reports whether the certified peer may open media for call:
	// true only for a call accepted over chat with that user. Nil refuses
	// every incoming stream (a dial-only endpoint).
	Accept func(from legacywire.Certificate, call string) bool
	// OnStream takes an accepted incoming stream; it owns it and must close
	// it. It runs on the stream's handler goroutine.
	OnStream func(*MediaStream)
	// Relays are the relays Dial goes through when the direct dial fails:
	// supernodes and the bridge, where callees hold reservations.
	Relays []peer.AddrInfo
	// DirectTimeout bounds the direct dial; HolePunchWait is how long Dial
	// waits, once relayed, for a hole-punched direct connection.
	DirectTimeout, HolePunchWait time.Duration
	// Limiter, when set, rate-limits each peer's hellos.
	Limiter *PeerLimiter
	// Stats, when set, counts media streams by path; give it the host's
	// NetStats (HostConfig.Stats) so that hole-punched connections are
	// told apart from direct ones.
	Stats *NetStats
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives the endpoint's logs, tagged component=legacy.media.
	Logger *slog.Logger
}

// Validate reports whether the config is usable.
func (c MediaConfig) Validate() error {
	if c.Accept != nil && len(c.Authority) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: media: accepting streams needs the authority key", ErrInvalidConfig)
	}
	if c.DirectTimeout < 0 || c.HolePunchWait < 0 {
		return fmt.Errorf("%w: media: negative timeout", ErrInvalidConfig)
	}
	return nil
}

// Media is a device's media endpoint: it opens media streams (Dial) and
// accepts them (MediaProtocolID's handler, when Accept is set).
type Media struct {
	h   host.Host
	cfg MediaConfig
	log *slog.Logger
}

// NewMedia returns h's media endpoint and registers its stream handler
// when cfg.Accept is set. Close removes the handler.
func NewMedia(h host.Host, cfg MediaConfig) (*Media, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DirectTimeout == 0 {
		cfg.DirectTimeout = DefaultMediaDirectTimeout
	}
	if cfg.HolePunchWait == 0 {
		cfg.HolePunchWait = DefaultMediaHolePunchWait
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m := &Media{h: h, cfg: cfg, log: componentLogger(cfg.Logger, "legacy.media")}
	if cfg.Accept != nil {
		h.SetStreamHandler(MediaProtocolID, m.handle)
	}
	return m, nil
}

// Close removes the stream handler. Streams already open stay open.
func (m *Media) Close() error {
	m.h.RemoveStreamHandler(MediaProtocolID)
	return nil
}

// MediaStream is one call's media stream: frames of opaque bytes both
// ways. Reads and writes may run concurrently (one reader, one writer).
type MediaStream struct {
	s    network.Stream
	r    *bufio.Reader
	call string
	path Path

	wmu sync.Mutex
	buf []byte
}

// Call returns the call id the stream belongs to.
func (ms *MediaStream) Call() string { return ms.call }

// Path returns how the stream reaches the other device.
func (ms *MediaStream) Path() Path { return ms.path }

// RemotePeer returns the other device's peer ID.
func (ms *MediaStream) RemotePeer() peer.ID { return ms.s.Conn().RemotePeer() }

// WriteFrame sends one media frame (at most MaxMediaFrameSize bytes).
func (ms *MediaStream) WriteFrame(b []byte) error {
	ms.wmu.Lock()
	defer ms.wmu.Unlock()
	var err error
	if ms.buf, err = appendMediaFrame(ms.buf[:0], b); err != nil {
		return err
	}
	_ = ms.s.SetWriteDeadline(time.Now().Add(MediaWriteTimeout))
	if _, err := ms.s.Write(ms.buf); err != nil {
		return fmt.Errorf("legacy: write media frame: %w", err)
	}
	return nil
}

// ReadFrame returns the next media frame, reusing buf's memory when it is
// large enough. It returns io.EOF when the other end closed the stream
// between frames.
func (ms *MediaStream) ReadFrame(buf []byte) ([]byte, error) {
	_ = ms.s.SetReadDeadline(time.Now().Add(MediaReadTimeout))
	return readMediaFrame(ms.r, buf)
}

// Close ends the stream (both directions).
func (ms *MediaStream) Close() error { return ms.s.Close() }

// Reset aborts the stream.
func (ms *MediaStream) Reset() error { return ms.s.Reset() }

// Dial opens a media stream for call to the device to (its direct
// addresses, from the directory): direct first, then through cfg.Relays
// with a wait for a hole punch (see MediaProtocolID).
func (m *Media) Dial(ctx context.Context, to peer.AddrInfo, call string) (*MediaStream, error) {
	if m.cfg.Cert == nil {
		return nil, fmt.Errorf("%w: media: dialing needs the device's certificate", ErrInvalidConfig)
	}
	if err := m.connect(ctx, to); err != nil {
		return nil, err
	}
	sctx := network.WithAllowLimitedConn(ctx, "call media")
	s, err := m.h.NewStream(sctx, to.ID, MediaProtocolID)
	if err != nil {
		return nil, fmt.Errorf("legacy: open media stream to %s: %w", to.ID, err)
	}
	stop := resetOnCancel(ctx, s)
	defer stop()
	r := bufio.NewReader(s)
	_ = s.SetDeadline(deadline(ctx, MediaHelloTimeout))
	if err := legacywire.WriteFrame(s, mediaHello{Cert: *m.cfg.Cert, Call: call}); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("legacy: media hello to %s: %w", to.ID, err)
	}
	var ans mediaAnswer
	if err := legacywire.ReadFrame(r, &ans); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("legacy: media answer from %s: %w", to.ID, err)
	}
	if !ans.OK {
		_ = s.Close()
		return nil, &RefusedError{Code: ans.Code, Message: ans.Error}
	}
	_ = s.SetDeadline(time.Time{})
	p := m.cfg.Stats.pathOf(m.h.Network(), s.Conn())
	m.cfg.Stats.mediaOpened(p)
	return &MediaStream{s: s, r: r, call: call, path: p}, nil
}

// connect makes sure there is a connection to the device: an existing
// direct one, a direct dial, or a relayed one (followed by a wait for a
// hole-punched direct one).
func (m *Media) connect(ctx context.Context, to peer.AddrInfo) error {
	n := m.h.Network()
	if hasDirectConn(n.ConnsToPeer(to.ID)) {
		return nil
	}
	var directErr error
	if direct := directAddrs(to.Addrs); len(direct) > 0 {
		dctx, cancel := context.WithTimeout(network.WithForceDirectDial(ctx, "call media"), m.cfg.DirectTimeout)
		directErr = m.h.Connect(dctx, peer.AddrInfo{ID: to.ID, Addrs: direct})
		cancel()
		if directErr == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("legacy: media dial to %s: %w", to.ID, ctx.Err())
		}
	}
	circuits, err := CircuitAddrs(m.cfg.Relays)
	if err != nil {
		return err
	}
	if len(circuits) == 0 {
		return fmt.Errorf("legacy: media dial to %s: direct failed (%v) and no relay configured", to.ID, directErr)
	}
	// Watch for the hole punch before the relayed connection exists: the
	// callee starts DCUtR as soon as it sees it.
	punched := make(chan struct{}, 1)
	notify := &network.NotifyBundle{ConnectedF: func(_ network.Network, c network.Conn) {
		if c.RemotePeer() == to.ID && !isRelayed(c) {
			select {
			case punched <- struct{}{}:
			default:
			}
		}
	}}
	n.Notify(notify)
	defer n.StopNotify(notify)
	rctx := network.WithAllowLimitedConn(ctx, "call media")
	if err := m.h.Connect(rctx, peer.AddrInfo{ID: to.ID, Addrs: circuits}); err != nil {
		return fmt.Errorf("legacy: media dial to %s: direct: %v; relayed: %w", to.ID, directErr, err)
	}
	if hasDirectConn(n.ConnsToPeer(to.ID)) {
		return nil
	}
	t := time.NewTimer(m.cfg.HolePunchWait)
	defer t.Stop()
	select {
	case <-punched:
	case <-t.C: // stay relayed
	case <-ctx.Done():
		return fmt.Errorf("legacy: media dial to %s: %w", to.ID, ctx.Err())
	}
	return nil
}

// hasDirectConn reports whether one of conns does not go through a relay.
func hasDirectConn(conns []network.Conn) bool {
	for _, c := range conns {
		if !isRelayed(c) {
			return true
		}
	}
	return false
}

// handle serves one incoming media stream: it checks the hello (the
// opener's certificate, revocation, rate and the call), answers, and hands
// the stream to OnStream.
func (m *Media) handle(s network.Stream) {
	remote := s.Conn().RemotePeer()
	r := bufio.NewReader(s)
	refuse := func(code, msg string) {
		refuseAndReset(s, mediaAnswer{Code: code, Error: msg}, m.log)
	}
	var hello mediaHello
	_ = s.SetReadDeadline(time.Now().Add(MediaHelloTimeout))
	if err := legacywire.ReadFrame(r, &hello); err != nil {
		if code := frameCode(err); code != "" {
			refuse(code, err.Error())
			return
		}
		_ = s.Reset()
		return
	}
	if !m.cfg.Limiter.Allow(remote) {
		refuse(legacywire.CodeRateLimited, "too many media streams from this peer")
		return
	}
	if code, err := verifyPeerCert(nil, hello.Cert, m.cfg.Authority, remote.String(), m.cfg.Now(), m.cfg.Revocations); err != nil {
		m.log.Info("refused media hello", "peer", remote, "err", err)
		refuse(code, err.Error())
		return
	}
	if hello.Call == "" || len(hello.Call) > MaxMessageIDLen {
		refuse(legacywire.CodeBadMessage, "call id missing or too long")
		return
	}
	if !m.cfg.Accept(hello.Cert, hello.Call) {
		refuse(legacywire.CodeUnavailable, "no accepted call with this id")
		return
	}
	_ = s.SetWriteDeadline(time.Now().Add(MediaWriteTimeout))
	if err := legacywire.WriteFrame(s, mediaAnswer{OK: true}); err != nil {
		m.log.Debug("write media answer", "peer", remote, "err", err)
		_ = s.Reset()
		return
	}
	_ = s.SetDeadline(time.Time{})
	p := m.cfg.Stats.pathOf(m.h.Network(), s.Conn())
	m.cfg.Stats.mediaOpened(p)
	ms := &MediaStream{s: s, r: r, call: hello.Call, path: p}
	if m.cfg.OnStream == nil {
		_ = ms.Close()
		return
	}
	m.cfg.OnStream(ms)
}
