package legacy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// recv takes one value from ch, failing the test after testTimeout.
func recv[T any](tb testing.TB, what string, ch <-chan T) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(testTimeout):
		tb.Fatalf("no %s after %v", what, testTimeout)
		panic("unreachable")
	}
}

// writeTestFile writes n random bytes to a new file named name in a test
// directory and returns its path and content.
func writeTestFile(tb testing.TB, name string, n int) (string, []byte) {
	tb.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
	return path, data
}

// TestChatInterop covers every ordered pairing of chat v1, v2 and v3
// devices with real hosts: the stream settles on the lower version, a
// message arrives, v2 signals reach v2+ pairs and are left unsent (never a
// frame the peer cannot parse) otherwise, and a file offer from a v3 device
// becomes a real offer at v3 and a readable text notice (name and size) at
// v1 and v2, with no error either way.
func TestChatInterop(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	for _, tt := range []struct{ from, to int }{
		{1, 1}, {1, 2}, {1, 3}, {2, 1}, {2, 2}, {2, 3}, {3, 1}, {3, 2}, {3, 3},
	} {
		t.Run(fmt.Sprintf("v%d_to_v%d", tt.from, tt.to), func(t *testing.T) {
			ctx := testCtx(t)
			want := min(tt.from, tt.to)
			from, fromBox, fromSig := newVersionedDevice(t, auth, snInfo, "sender", tt.from)
			to, toBox, toSig := newVersionedDevice(t, auth, snInfo, "recipient", tt.to)

			// The negotiated version, on a direct stream.
			f := msgFrame("m-"+t.Name(), "sender", "recipient")
			ack, v, err := SendChatFrame(ctx, from.cfg.Host, from.cfg.Cert, addrInfoOf(to.cfg.Host), tt.from, f)
			if err != nil || !ack.Delivered() || v != want {
				t.Fatalf("SendChatFrame = %+v, v%d, %v; want delivered on v%d", ack, v, err, want)
			}
			// A message through the directory, both ways.
			msg, ack, err := from.Send(ctx, "recipient", "hello from v"+fmt.Sprint(tt.from))
			if err != nil || !ack.Delivered() {
				t.Fatalf("Send = %+v, %v", ack, err)
			}
			if got := toBox.all(); len(got) != 2 || got[1].ID != msg.ID || got[1].Text != msg.Text {
				t.Fatalf("recipient's inbox = %+v, want both messages", got)
			}
			reply, _, err := to.Send(ctx, "sender", "hello back")
			if err != nil {
				t.Fatalf("reply: %v", err)
			}
			if got := fromBox.all(); len(got) != 1 || got[0].ID != reply.ID {
				t.Fatalf("sender's inbox = %+v, want the reply", got)
			}

			// v2 signals: delivered on a v2+ pair, otherwise not sent.
			_, err = from.SendTyping(ctx, "recipient", true)
			_, rerr := to.SendReceipt(ctx, "sender", msg.ID, legacywire.ReceiptRead)
			if want >= 2 {
				if err != nil || rerr != nil {
					t.Fatalf("typing, receipt on v%d = %v, %v", want, err, rerr)
				}
				if got := recv(t, "typing", toSig.typing); got.From != "sender" {
					t.Errorf("typing = %+v", got)
				}
				if got := recv(t, "receipt", fromSig.receipts); got.MsgID != msg.ID || got.Reader != "recipient" {
					t.Errorf("receipt = %+v", got)
				}
			} else if !errors.Is(err, ErrNotSupported) || !errors.Is(rerr, ErrNotSupported) {
				t.Errorf("typing, receipt on v1 = %v, %v; want them left unsent (ErrNotSupported)", err, rerr)
			}

			// File offers.
			path, data := writeTestFile(t, "holiday photos.zip", 3000)
			offer, res, err := from.OfferFile(ctx, "recipient", path)
			switch {
			case tt.from < 3:
				if !errors.Is(err, ErrNotSupported) {
					t.Errorf("OfferFile from a v%d device = %v, want ErrNotSupported", tt.from, err)
				}
			case tt.to == 3:
				if err != nil || res.Offered != 1 || res.Notified != 0 {
					t.Fatalf("OfferFile v3 → v3 = %+v, %v; want one offer", res, err)
				}
				got := recv(t, "file offer", toSig.offers)
				if got != offer || got.Name != "holiday photos.zip" || got.Size != 3000 {
					t.Fatalf("offer = %+v, want %+v", got, offer)
				}
				dst := filepath.Join(t.TempDir(), "received.zip")
				if err := to.AcceptFile(ctx, offer.ID, dst); err != nil {
					t.Fatalf("AcceptFile: %v", err)
				}
				if b, err := os.ReadFile(dst); err != nil || !bytes.Equal(b, data) {
					t.Errorf("received file differs (%d bytes, %v)", len(b), err)
				}
			default:
				if err != nil || res.Offered != 0 || res.Notified != 1 {
					t.Fatalf("OfferFile v3 → v%d = %+v, %v; want one notice and no error", tt.to, res, err)
				}
				got := toBox.all()
				last := got[len(got)-1]
				if last.ID != offer.ID || last.From != "sender" || !strings.Contains(last.Text, `"holiday photos.zip"`) || !strings.Contains(last.Text, "2.9 KiB") {
					t.Errorf("v%d recipient got %+v, want a notice naming the file and its size", tt.to, last)
				}
			}
			select {
			case o := <-toSig.offers:
				if tt.to < 3 {
					t.Errorf("a v%d device got a file offer %+v", tt.to, o)
				}
			default:
			}
		})
	}
}

