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

// HandleChat registers the chat v1 stream handler on h.
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
	c := &chatHandler{cfg: cfg, log: componentLogger(cfg.Logger, "legacy.chat")}
	if err := cfg.Validate(); err != nil {
		c.log.Error("chat handler misconfigured: refusing every message", "err", err)
	}
	h.SetStreamHandler(protocol.ID(legacywire.ChatV1ProtocolID), c.handle)
}

type chatHandler struct {
	cfg ChatConfig
	log *slog.Logger
}

func (c *chatHandler) handle(s network.Stream) {
	remote := s.Conn().RemotePeer()
	r := bufio.NewReader(s)

	var hello legacywire.ChatHello
	_ = s.SetReadDeadline(time.Now().Add(ChatHelloTimeout))
	if err := legacywire.ReadFrame(r, &hello); err != nil {
		c.endOnReadError(s, err)
		return
	}
	cert := hello.Cert
	if err := cert.Verify(c.cfg.Authority, remote.String(), c.cfg.Now()); err != nil {
		c.log.Info("refused chat hello", "peer", remote, "user", cert.User, "err", err)
		refuseAndReset(s, refusedAck("", legacywire.CertCode(err), err.Error()), c.log)
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
			c.endOnReadError(s, err)
			return
		}
		ack := c.accept(cert, msg)
		_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
		if err := legacywire.WriteFrame(s, ack); err != nil {
			c.log.Debug("write chat ack", "peer", remote, "err", err)
			_ = s.Reset()
			return
		}
	}
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
func (c *chatHandler) endOnReadError(s network.Stream, err error) {
	code := frameCode(err)
	if code == "" {
		c.log.Debug("read chat frame", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	c.log.Info("refused chat frame", "peer", s.Conn().RemotePeer(), "code", code, "err", err)
	refuseAndReset(s, refusedAck("", code, err.Error()), c.log)
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
	w := bufio.NewWriter(s)
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
	if err := legacywire.ReadFrame(bufio.NewReader(s), &ack); err != nil {
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
