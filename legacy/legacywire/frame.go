package legacywire

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// WriteFrame encodes v as JSON and writes it to w as one frame: the body's
// length as an unsigned varint, then the body. The frame goes out in a single
// Write call. It returns ErrFrameTooLarge, writing nothing, when the body
// exceeds MaxFrameSize.
func WriteFrame(w io.Writer, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("legacywire: encode frame: %w", err)
	}
	if len(body) > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(body))
	}
	buf := make([]byte, 0, binary.MaxVarintLen64+len(body))
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	buf = append(buf, body...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("legacywire: write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame from r and decodes its JSON body into v.
//
// It returns io.EOF unwrapped when the stream ends cleanly between frames,
// ErrFrameTooLarge when the announced length exceeds MaxFrameSize (before
// reading the body, which is left unread), and ErrMalformedFrame for a bad
// length prefix, a stream that ends inside a frame (also matching
// io.ErrUnexpectedEOF), or a body that is not valid JSON for v. Other read
// errors (deadlines, resets) are returned wrapped as they are.
func ReadFrame(r *bufio.Reader, v any) error {
	n, err := readLength(r)
	if err != nil {
		return err
	}
	if n > MaxFrameSize {
		return fmt.Errorf("%w: %d bytes announced", ErrFrameTooLarge, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("%w: %w in body", ErrMalformedFrame, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("legacywire: read frame body: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	return nil
}

// readLength reads the uvarint length prefix of a frame.
func readLength(r io.ByteReader) (uint64, error) {
	var x uint64
	var shift uint
	for i := 0; i < binary.MaxVarintLen64; i++ {
		b, err := r.ReadByte()
		switch {
		case err == io.EOF && i == 0:
			return 0, io.EOF
		case err == io.EOF:
			return 0, fmt.Errorf("%w: %w in length prefix", ErrMalformedFrame, io.ErrUnexpectedEOF)
		case err != nil:
			return 0, fmt.Errorf("legacywire: read frame length: %w", err)
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			break
		}
		x |= uint64(b&0x7f) << shift
		if b < 0x80 {
			return x, nil
		}
		shift += 7
	}
	return 0, fmt.Errorf("%w: length prefix overflows 64 bits", ErrMalformedFrame)
}
