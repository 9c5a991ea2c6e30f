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

// MaxMessageIDLen bounds ChatMessage.ID: a UUID is 36 characters, and other
// time-ordered IDs (ULID) are shorter.
const MaxMessageIDLen = 64

// ChatConfig configures the chat v1 handler.
type ChatConfig struct {
	// Authority is the key the opener's certificate must be signed by.
	Authority ed25519.PublicKey
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives the handler's logs, tagged component=legacy.chat; nil
	// discards them.
	Logger *slog.Logger
	// Deliver takes one accepted message from the certified sender and
	// returns its ack. The handler fills in the ack's ID when empty. A nil
	// Deliver refuses every message with legacywire.CodeUnavailable.
	Deliver func(ctx context.Context, from legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck
	// OnFrame takes one chat v2 or v3 frame other than a message and a
	// file_accept (receipt, typing, presence, subscribe, file_offer,
	// file_decline, the call frames) from the certified sender, after the handler has
	// checked that the frame speaks only for the sender's user, and returns
	// its ack. Nil refuses them with legacywire.CodeUnsupported.
	OnFrame func(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck
	// ServeFile answers a chat v3 file_accept from the certified sender
	// (checked to speak for its own user): the ack, and with a delivered
	// ack the file's bytes from the accepted offset, which the handler
	// writes as file_chunk frames (see FileSource) and closes. Nil refuses
	// file_accept with legacywire.CodeUnsupported.
	ServeFile func(ctx context.Context, from legacywire.Certificate, a legacywire.FileAnswer) (legacywire.ChatAck, *FileSource)
	// Revocations, when set, is consulted at the hello and at every frame:
	// a revoked certificate is refused with legacywire.CodeRevoked.
	Revocations *Revocations
	// MaxVersion is the highest chat version served: 1 registers chat v1
	// only (an old client), 2 chat v1 and v2, 0 or LatestChatVersion every
	// version.
	MaxVersion int
	// Limiter, when set, rate-limits each peer's hellos and frames (every
	// version together): one over the limit is refused with
	// legacywire.CodeRateLimited, and a peer that keeps going is cut off by
	// the limiter's OnCut.
	Limiter *PeerLimiter
}

// LatestChatVersion is the highest chat protocol version this package
// speaks.
const LatestChatVersion = 3

// ChatProtocolIDs returns the chat protocol IDs up to maxVersion (0 means
// LatestChatVersion), highest first: the order an opener offers them in, so
// that multistream-select settles on the highest version both ends speak.
func ChatProtocolIDs(maxVersion int) []protocol.ID {
	if maxVersion <= 0 || maxVersion > LatestChatVersion {
		maxVersion = LatestChatVersion
	}
	ids := []protocol.ID{legacywire.ChatV3ProtocolID, legacywire.ChatV2ProtocolID, legacywire.ChatV1ProtocolID}
	return ids[LatestChatVersion-maxVersion:]
}

// chatVersion maps a negotiated protocol ID to its version, 0 if unknown.
func chatVersion(id protocol.ID) int {
	switch id {
	case legacywire.ChatV1ProtocolID:
		return 1
	case legacywire.ChatV2ProtocolID:
		return 2
	case legacywire.ChatV3ProtocolID:
		return 3
	}
	return 0
}

// Validate reports whether the config can serve chat.
func (c ChatConfig) Validate() error {
	if len(c.Authority) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: chat needs an ed25519 authority key", ErrInvalidConfig)
	}
	if c.Deliver == nil {
		return fmt.Errorf("%w: chat needs a Deliver function", ErrInvalidConfig)
	}
	return nil
}

// HandleChat registers the chat stream handlers on h, one per version up to
// cfg.MaxVersion (see ChatProtocolIDs; remove them all with
// RemoveChatHandlers).
//
// On each stream it reads a ChatHello and verifies its certificate against
// the authority and the stream's remote peer, then reads messages in a loop.
// A message whose From is not the certificate's user is refused
// (legacywire.CodeNotYourUser) unless the certificate carries
// legacywire.CapBridge; an accepted message is handed to Deliver and its ack
// written back. A bad hello, an oversized frame or a malformed frame gets a
// refusal ack with an empty ID, then the stream is reset. The hello must
// arrive within ChatHelloTimeout, each later frame within ChatReadTimeout;
// each write has ChatWriteTimeout.
//
// HandleChat does not fail: a config that does not Validate serves refusals
// (bad_certificate without an authority key, unavailable without Deliver).
func HandleChat(h host.Host, cfg ChatConfig) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &chatHandler{cfg: cfg, log: componentLogger(cfg.Logger, "legacy.chat"), certs: legacywire.NewCertCache(0)}
	if err := cfg.Validate(); err != nil {
		c.log.Error("chat handler misconfigured: refusing every message", "err", err)
	}
	for _, id := range ChatProtocolIDs(cfg.MaxVersion) {
		switch id {
		case legacywire.ChatV1ProtocolID:
			h.SetStreamHandler(id, c.handle)
		case legacywire.ChatV2ProtocolID:
			h.SetStreamHandler(id, c.handleFrames(2))
		case legacywire.ChatV3ProtocolID:
			h.SetStreamHandler(id, c.handleFrames(3))
		}
	}
}

