package legacy

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Shadow mirroring (legacywire.RouteMirror): while a user is in shadow or
// ready, the authority publishes a shadow route naming the bridge, and a
// lookup returns it in Lookup.Mirror next to the user's devices. A chat v2+
// sender, after its own fan-out to the devices, sends a shadow copy of the
// message to the mirror (MirrorMessage). The copy travels on its own
// protocol (legacywire.MirrorProtocolID), so it can never be taken for a
// delivery, and a failure to reach the mirror never fails the send. A chat
// v1 sender knows nothing of mirrors: its messages reach the cloud only by
// backfill (the history protocol below).

// MirrorTarget returns the peer of the lookup's live shadow route, if any.
func (l Lookup) MirrorTarget() (peer.AddrInfo, bool) {
	if l.Mirror == nil || l.Mirror.Withdrawn || l.Mirror.Kind != legacywire.RouteMirror {
		return peer.AddrInfo{}, false
	}
	ai, err := addrInfo(l.Mirror.PeerID, l.Mirror.Addrs)
	if err != nil {
		return peer.AddrInfo{}, false
	}
	return ai, true
}

// MirrorTimeout bounds one shadow copy when the caller's context has no
// earlier deadline: a slow mirror must not hold a sender up.
const MirrorTimeout = 2 * time.Second

// MirrorMessage sends a shadow copy of msg, which the device certified by
// self has just sent, to the mirror of look (the lookup of msg.To), if it
// has one. It reports whether the mirror took the copy; any failure is
// only logged by the caller's choice of ignoring the result: it never
// affects the send. Only chat v2+ senders call it (a v1 client predates
// mirrors).
func MirrorMessage(ctx context.Context, h host.Host, self legacywire.Certificate, look Lookup, msg legacywire.ChatMessage) (bool, error) {
	to, ok := look.MirrorTarget()
	if !ok {
		return false, nil
	}
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, MirrorTimeout))
	defer cancel()
	s, stop, err := openShadowStream(ctx, h, to, legacywire.MirrorProtocolID)
	if err != nil {
		return false, err
	}
	defer stop()
	ack, err := chatExchange(s, self, msg)
	if err != nil {
		_ = s.Reset()
		return false, fmt.Errorf("mirror %s: %w", to.ID, err)
	}
	_ = s.Close()
	if !ack.Delivered() {
		return false, &RefusedError{Code: ack.Code, Message: ack.Error}
	}
	return true, nil
}

// HandleMirror serves legacywire.MirrorProtocolID on h (the bridge): each
// shadow copy is checked like a chat v1 message (the opener's certificate,
// and From must be its user) and handed to cfg.Deliver, whose ack goes
// back. Only cfg.Authority, Now, Logger, Deliver, Revocations and Limiter
// are used.
func HandleMirror(h host.Host, cfg ChatConfig) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &chatHandler{cfg: cfg, log: componentLogger(cfg.Logger, "legacy.mirror")}
	h.SetStreamHandler(protocol.ID(legacywire.MirrorProtocolID), c.handle)
}

// openShadowStream connects to to and opens a stream of proto under ctx's
// deadline; stop must be called when done with the stream.
func openShadowStream(ctx context.Context, h host.Host, to peer.AddrInfo, proto string) (network.Stream, func() bool, error) {
	if err := h.Connect(ctx, to); err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", to.ID, err)
	}
	s, err := h.NewStream(ctx, to.ID, protocol.ID(proto))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: open %s to %s: %v", ErrNotSupported, proto, to.ID, err)
	}
	stop := resetOnCancel(ctx, s)
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)
	return s, stop, nil
}

// HistoryConfig configures a device's history server (ServeHistory).
type HistoryConfig struct {
	// Authority is the key the asking peer's certificate must be signed by.
	Authority ed25519.PublicKey
	// User is the device's user: the only history it serves.
	User string
	// History is what the device remembers.
	History *History
	// Now is the clock; default time.Now.
	Now         func() time.Time
	Logger      *slog.Logger
	Revocations *Revocations
	// Limiter, when set, rate-limits each peer's requests.
	Limiter *PeerLimiter
}

// ServeHistory serves legacywire.HistoryProtocolID on a device's host:
// only a peer whose certificate carries legacywire.CapBridge may read, and
// only the device's own user's history.
func ServeHistory(h host.Host, cfg HistoryConfig) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &chatHandler{
		cfg: ChatConfig{Authority: cfg.Authority, Now: cfg.Now, Revocations: cfg.Revocations, Limiter: cfg.Limiter},
		log: componentLogger(cfg.Logger, "legacy.history"),
	}
	h.SetStreamHandler(protocol.ID(legacywire.HistoryProtocolID), func(s network.Stream) {
		serveHistory(c, cfg, s)
	})
}

func serveHistory(c *chatHandler, cfg HistoryConfig, s network.Stream) {
	refuse := func(a legacywire.ChatAck) any {
		return legacywire.HistoryPage{Code: a.Code, Error: a.Error}
	}
	r := bufio.NewReader(s)
	cert, ok := c.hello(s, r, refuse)
	if !ok {
		return
	}
	var req legacywire.HistoryRequest
	_ = s.SetReadDeadline(time.Now().Add(ChatReadTimeout))
	if err := legacywire.ReadFrame(r, &req); err != nil {
		c.endOnReadError(s, err, refuse)
		return
	}
	var page legacywire.HistoryPage
	switch {
	case !cert.Has(legacywire.CapBridge):
		page = legacywire.HistoryPage{Code: legacywire.CodeNotYourUser, Error: "only the bridge may read a user's history"}
	case !req.Valid():
		page = legacywire.HistoryPage{Code: legacywire.CodeBadRequest, Error: "history request out of bounds"}
	case req.User != cfg.User:
		page = legacywire.HistoryPage{Code: legacywire.CodeWrongRecipient, Error: fmt.Sprintf("this device serves %q", cfg.User)}
	default:
		page = cfg.History.Page(req)
	}
	_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
	if err := legacywire.WriteFrame(s, page); err != nil {
		c.log.Debug("write history page", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	_ = s.Close()
}

// FetchHistory asks the device to for one page of its user's history, as
// the peer certified by self (the bridge). A refusal is a *RefusedError; a
// device that does not serve history (chat v1, or older) fails with an
// error matching ErrNotSupported.
func FetchHistory(ctx context.Context, h host.Host, self legacywire.Certificate, to peer.AddrInfo, req legacywire.HistoryRequest) (legacywire.HistoryPage, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, ChatRoundTripTimeout))
	defer cancel()
	s, stop, err := openShadowStream(ctx, h, to, legacywire.HistoryProtocolID)
	if err != nil {
		return legacywire.HistoryPage{}, err
	}
	defer stop()
	w := bufio.NewWriter(s)
	err = legacywire.WriteFrame(w, legacywire.ChatHello{Cert: self})
	if err == nil {
		err = legacywire.WriteFrame(w, req)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = s.CloseWrite()
	}
	var page legacywire.HistoryPage
	if err == nil {
		err = legacywire.ReadFrame(bufio.NewReader(s), &page)
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: stream ended without a page", ErrProtocol)
		}
	}
	if err != nil {
		_ = s.Reset()
		return legacywire.HistoryPage{}, fmt.Errorf("history from %s: %w", to.ID, err)
	}
	_ = s.Close()
	if !page.OK {
		return page, &RefusedError{Code: page.Code, Message: page.Error}
	}
	return page, nil
}
