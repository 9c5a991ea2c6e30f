package legacywire

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
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

func FuzzReadChatFrame(f *testing.F) {
	for name, v := range goldenFrames(f) {
		if _, ok := v.(ChatFrame); !ok {
			continue
		}
		var buf bytes.Buffer
		if err := WriteFrame(&buf, v); err != nil {
			f.Fatal(name, err)
		}
		f.Add(buf.Bytes())
	}
	f.Add([]byte{})
	f.Add(binary.AppendUvarint(nil, 2))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for range 8 {
			var fr ChatFrame
			err := ReadFrame(r, &fr)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrFrameTooLarge) {
					t.Fatalf("ReadFrame returned a non-sentinel error: %v", err)
				}
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