// RemoveChatHandlers removes every chat version's stream handler from h.
func RemoveChatHandlers(h host.Host) {
	for _, id := range ChatProtocolIDs(LatestChatVersion) {
		h.RemoveStreamHandler(id)
	}
}

type chatHandler struct {
	cfg   ChatConfig
	log   *slog.Logger
	certs *legacywire.CertCache // every stream's hello carries the opener's certificate
}

func (c *chatHandler) handle(s network.Stream) {
	remote := s.Conn().RemotePeer()
	r := getReader(s)
	defer putReader(r)

	cert, ok := c.hello(s, r, func(a legacywire.ChatAck) any { return a })
	if !ok {
		return
	}

	for {
		var msg legacywire.ChatMessage
		_ = s.SetReadDeadline(time.Now().Add(ChatReadTimeout))
		if err := legacywire.ReadFrame(r, &msg); err != nil {
			if err == io.EOF {
				_ = s.Close()
				return
			}
			c.endOnReadError(s, err, func(a legacywire.ChatAck) any { return a })
			return
		}
		ack := refusedAck(msg.ID, legacywire.CodeRateLimited, "too many messages from this peer")
		if c.cfg.Limiter.Allow(remote) {
			ack = c.accept(cert, msg)
		}
		_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
		if err := legacywire.WriteFrame(s, ack); err != nil {
			c.log.Debug("write chat ack", "peer", remote, "err", err)
			_ = s.Reset()
			return
		}
	}
}

// hello reads and checks the ChatHello that opens every chat version's
// stream. On failure it has answered (wrapping the refusal ack with wrap, so
// each version gets its own frame type) and ended the stream.
func (c *chatHandler) hello(s network.Stream, r *bufio.Reader, wrap func(legacywire.ChatAck) any) (legacywire.Certificate, bool) {
	remote := s.Conn().RemotePeer()
	var hello legacywire.ChatHello
	_ = s.SetReadDeadline(time.Now().Add(ChatHelloTimeout))
	if err := legacywire.ReadFrame(r, &hello); err != nil {
		c.endOnReadError(s, err, wrap)
		return legacywire.Certificate{}, false
	}
	cert := hello.Cert
	if !c.cfg.Limiter.Allow(remote) {
		refuseAndReset(s, wrap(refusedAck("", legacywire.CodeRateLimited, "too many streams from this peer")), c.log)
		return legacywire.Certificate{}, false
	}
	if code, err := verifyPeerCert(c.certs, cert, c.cfg.Authority, remote.String(), c.cfg.Now(), c.cfg.Revocations); err != nil {
		c.log.Info("refused chat hello", "peer", remote, "user", cert.User, "err", err)
		refuseAndReset(s, wrap(refusedAck("", code, err.Error())), c.log)
		return legacywire.Certificate{}, false
	}
	return cert, true
}

// handleFrames returns the handler of chat version (2 or 3) streams: a
// hello, then typed frames, each answered by an ack frame; on v3 an
// accepted file_accept is followed by the file's chunks.
func (c *chatHandler) handleFrames(version int) network.StreamHandler {
	return func(s network.Stream) { c.serveFrames(s, version) }
}

func (c *chatHandler) serveFrames(s network.Stream, version int) {
	remote := s.Conn().RemotePeer()
	r := getReader(s)
	defer putReader(r)
	wrap := func(a legacywire.ChatAck) any { return legacywire.ChatFrame{Type: legacywire.FrameAck, Ack: &a} }
	cert, ok := c.hello(s, r, wrap)
	if !ok {
		return
	}
	for {
		var f legacywire.ChatFrame
		_ = s.SetReadDeadline(time.Now().Add(ChatReadTimeout))
		if err := legacywire.ReadFrame(r, &f); err != nil {
			if err == io.EOF {
				_ = s.Close()
				return
			}
			c.endOnReadError(s, err, wrap)
			return
		}
		ack := refusedAck(f.ID, legacywire.CodeRateLimited, "too many frames from this peer")
		var src *FileSource
		if c.cfg.Limiter.Allow(remote) {
			ack, src = c.acceptFrame(cert, f, version)
		}
		_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
		if err := legacywire.WriteFrame(s, wrap(ack)); err != nil {
			c.log.Debug("write chat ack", "peer", remote, "err", err)
			src.close()
			_ = s.Reset()
			return
		}
		if src != nil {
			if err := src.writeChunks(s); err != nil {
				c.log.Info("file transfer cut", "peer", remote, "err", err)
				_ = s.Reset()
				return
			}
		}
	}
}