// TestFileResume cuts a transfer halfway (the receiver's context ends after
// half the chunks), then accepts again: the second transfer starts at the
// bytes already held, and the file arrives whole and verified.
func TestFileResume(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _, _ := newVersionedDevice(t, auth, snInfo, "alice", 3)
	var (
		cut      context.CancelFunc
		half     int64
		progress []int64 // bytes held after each chunk, on AcceptFile's goroutine
	)
	bob, _, bobSig := newVersionedDevice(t, auth, snInfo, "bob", 3, func(c *DeviceConfig) {
		c.OnFileProgress = func(_ string, have, size int64) {
			progress = append(progress, have)
			if cut != nil && have >= size/2 {
				half = have
				cut()
				cut = nil
			}
		}
	})
	path, data := writeTestFile(t, "video.mp4", 10*FileChunkSize+123)
	offer, res, err := alice.OfferFile(testCtx(t), "bob", path)
	if err != nil || res.Offered != 1 {
		t.Fatalf("OfferFile = %+v, %v", res, err)
	}
	recv(t, "file offer", bobSig.offers)
	dst := filepath.Join(t.TempDir(), "video.mp4")

	ctx, cancel := context.WithCancel(testCtx(t))
	cut = cancel
	err = bob.AcceptFile(ctx, offer.ID, dst)
	if err == nil || half == 0 {
		t.Fatalf("first AcceptFile = %v after %d bytes; want it cut halfway", err, half)
	}
	st, serr := os.Stat(dst + ".part")
	if serr != nil || st.Size() < half || st.Size() >= offer.Size {
		t.Fatalf("partial file after the cut: %v, %v; want at least %d of %d bytes", st, serr, half, offer.Size)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("the file exists before it is complete: %v", err)
	}

	resumedAt := st.Size()
	progressBefore := len(progress)
	if err := bob.AcceptFile(testCtx(t), offer.ID, dst); err != nil {
		t.Fatalf("resumed AcceptFile: %v", err)
	}
	if b, err := os.ReadFile(dst); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("resumed file differs (%d bytes, %v)", len(b), err)
	}
	resumed := progress[progressBefore:]
	if want := int(offer.Size-resumedAt+FileChunkSize-1) / FileChunkSize; len(resumed) != want || resumed[0] <= resumedAt {
		t.Errorf("resumed transfer wrote %d chunks from %v, want %d chunks after offset %d", len(resumed), resumed, want, resumedAt)
	}
	if _, err := os.Stat(dst + ".part"); !os.IsNotExist(err) {
		t.Errorf("partial file left after success: %v", err)
	}
	// The offer is used up on the receiving side.
	if err := bob.AcceptFile(testCtx(t), offer.ID, dst); !errors.Is(err, ErrUnknownFile) {
		t.Errorf("accepting a received file again = %v, want ErrUnknownFile", err)
	}
}

