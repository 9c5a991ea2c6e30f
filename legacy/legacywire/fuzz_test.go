package legacywire

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func FuzzReadFrame(f *testing.F) {
	for _, v := range goldenFrames(f) {
		var buf bytes.Buffer
		if err := WriteFrame(&buf, v); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add(binary.AppendUvarint(nil, MaxFrameSize+1))
	f.Add(bytes.Repeat([]byte{0xff}, 12))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			var msg ChatMessage
			err := ReadFrame(r, &msg)
			if err == nil {
				continue
			}
			if err != io.EOF && !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("ReadFrame returned a non-sentinel error: %v", err)
			}
			return
		}
	})
}

func FuzzCertificateVerify(f *testing.F) {
	key := testKey(f, 3)
	pub := key.Public().(ed25519.PublicKey)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid := SignCertificate(key, Certificate{PeerID: "p1", User: "alice", Platform: "ios", ClientVersion: "1", NotAfter: now.Add(time.Hour)})
	seed, err := json.Marshal(valid)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "p1")
	f.Add([]byte(`{"peer_id":"p1","user":"alice","sig":"AAAA"}`), "p1")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, data []byte, peerID string) {
		var c Certificate
		if err := json.Unmarshal(data, &c); err != nil {
			return
		}
		err := c.Verify(pub, peerID, now)
		if err == nil {
			// Only the one certificate we signed (modulo JSON spelling) may
			// verify: anything else means the signing bytes are ambiguous.
			if c.PeerID != valid.PeerID || c.User != valid.User || c.Platform != valid.Platform ||
				c.ClientVersion != valid.ClientVersion || len(c.Capabilities) != 0 ||
				c.NotAfter.UnixMilli() != valid.NotAfter.UnixMilli() || peerID != valid.PeerID {
				t.Fatalf("forged certificate verified: %+v", c)
			}
			return
		}
		if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrExpired) && !errors.Is(err, ErrPeerMismatch) {
			t.Fatalf("Verify returned a non-sentinel error: %v", err)
		}
	})
}

// addGoldenSeeds adds, as framed bytes, every golden frame that keep
// selects to f's corpus.
func addGoldenSeeds(f *testing.F, keep func(name string, v any) bool) {
	f.Helper()
	for name, v := range goldenFrames(f) {
		if !keep(name, v) {
			continue
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, v); err != nil {
			f.Fatal(name, err)
		}
		f.Add(buf.Bytes())
	}
}

// checkReadErr fails t when a ReadFrame error is none of its sentinels.
func checkReadErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && err != io.EOF && !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("ReadFrame returned a non-sentinel error: %v", err)
	}
}

func FuzzReadChatFrame(f *testing.F) {
	addGoldenSeeds(f, func(_ string, v any) bool { _, ok := v.(ChatFrame); return ok })
	f.Add([]byte{})
	f.Add(binary.AppendUvarint(nil, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			var fr ChatFrame
			err := ReadFrame(r, &fr)
			if err != nil {
				checkReadErr(t, err)
				return
			}
			if fr.Valid() && fr.Type == FrameMsg && fr.Msg.ID != fr.ID {
				t.Fatalf("valid msg frame with mismatched ids: %+v", fr)
			}
		}
	})
}

func FuzzRevocationVerify(f *testing.F) {
	key := testKey(f, 4)
	pub := key.Public().(ed25519.PublicKey)
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	valid := SignRevocation(key, Revocation{PeerID: "p1", User: "alice", RevokedAt: at, NotAfter: at.Add(time.Hour)})
	seed, err := json.Marshal(valid)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"peer_id":"p1","sig":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var r Revocation
		if err := json.Unmarshal(data, &r); err != nil {
			return
		}
		err := r.Verify(pub)
		if err == nil {
			if r.PeerID != valid.PeerID || r.User != valid.User || r.Reason != valid.Reason ||
				r.RevokedAt.UnixMilli() != valid.RevokedAt.UnixMilli() || r.NotAfter.UnixMilli() != valid.NotAfter.UnixMilli() {
				t.Fatalf("forged revocation verified: %+v", r)
			}
			return
		}
		if !errors.Is(err, ErrBadSignature) {
			t.Fatalf("Verify returned a non-sentinel error: %v", err)
		}
	})
}