// acceptFrame checks one v2 or v3 frame (on a stream of version) against
// the sender's certificate and hands it to Deliver (messages), ServeFile
// (file_accept, which may return the file to send) or OnFrame (the rest).
func (c *chatHandler) acceptFrame(cert legacywire.Certificate, f legacywire.ChatFrame, version int) (legacywire.ChatAck, *FileSource) {
	if legacywire.V3Only(f.Type) && version < 3 {
		return refusedAck(f.ID, legacywire.CodeUnsupported, f.Type+" needs chat v3"), nil
	}
	if !f.Valid() || f.Type == legacywire.FrameAck || f.Type == legacywire.FrameFileChunk || len(f.ID) > MaxMessageIDLen {
		return refusedAck(f.ID, legacywire.CodeBadFrame, fmt.Sprintf("invalid %q frame", f.Type)), nil
	}
	if f.Type == legacywire.FrameMsg {
		return c.accept(cert, *f.Msg), nil
	}
	if code, msg := c.certLive(cert); code != "" {
		return refusedAck(f.ID, code, msg), nil
	}
	var speaksFor string
	switch f.Type {
	case legacywire.FrameReceipt:
		speaksFor = f.Receipt.Reader
	case legacywire.FrameTyping:
		speaksFor = f.Typing.From
	case legacywire.FramePresence:
		speaksFor = f.Presence.User
	case legacywire.FrameSubscribe:
		speaksFor = cert.User
	case legacywire.FrameFileOffer:
		speaksFor = f.FileOffer.From
	case legacywire.FrameFileAccept, legacywire.FrameFileDecline:
		speaksFor = f.FileAnswer.From
	default:
		if legacywire.IsCallFrame(f.Type) {
			speaksFor = f.Call.From
		}
	}
	if speaksFor != cert.User && !cert.Has(legacywire.CapBridge) {
		return refusedAck(f.ID, legacywire.CodeNotYourFrame,
			fmt.Sprintf("certificate is for %q, frame speaks for %q", cert.User, speaksFor)), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), ChatDeliverTimeout)
	defer cancel()
	var (
		ack legacywire.ChatAck
		src *FileSource
	)
	switch {
	case f.Type == legacywire.FrameFileAccept && c.cfg.ServeFile != nil:
		ack, src = c.cfg.ServeFile(ctx, cert, *f.FileAnswer)
	case f.Type != legacywire.FrameFileAccept && c.cfg.OnFrame != nil:
		ack = c.cfg.OnFrame(ctx, cert, f)
	default:
		return refusedAck(f.ID, legacywire.CodeUnsupported, f.Type+" is not served here"), nil
	}
	if ack.ID == "" {
		ack.ID = f.ID
	}
	if ack.Status != legacywire.StatusDelivered && ack.Status != legacywire.StatusRefused {
		c.log.Error("OnFrame or ServeFile returned an ack without a valid status", "status", ack.Status)
		src.close()
		return refusedAck(f.ID, legacywire.CodeUnavailable, "delivery failed"), nil
	}
	if !ack.Delivered() {
		src.close()
		src = nil
	}
	return ack, src
}

// certLive reports why a certificate accepted at the hello no longer is
// (expired or revoked during the stream), or "".
func (c *chatHandler) certLive(cert legacywire.Certificate) (code, msg string) {
	switch {
	case !c.cfg.Now().Before(cert.NotAfter):
		return legacywire.CodeExpired, "certificate expired during the stream"
	case c.cfg.Revocations.Revoked(cert.PeerID):
		return legacywire.CodeRevoked, "certificate revoked during the stream"
	}
	return "", ""
}