// TestFileRefusals: a file whose bytes no longer match the offer's hash is
// refused at the end with ErrFileHash and its partial file discarded; an
// offer over the recipient's size limit is refused with file_too_large; a
// decline reaches the offering device and ends the offer; an accept names
// only files offered to its own user.
func TestFileRefusals(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _, aliceSig := newVersionedDevice(t, auth, snInfo, "alice", 3)
	bob, _, bobSig := newVersionedDevice(t, auth, snInfo, "bob", 3, func(c *DeviceConfig) { c.MaxFileSize = 100_000 })
	ctx := testCtx(t)

	t.Run("hash mismatch", func(t *testing.T) {
		path, data := writeTestFile(t, "contract.pdf", 3*FileChunkSize)
		offer, _, err := alice.OfferFile(ctx, "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, "file offer", bobSig.offers)
		data[FileChunkSize+7] ^= 0xff // the file changes after the offer
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "contract.pdf")
		err = bob.AcceptFile(ctx, offer.ID, dst)
		if !errors.Is(err, ErrFileHash) || !strings.Contains(err.Error(), "discarded") {
			t.Fatalf("AcceptFile of a changed file = %v, want ErrFileHash saying the partial file was discarded", err)
		}
		for _, p := range []string{dst, dst + ".part"} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s exists after a hash mismatch: %v", p, err)
			}
		}
	})

	t.Run("over the recipient's limit", func(t *testing.T) {
		path, _ := writeTestFile(t, "dump.bin", 100_001)
		_, res, err := alice.OfferFile(ctx, "bob", path)
		var refused *RefusedError
		if !errors.As(err, &refused) || refused.Code != legacywire.CodeFileTooLarge || !strings.Contains(refused.Message, "100001") {
			t.Fatalf("oversized offer = %+v, %v; want a file_too_large refusal naming the size", res, err)
		}
		select {
		case o := <-bobSig.offers:
			t.Errorf("bob got the oversized offer %+v", o)
		default:
		}
	})

	t.Run("decline", func(t *testing.T) {
		path, _ := writeTestFile(t, "slides.key", 1000)
		offer, _, err := alice.OfferFile(ctx, "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, "file offer", bobSig.offers)
		if err := bob.DeclineFile(ctx, offer.ID, "not now"); err != nil {
			t.Fatalf("DeclineFile: %v", err)
		}
		if a := recv(t, "decline", aliceSig.declined); a.FileID != offer.ID || a.From != "bob" || a.Reason != "not now" {
			t.Errorf("decline = %+v", a)
		}
		if err := bob.AcceptFile(ctx, offer.ID, filepath.Join(t.TempDir(), "x")); !errors.Is(err, ErrUnknownFile) {
			t.Errorf("accept after decline = %v, want ErrUnknownFile", err)
		}
		if _, ok := alice.files.getOut(offer.ID); ok {
			t.Error("alice still serves a declined file")
		}
	})

	t.Run("accept as another user", func(t *testing.T) {
		path, _ := writeTestFile(t, "notes.txt", 1000)
		offer, _, err := alice.OfferFile(ctx, "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		recv(t, "file offer", bobSig.offers)
		carol, _, _ := newVersionedDevice(t, auth, snInfo, "carol", 3)
		f := legacywire.ChatFrame{Type: legacywire.FrameFileAccept, ID: "a1", FileAnswer: &legacywire.FileAnswer{FileID: offer.ID, From: "carol", To: "alice"}}
		ack, _, err := SendChatFrame(ctx, carol.cfg.Host, carol.cfg.Cert, addrInfoOf(alice.cfg.Host), 3, f)
		if err != nil || ack.Code != legacywire.CodeUnknownFile {
			t.Errorf("carol accepting bob's file = %+v, %v; want %s", ack, err, legacywire.CodeUnknownFile)
		}
		f.FileAnswer.From = "bob"
		ack, _, err = SendChatFrame(ctx, carol.cfg.Host, carol.cfg.Cert, addrInfoOf(alice.cfg.Host), 3, f)
		if err != nil || ack.Code != legacywire.CodeNotYourFrame {
			t.Errorf("carol accepting as bob = %+v, %v; want %s", ack, err, legacywire.CodeNotYourFrame)
		}
		// A v2 stream refuses v3 frames as unsupported.
		ack, v, err := SendChatFrame(ctx, carol.cfg.Host, carol.cfg.Cert, addrInfoOf(alice.cfg.Host), 2, f)
		if !errors.Is(err, ErrNotSupported) || v != 2 {
			t.Errorf("file_accept on a v2 stream = %+v, v%d, %v; want ErrNotSupported", ack, v, err)
		}
	})
}

// TestFileOfferToBridgeBecomesNotice: a v3 peer that takes no files (a
// chat handler without ServeFile and with an OnFrame refusing them as
// unsupported, as the bridge does) gets the offer as a text notice.
func TestFileOfferToBridgeBecomesNotice(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	alice, _, _ := newVersionedDevice(t, auth, snInfo, "alice", 3)
	bridge := newTestHost(t)
	got := make(chan legacywire.ChatMessage, 4)
	HandleChat(bridge, ChatConfig{Authority: auth.PublicKey(),
		Deliver: func(_ context.Context, _ legacywire.Certificate, m legacywire.ChatMessage) legacywire.ChatAck {
			got <- m
			return legacywire.ChatAck{ID: m.ID, Status: legacywire.StatusDelivered}
		},
		OnFrame: func(_ context.Context, _ legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: legacywire.CodeUnsupported}
		},
	})
	bcert := certify(t, auth, bridge, "ferry-bridge", legacywire.CapBridge)
	if err := NewDirectory(bridge, bcert, snInfo).PublishRoute(testCtx(t), auth.SignRoute(legacywire.RouteRecord{
		User: "dora", PeerID: bridge.ID().String(), Addrs: addrStrings(bridge), Seq: 1, NotAfter: time.Now().Add(time.Hour),
	})); err != nil {
		t.Fatal(err)
	}
	path, _ := writeTestFile(t, "map.png", 5)
	offer, res, err := alice.OfferFile(testCtx(t), "dora", path)
	if err != nil || res.Notified != 1 {
		t.Fatalf("OfferFile to a cloud user = %+v, %v; want one notice, no error", res, err)
	}
	if m := recv(t, "notice", got); m.ID != offer.ID || !strings.Contains(m.Text, `"map.png" (5 bytes)`) {
		t.Errorf("bridge got %+v", m)
	}
}

