package legacywire

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestFrameRoundTrip(t *testing.T) {
	msgs := []ChatMessage{
		{ID: "a", From: "alice", To: "bob", Text: "hi", SentAt: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)},
		{ID: "b", From: "bob", To: "alice", Text: strings.Repeat("x", 1000)},
		{ID: "c", Text: "ünïcødé ✓"},
	}
	var buf bytes.Buffer
	for _, m := range msgs {
		if err := WriteFrame(&buf, m); err != nil {
			t.Fatalf("WriteFrame: %v", err)
		}
	}
	r := bufio.NewReader(&buf)
	for i, want := range msgs {
		var got ChatMessage
		if err := ReadFrame(r, &got); err != nil {
			t.Fatalf("ReadFrame %d: %v", i, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("frame %d (-want +got):\n%s", i, diff)
		}
	}
	var extra ChatMessage
	if err := ReadFrame(r, &extra); err != io.EOF {
		t.Fatalf("ReadFrame at end = %v, want io.EOF unwrapped", err)
	}
}

func TestWriteFrameTooLarge(t *testing.T) {
	var buf bytes.Buffer
	err := WriteFrame(&buf, ChatMessage{Text: strings.Repeat("x", MaxFrameSize)})
	if !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("WriteFrame = %v, want ErrFrameTooLarge", err)
	}
	if buf.Len() != 0 {
		t.Errorf("WriteFrame wrote %d bytes of an oversized frame", buf.Len())
	}
}

// countingReader counts how many bytes were read from it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestReadFrameErrors(t *testing.T) {
	frame := func(body string) []byte {
		return append(binary.AppendUvarint(nil, uint64(len(body))), body...)
	}
	tests := []struct {
		name    string
		in      []byte
		want    []error
		wantEOF bool
	}{
		{name: "empty stream", in: nil, wantEOF: true},
		{name: "too large", in: binary.AppendUvarint(nil, MaxFrameSize+1), want: []error{ErrFrameTooLarge}},
		{name: "huge length", in: binary.AppendUvarint(nil, 1<<62), want: []error{ErrFrameTooLarge}},
		{name: "varint overflow", in: bytes.Repeat([]byte{0xff}, 11), want: []error{ErrMalformedFrame}},
		{name: "truncated length", in: []byte{0x80}, want: []error{ErrMalformedFrame, io.ErrUnexpectedEOF}},
		{name: "truncated body", in: frame(`{"id":"x"}`)[:5], want: []error{ErrMalformedFrame, io.ErrUnexpectedEOF}},
		{name: "bad json", in: frame(`{"id":`), want: []error{ErrMalformedFrame}},
		{name: "empty body", in: frame(``), want: []error{ErrMalformedFrame}},
		{name: "wrong type", in: frame(`{"id":42}`), want: []error{ErrMalformedFrame}},
		{name: "trailing data", in: frame(`{"id":"a"}x`), want: []error{ErrMalformedFrame}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m ChatMessage
			err := ReadFrame(bufio.NewReader(bytes.NewReader(tt.in)), &m)
			if tt.wantEOF {
				if err != io.EOF {
					t.Fatalf("ReadFrame = %v, want io.EOF", err)
				}
				return
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("ReadFrame = %v, want it to match %v", err, w)
				}
			}
		})
	}
}

func TestReadFrameTooLargeReadsNoBody(t *testing.T) {
	in := append(binary.AppendUvarint(nil, MaxFrameSize+1), bytes.Repeat([]byte("x"), MaxFrameSize+1)...)
	cr := &countingReader{r: bytes.NewReader(in)}
	// A tiny buffer keeps bufio from reading ahead into the body.
	r := bufio.NewReaderSize(cr, 16)
	var m ChatMessage
	if err := ReadFrame(r, &m); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadFrame = %v, want ErrFrameTooLarge", err)
	}
	if cr.n > 16 {
		t.Errorf("ReadFrame read %d bytes, want only the length prefix (buffered)", cr.n)
	}
}