// accept checks msg against the sender's certificate and delivers it.
func (c *chatHandler) accept(cert legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck {
	switch {
	case msg.ID == "" || len(msg.ID) > MaxMessageIDLen:
		return refusedAck(msg.ID, legacywire.CodeBadMessage, "message id missing or too long")
	case msg.To == "":
		return refusedAck(msg.ID, legacywire.CodeBadMessage, "message without recipient")
	case !c.cfg.Now().Before(cert.NotAfter):
		return refusedAck(msg.ID, legacywire.CodeExpired, "certificate expired during the stream")
	case c.cfg.Revocations.Revoked(cert.PeerID):
		return refusedAck(msg.ID, legacywire.CodeRevoked, "certificate revoked during the stream")
	case msg.From != cert.User && !cert.Has(legacywire.CapBridge):
		return refusedAck(msg.ID, legacywire.CodeNotYourUser,
			fmt.Sprintf("certificate is for %q, message is from %q", cert.User, msg.From))
	case c.cfg.Deliver == nil:
		return refusedAck(msg.ID, legacywire.CodeUnavailable, "no delivery configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), ChatDeliverTimeout)
	defer cancel()
	ack := c.cfg.Deliver(ctx, cert, msg)
	if ack.ID == "" {
		ack.ID = msg.ID
	}
	if ack.Status != legacywire.StatusDelivered && ack.Status != legacywire.StatusRefused {
		c.log.Error("Deliver returned an ack without a valid status", "status", ack.Status)
		return refusedAck(msg.ID, legacywire.CodeUnavailable, "delivery failed")
	}
	return ack
}

// endOnReadError ends the stream after a failed frame read: framing errors
// get a refusal first, transport errors only a reset.
func (c *chatHandler) endOnReadError(s network.Stream, err error, wrap func(legacywire.ChatAck) any) {
	code := frameCode(err)
	if code == "" {
		c.log.Debug("read chat frame", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	c.log.Info("refused chat frame", "peer", s.Conn().RemotePeer(), "code", code, "err", err)
	refuseAndReset(s, wrap(refusedAck("", code, err.Error())), c.log)
}

func refusedAck(id, code, msg string) legacywire.ChatAck {
	return legacywire.ChatAck{ID: id, Status: legacywire.StatusRefused, Code: code, Error: msg}
}

// SendChat sends msg to the device to as the device certified by self: it
// connects, opens a chat v1 stream, writes the hello and the message, and
// reads the ack. A refusal is a well-formed ack (Status refused) with a nil
// error; the error reports transport failures and protocol violations
// (ErrProtocol). A refusal of the whole stream (an ack with no ID, for
// example for a bad certificate) comes back with msg.ID filled in.
func SendChat(ctx context.Context, h host.Host, self legacywire.Certificate, to peer.AddrInfo, msg legacywire.ChatMessage) (legacywire.ChatAck, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, ChatRoundTripTimeout))
	defer cancel()
	if err := h.Connect(ctx, to); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("connect to %s: %w", to.ID, err)
	}
	s, err := h.NewStream(ctx, to.ID, protocol.ID(legacywire.ChatV1ProtocolID))
	if err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("open chat stream to %s: %w", to.ID, err)
	}
	stop := resetOnCancel(ctx, s)
	defer stop()
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)

	ack, err := chatExchange(s, self, msg)
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return legacywire.ChatAck{}, fmt.Errorf("chat with %s: %w", to.ID, err)
	}
	_ = s.Close()
	return ack, nil
}

// chatExchange writes the hello and msg on s and reads the ack.
func chatExchange(s network.Stream, self legacywire.Certificate, msg legacywire.ChatMessage) (legacywire.ChatAck, error) {
	// Hello and message leave in one write.
	w := getWriter(s)
	defer putWriter(w)
	if err := legacywire.WriteFrame(w, legacywire.ChatHello{Cert: self}); err != nil {
		return legacywire.ChatAck{}, err
	}
	if err := legacywire.WriteFrame(w, msg); err != nil {
		return legacywire.ChatAck{}, err
	}
	if err := w.Flush(); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("write: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("close write: %w", err)
	}
	var ack legacywire.ChatAck
	r := getReader(s)
	defer putReader(r)
	if err := legacywire.ReadFrame(r, &ack); err != nil {
		if errors.Is(err, io.EOF) {
			return legacywire.ChatAck{}, fmt.Errorf("%w: stream ended without an ack", ErrProtocol)
		}
		return legacywire.ChatAck{}, fmt.Errorf("read ack: %w", err)
	}
	switch {
	case ack.ID == "" && ack.Status == legacywire.StatusRefused:
		ack.ID = msg.ID
	case ack.ID != msg.ID:
		return legacywire.ChatAck{}, fmt.Errorf("%w: ack for %q, sent %q", ErrProtocol, ack.ID, msg.ID)
	case ack.Status != legacywire.StatusDelivered && ack.Status != legacywire.StatusRefused:
		return legacywire.ChatAck{}, fmt.Errorf("%w: ack status %q", ErrProtocol, ack.Status)
	}
	return ack, nil
}