func addrStrings(h interface{ Addrs() []ma.Multiaddr }) []string {
	var out []string
	for _, a := range h.Addrs() {
		out = append(out, a.String())
	}
	return out
}

// BenchmarkFileTransfer measures a whole chat v3 transfer (offer, accept,
// chunks, hash check, rename) of a 4 MiB file between two devices on
// loopback; BenchmarkFileTransferFloor copies the same bytes over a bare
// libp2p stream between the same kind of hosts, for the ratio.
func BenchmarkFileTransfer(b *testing.B) {
	auth := newTestAuthority(b)
	_, snInfo := startSupernode(b, auth, SupernodeConfig{})
	alice, _, _ := newVersionedDevice(b, auth, snInfo, "alice", 3)
	bob, _, bobSig := newVersionedDevice(b, auth, snInfo, "bob", 3, func(c *DeviceConfig) { c.OnFileProgress = nil })
	path, _ := writeTestFile(b, "bench.bin", 4<<20)
	dir := b.TempDir()
	b.SetBytes(4 << 20)
	b.ResetTimer()
	for i := range b.N {
		offer, _, err := alice.OfferFile(context.Background(), "bob", path)
		if err != nil {
			b.Fatal(err)
		}
		recv(b, "offer", bobSig.offers)
		if err := bob.AcceptFile(context.Background(), offer.ID, filepath.Join(dir, fmt.Sprint(i))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFileTransferFloor(b *testing.B) {
	src, dst := newTestHost(b), newTestHost(b)
	const proto = "/ferry/bench-floor/1"
	data := make([]byte, 4<<20)
	dst.SetStreamHandler(proto, func(s network.Stream) {
		_, _ = io.Copy(s, bytes.NewReader(data))
		_ = s.Close()
	})
	if err := src.Connect(context.Background(), addrInfoOf(dst)); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for range b.N {
		s, err := src.NewStream(context.Background(), dst.ID(), proto)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, s); err != nil || n != int64(len(data)) {
			b.Fatalf("copied %d, %v", n, err)
		}
		_ = s.Close()
	}
}
