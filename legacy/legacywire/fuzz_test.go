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

// FuzzReadFileFrame decodes chat v3 frames: a frame that is Valid keeps
// every file payload inside the wire's bounds.
func FuzzReadFileFrame(f *testing.F) {
	addGoldenSeeds(f, func(name string, _ any) bool { return strings.HasPrefix(name, "chat3_") })
	f.Add([]byte(`{"type":"file_chunk","file_chunk":{"file_id":"f","offset":-1,"data":"AA=="}}`))
	f.Add([]byte(`{"type":"file_offer","id":"f","file_offer":{"id":"f","size":1e30}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var body bytes.Buffer
		_ = WriteFrame(&body, json.RawMessage(data)) // also try the raw bytes as a body
		for _, in := range [][]byte{data, body.Bytes()} {
			var fr ChatFrame
			err := ReadFrame(bufio.NewReader(bytes.NewReader(in)), &fr)
			if err != nil {
				checkReadErr(t, err)
				continue
			}
			if !fr.Valid() {
				continue
			}
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
