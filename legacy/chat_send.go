package legacy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// SendChatFrame sends one chat frame to the device to as the device
// certified by self, on a stream negotiated to the highest chat version both
// ends speak, up to maxVersion (0 means LatestChatVersion). It returns the
// ack and the version spoken.
//
// Degradation: a file offer to a peer that speaks only chat v1 or v2 goes
// out as a text message telling the user about the file (FileNoticeFrame:
// same ID, the file's name and size), delivered like any message. When the
// peer speaks only chat v1, a message frame goes out as a v1 ChatMessage
// and any other frame is not sent at all, nor a v3-only frame to a v2 peer:
// the stream is closed before its hello and the error matches
// ErrNotSupported. A peer never receives a frame it cannot parse. Refusals
// and errors are as in SendChat.
func SendChatFrame(ctx context.Context, h host.Host, self legacywire.Certificate, to peer.AddrInfo, maxVersion int, f legacywire.ChatFrame) (legacywire.ChatAck, int, error) {
	if !f.Valid() || f.Type == legacywire.FrameAck || f.Type == legacywire.FrameFileChunk {
		return legacywire.ChatAck{}, 0, fmt.Errorf("legacy: invalid %q frame to send", f.Type)
	}
	ctx, cancel := context.WithDeadline(ctx, deadline(ctx, ChatRoundTripTimeout))
	defer cancel()
	s, version, err := openChat(ctx, h, to, maxVersion)
	if err != nil {
		return legacywire.ChatAck{}, 0, err
	}
	return chatOnce(ctx, s, version, self, to.ID, f)
}

// chatOnce is SendChatFrame on the fresh chat stream s of version: it
// sends f, reads the ack and ends the stream.
func chatOnce(ctx context.Context, s network.Stream, version int, self legacywire.Certificate, to peer.ID, f legacywire.ChatFrame) (legacywire.ChatAck, int, error) {
	stop := resetOnCancel(ctx, s)
	defer stop()
	dl, _ := ctx.Deadline()
	_ = s.SetDeadline(dl)

	if version < 3 && f.Type == legacywire.FrameFileOffer {
		f = FileNoticeFrame(*f.FileOffer)
	}
	var (
		ack legacywire.ChatAck
		err error
	)
	switch {
	case version == 3 || (version == 2 && !legacywire.V3Only(f.Type)):
		r := getReader(s) // nothing is read after the ack
		ack, err = chatExchangeV2(s, r, self, f)
		putReader(r)
	case version == 1 && f.Type == legacywire.FrameMsg:
		ack, err = chatExchange(s, self, *f.Msg)
	case version == 1 || version == 2:
		_ = s.Reset()
		return legacywire.ChatAck{}, version, fmt.Errorf("%w: %s to %s speaks chat v%d", ErrNotSupported, f.Type, to, version)
	default:
		_ = s.Reset()
		return legacywire.ChatAck{}, 0, fmt.Errorf("%w: negotiated unknown protocol %q", ErrProtocol, s.Protocol())
	}
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return legacywire.ChatAck{}, version, fmt.Errorf("chat with %s: %w", to, err)
	}
	_ = s.Close()
	return ack, version, nil
}

// openChat connects to the peer to and opens a chat stream negotiated to
// the highest version both ends speak, up to maxVersion. It returns the
// stream and the version spoken.
func openChat(ctx context.Context, h host.Host, to peer.AddrInfo, maxVersion int) (network.Stream, int, error) {
	if err := h.Connect(ctx, to); err != nil {
		return nil, 0, fmt.Errorf("connect to %s: %w", to.ID, err)
	}
	s, err := h.NewStream(ctx, to.ID, ChatProtocolIDs(maxVersion)...)
	if err != nil {
		return nil, 0, fmt.Errorf("open chat stream to %s: %w", to.ID, err)
	}
	return s, chatVersion(s.Protocol()), nil
}

// chatExchangeV2 writes the hello and one frame on s, half-closes, and
// reads its ack frame from r (s's reader, which the caller may read on
// after the ack).
func chatExchangeV2(s network.Stream, r *bufio.Reader, self legacywire.Certificate, f legacywire.ChatFrame) (legacywire.ChatAck, error) {
	w := getWriter(s)
	defer putWriter(w)
	if err := legacywire.WriteFrame(w, legacywire.ChatHello{Cert: self}); err != nil {
		return legacywire.ChatAck{}, err
	}
	if err := legacywire.WriteFrame(w, f); err != nil {
		return legacywire.ChatAck{}, err
	}
	if err := w.Flush(); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("write: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("close write: %w", err)
	}
	ack, _, err := readChatAck(r, f.ID)
	return ack, err
}

// readChatAck reads the ack frame answering the frame with ID id from r.
// answered reports that the ack names id: a refusal of the whole stream
// (its hello) carries no ID, is returned with id filled in, and ends the
// stream.
func readChatAck(r *bufio.Reader, id string) (ack legacywire.ChatAck, answered bool, err error) {
	var resp legacywire.ChatFrame
	if err := legacywire.ReadFrame(r, &resp); err != nil {
		if errors.Is(err, io.EOF) {
			return legacywire.ChatAck{}, false, fmt.Errorf("%w: stream ended without an ack", ErrProtocol)
		}
		return legacywire.ChatAck{}, false, fmt.Errorf("read ack: %w", err)
	}
	if resp.Type != legacywire.FrameAck || resp.Ack == nil {
		return legacywire.ChatAck{}, false, fmt.Errorf("%w: answer of type %q, want an ack", ErrProtocol, resp.Type)
	}
	ack = *resp.Ack
	switch {
	case ack.ID == "" && ack.Status == legacywire.StatusRefused:
		ack.ID = id
		return ack, false, nil
	case ack.ID != id:
		return legacywire.ChatAck{}, false, fmt.Errorf("%w: ack for %q, sent %q", ErrProtocol, ack.ID, id)
	case ack.Status != legacywire.StatusDelivered && ack.Status != legacywire.StatusRefused:
		return legacywire.ChatAck{}, false, fmt.Errorf("%w: ack status %q", ErrProtocol, ack.Status)
	}
	return ack, true, nil
}
