package legacy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Stream deadlines. Every stream on the overlay runs under one of these.
const (
	// DirectoryStreamTimeout bounds a whole directory exchange (one request,
	// one response), on both ends.
	DirectoryStreamTimeout = 10 * time.Second
	// ChatHelloTimeout bounds the wait for the hello that opens a chat
	// stream: a peer that opens streams and says nothing is cut off early.
	ChatHelloTimeout = 10 * time.Second
	// ChatReadTimeout bounds the wait for each frame on a chat stream,
	// including the idle time between two messages.
	ChatReadTimeout = time.Minute
	// ChatWriteTimeout bounds each frame written on a chat stream.
	ChatWriteTimeout = 10 * time.Second
	// ChatRoundTripTimeout bounds SendChat's whole exchange when the caller's
	// context has no earlier deadline.
	ChatRoundTripTimeout = 15 * time.Second
	// ChatDeliverTimeout bounds one call to ChatConfig.Deliver.
	ChatDeliverTimeout = 10 * time.Second
	// refusalLinger is how long a refusing end keeps a stream after writing
	// its refusal, draining input, so the refusal is read before the reset
	// (a yamux reset discards data the other end has not read yet).
	refusalLinger = time.Second
)

// deadline returns now+d, or ctx's deadline if that comes first.
func deadline(ctx context.Context, d time.Duration) time.Time {
	dl := time.Now().Add(d)
	if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
		return cd
	}
	return dl
}

// resetOnCancel resets s when ctx is done before the returned stop function
// is called: stream deadlines do not watch contexts.
func resetOnCancel(ctx context.Context, s network.Stream) (stop func() bool) {
	return context.AfterFunc(ctx, func() { _ = s.Reset() })
}

// refuseAndReset writes a refusal frame, half-closes, drains what the other
// end still sends for at most refusalLinger (and at most two frames' worth),
// then resets. The caller has already stopped reading frames.
func refuseAndReset(s network.Stream, refusal any, log *slog.Logger) {
	_ = s.SetWriteDeadline(time.Now().Add(ChatWriteTimeout))
	if err := legacywire.WriteFrame(s, refusal); err != nil {
		log.Debug("write refusal", "peer", s.Conn().RemotePeer(), "err", err)
		_ = s.Reset()
		return
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.SetReadDeadline(time.Now().Add(refusalLinger))
	const limit = 2 * legacywire.MaxFrameSize
	n, err := io.Copy(io.Discard, io.LimitReader(s, limit))
	if err == nil && n < limit && s.Close() == nil {
		// The other end read the refusal and closed: nothing left to reset.
		return
	}
	_ = s.Reset()
}

// frameCode maps a ReadFrame error to the refusal code for it, or "" when
// the error is a transport failure that deserves no answer.
func frameCode(err error) string {
	switch {
	case errors.Is(err, legacywire.ErrFrameTooLarge):
		return legacywire.CodeTooLarge
	case errors.Is(err, legacywire.ErrMalformedFrame):
		return legacywire.CodeBadFrame
	default:
		return ""
	}
}

// componentLogger returns l (or a discarding logger) tagged with component.
func componentLogger(l *slog.Logger, component string) *slog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return l.With("component", component)
}
