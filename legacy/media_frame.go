package legacy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// MaxMediaFrameSize is the largest media frame, in bytes. Media packets are
// small (an audio packet is tens of bytes, a video packet under an MTU);
// a codec splits larger frames before they reach the stream.
const MaxMediaFrameSize = 16 << 10

// mediaHeaderLen is the size of a media frame's length prefix.
const mediaHeaderLen = 2

// appendMediaFrame appends b as one media frame to dst: its length as two
// big-endian bytes, then b. It returns legacywire.ErrFrameTooLarge for a
// frame over MaxMediaFrameSize.
func appendMediaFrame(dst, b []byte) ([]byte, error) {
	if len(b) > MaxMediaFrameSize {
		return dst, fmt.Errorf("%w: media frame of %d bytes", legacywire.ErrFrameTooLarge, len(b))
	}
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(b))) // #nosec G115 -- len(b) <= MaxMediaFrameSize (16 KiB), checked above
	return append(dst, b...), nil
}

// readMediaFrame reads one media frame from r into buf (grown when too
// small). It returns io.EOF unwrapped when r ends between frames,
// legacywire.ErrFrameTooLarge when the announced length exceeds
// MaxMediaFrameSize (the body is left unread), and
// legacywire.ErrMalformedFrame (matching io.ErrUnexpectedEOF) when r ends
// inside a frame. Other read errors come back wrapped.
func readMediaFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [mediaHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, mediaReadErr(err, "header", true)
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n > MaxMediaFrameSize {
		return nil, fmt.Errorf("%w: media frame of %d bytes announced", legacywire.ErrFrameTooLarge, n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, mediaReadErr(err, "body", false)
	}
	return buf, nil
}

// mediaReadErr maps a ReadFull error: a clean end before a header is io.EOF
// (when atBoundary), a short read is a malformed frame.
func mediaReadErr(err error, where string, atBoundary bool) error {
	switch {
	case atBoundary && err == io.EOF:
		return io.EOF
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %w in media frame %s", legacywire.ErrMalformedFrame, io.ErrUnexpectedEOF, where)
	}
	return fmt.Errorf("legacy: read media frame: %w", err)
}