// validChatFrames decodes data as a framed ChatFrame and, wrapped in a
// frame, as a ChatFrame's body, and returns the decoded frames that are
// Valid. A read error must be one of ReadFrame's sentinels.
func validChatFrames(t *testing.T, data []byte) []ChatFrame {
	t.Helper()
	var body bytes.Buffer
	_ = WriteFrame(&body, json.RawMessage(data)) // also try the raw bytes as a body
	var out []ChatFrame
	for _, in := range [][]byte{data, body.Bytes()} {
		var fr ChatFrame
		if err := ReadFrame(bufio.NewReader(bytes.NewReader(in)), &fr); err != nil {
			checkReadErr(t, err)
			continue
		}
		if fr.Valid() {
			out = append(out, fr)
		}
	}
	return out
}

// FuzzReadFileFrame decodes chat v3 frames: a frame that is Valid keeps
// every file payload inside the wire's bounds.
func FuzzReadFileFrame(f *testing.F) {
	addGoldenSeeds(f, func(name string, _ any) bool { return strings.HasPrefix(name, "chat3_") })
	f.Add([]byte(`{"type":"file_chunk","file_chunk":{"file_id":"f","offset":-1,"data":"AA=="}}`))
	f.Add([]byte(`{"type":"file_offer","id":"f","file_offer":{"id":"f","size":1e30}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fr := range validChatFrames(t, data) {
			switch fr.Type {
			case FrameFileOffer:
				o := fr.FileOffer
				if o.Size < 0 || o.Size > MaxFileSize || o.ChunkSize < 1 || o.ChunkSize > MaxFileChunk || len(o.Name) > MaxFileNameLen || o.ID != fr.ID {
					t.Fatalf("valid offer out of bounds: %+v", o)
				}
			case FrameFileChunk:
				if c := fr.FileChunk; c.Offset < 0 || len(c.Data) == 0 || len(c.Data) > MaxFileChunk {
					t.Fatalf("valid chunk out of bounds: offset %d, %d bytes", c.Offset, len(c.Data))
				}
			case FrameFileAccept, FrameFileDecline:
				if a := fr.FileAnswer; a.Offset < 0 || a.FileID == "" || fr.ID == "" {
					t.Fatalf("valid answer out of bounds: %+v", a)
				}
			}
		}
	})
}

// FuzzReadDirResponse decodes directory responses, undeliverable reports
// included, without panicking or returning a non-sentinel error.
func FuzzReadDirResponse(f *testing.F) {
	addGoldenSeeds(f, func(_ string, v any) bool { _, ok := v.(DirResponse); return ok })
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp DirResponse
		err := ReadFrame(bufio.NewReader(bytes.NewReader(data)), &resp)
		checkReadErr(t, err)
		if err == nil {
			// What decodes encodes again.
			if err := WriteFrame(io.Discard, resp); err != nil && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}

// FuzzReadCallFrame decodes call signalling frames: a frame that is Valid
// and of a call type carries a complete CallSignal, with a known media
// kind and a bounded ring time on invites and a known reason on cancels.
func FuzzReadCallFrame(f *testing.F) {
	addGoldenSeeds(f, func(name string, _ any) bool { return strings.HasPrefix(name, "chat2_call_") })
	f.Add([]byte(`{"type":"call_invite","id":"i","call":{"call_id":"c","from":"a","to":"b","media":"audio","ring_ms":-1}}`))
	f.Add([]byte(`{"type":"call_cancel","id":"i","call":{"call_id":"c","from":"a","to":"b","reason":""}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, fr := range validChatFrames(t, data) {
			if !IsCallFrame(fr.Type) {
				continue
			}
			c := fr.Call
			if c == nil || fr.ID == "" || c.CallID == "" || c.From == "" || c.To == "" {
				t.Fatalf("valid call frame without its ids: %+v %+v", fr, c)
			}
			switch fr.Type {
			case FrameCallInvite:
				if (c.Media != CallAudio && c.Media != CallVideo) || c.RingMillis <= 0 || c.RingMillis > MaxCallRing.Milliseconds() {
					t.Fatalf("valid invite out of bounds: %+v", c)
				}
			case FrameCallCancel:
				if c.Reason != CallReasonCancelled && c.Reason != CallReasonRejected && c.Reason != CallReasonTimeout {
					t.Fatalf("valid cancel with reason %q", c.Reason)
				}
			}
		}
	})
}
