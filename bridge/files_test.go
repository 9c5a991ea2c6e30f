package bridge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peerstore"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestFileNotice(t *testing.T) {
	f := cloudwire.File{ID: "f1", Name: "plan.png", Size: 2048, SHA256: strings.Repeat("a", 64)}
	link := "http://cloud.test/v1/files/f1"
	got := fileNotice("carl", f, link, "the plan")
	for _, want := range []string{"carl", `"plan.png"`, "2048 bytes", link, "the plan"} {
		if !strings.Contains(got, want) {
			t.Errorf("notice %q lacks %q", got, want)
		}
	}
	if got := fileNotice("carl", f, link, "plan.png"); strings.Count(got, "plan.png") != 1 {
		t.Errorf("a caption equal to the name is not repeated: %q", got)
	}
}

// TestPullChecksChunks: the bridge pulls an offered file from a device
// that answers file_accept as the test says, and takes only chunks that
// match the offer (file, offset, chunk size, total size).
func TestPullChecksChunks(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes
	sum := sha256.Sum256(data)
	offer := legacywire.FileOffer{
		ID: "0190b6d2-5555-7000-8000-000000000001", From: "lena", To: "carl", Name: "a.bin",
		Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), ChunkSize: 16 << 10, SentAt: time.Now(),
	}
	chunks := func(size int, edit func(i int, c *legacywire.FileChunk)) []legacywire.FileChunk {
		var out []legacywire.FileChunk
		for off, i := 0, 0; off < len(data); i++ {
			n := min(size, len(data)-off)
			c := legacywire.FileChunk{FileID: offer.ID, Offset: int64(off), Data: data[off : off+n]}
			if edit != nil {
				edit(i, &c)
			}
			out = append(out, c)
			off += n
		}
		return out
	}
	tests := []struct {
		name      string
		ack       legacywire.ChatAck
		chunks    []legacywire.FileChunk
		permanent bool // want an errPermanent; nil error when false and ok
		ok        bool
	}{
		{"whole file", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(16<<10, nil), false, true},
		{"smaller chunks", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(1000, nil), false, true},
		{"chunk over the offer's size", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(20<<10, nil), true, false},
		{"wrong offset", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(16<<10, func(i int, c *legacywire.FileChunk) {
			if i == 2 {
				c.Offset++
			}
		}), true, false},
		{"another file", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(16<<10, func(i int, c *legacywire.FileChunk) {
			if i == 1 {
				c.FileID = "other"
			}
		}), true, false},
		{"past the end", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(16<<10, func(i int, c *legacywire.FileChunk) {
			if c.Offset+int64(len(c.Data)) == int64(len(data)) {
				c.Data = append(bytes.Clone(c.Data), 'x')
			}
		}), true, false},
		{"cut short", legacywire.ChatAck{Status: legacywire.StatusDelivered}, chunks(16<<10, nil)[:2], false, false},
		{"offer gone", legacywire.ChatAck{Status: legacywire.StatusRefused, Code: legacywire.CodeUnknownFile, Error: "no such file"}, nil, true, false},
		{"busy", legacywire.ChatAck{Status: legacywire.StatusRefused, Code: legacywire.CodeUnavailable, Error: "later"}, nil, false, false},
	}
	auth, err := legacy.GenerateAuthority()
	if err != nil {
		t.Fatal(err)
	}
	bh, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bh.Close() })
	cert, err := auth.Certify(bh.ID(), User, "bridge", "1", []string{legacywire.CapBridge}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r := &fileRelay{b: &Bridge{cfg: Config{Host: bh}, cert: cert}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oh, err := legacy.NewHost(legacy.HostConfig{})
			if err != nil {
				t.Fatal(err)
			}
			defer oh.Close()
			accepted := make(chan legacywire.FileAnswer, 1)
			oh.SetStreamHandler(legacywire.ChatV3ProtocolID, func(s network.Stream) {
				defer s.Close()
				br := bufio.NewReader(s)
				var hello legacywire.ChatHello
				var f legacywire.ChatFrame
				if legacywire.ReadFrame(br, &hello) != nil || legacywire.ReadFrame(br, &f) != nil || f.FileAnswer == nil {
					_ = s.Reset()
					return
				}
				accepted <- *f.FileAnswer
				ack := tc.ack
				ack.ID = f.ID
				if legacywire.WriteFrame(s, legacywire.ChatFrame{Type: legacywire.FrameAck, Ack: &ack}) != nil {
					return
				}
				for _, c := range tc.chunks {
					if legacywire.WriteFrame(s, legacywire.ChatFrame{Type: legacywire.FrameFileChunk, FileChunk: &c}) != nil {
						return
					}
				}
			})
			bh.Peerstore().AddAddrs(oh.ID(), oh.Addrs(), peerstore.TempAddrTTL)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var got bytes.Buffer
			n, err := r.pull(ctx, fileJob{Offer: offer, Peer: oh.ID().String(), State: filePending}, &got)
			switch {
			case tc.ok:
				if err != nil || n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
					t.Fatalf("pull: %d bytes, %v; want the %d offered", n, err, len(data))
				}
			case err == nil:
				t.Fatal("pull succeeded")
			case errors.Is(err, errPermanent) != tc.permanent:
				t.Fatalf("pull: %v; want permanent=%v", err, tc.permanent)
			}
			a := <-accepted
			if a.FileID != offer.ID || a.From != "carl" || a.To != "lena" || a.Offset != 0 {
				t.Errorf("file_accept %+v, want carl taking lena's file from 0", a)
			}
		})
	}
}

// TestWaitSender: a sender's text waits until every file offer they made
// before it is carried (or given up), and not for other senders' offers;
// a context that ends first is an error (the device retries the text).
func TestWaitSender(t *testing.T) {
	r := &fileRelay{kick: make(chan struct{}, 1), pendingBy: map[string]map[string]bool{}, changed: make(chan struct{})}
	r.track("lena", "in.f1")
	r.track("lena", "in.f2")
	r.track("lars", "in.f3")
	if err := r.waitSender(t.Context(), "liam"); err != nil {
		t.Fatalf("a sender without files waits: %v", err)
	}
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if err := r.waitSender(short, "lena"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitSender with files pending = %v, want the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.waitSender(t.Context(), "lena") }()
	r.untrack("lena", "in.f1")
	r.untrack("lars", "in.f3")
	select {
	case err := <-done:
		t.Fatalf("waitSender returned %v with lena's second file pending", err)
	case <-time.After(20 * time.Millisecond):
	}
	r.untrack("lena", "in.f2")
	if err := <-done; err != nil {
		t.Fatalf("waitSender after the last file = %v", err)
	}
}

// TestWaitSenderForgetsGoneOffers: an offer tracked as pending whose job
// has left the bucket (carried and deleted by another bridge node, or a
// resend acknowledged as the job finished) or is no longer pending stops
// holding its sender's texts at the next listing, while a pending one
// still does.
func TestWaitSenderForgetsGoneOffers(t *testing.T) {
	eng := enginetest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	b := &Bridge{cfg: Config{JS: eng.JS, Replicas: 1}, log: slog.New(slog.DiscardHandler), now: time.Now}
	r, err := newFileRelay(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	put := func(id, from, state string) {
		t.Helper()
		job := fileJob{Offer: legacywire.FileOffer{ID: id, From: from, To: "cleo"}, State: state, NextAt: time.Now().Add(time.Hour)}
		data, err := json.Marshal(job)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.kv.Put(ctx, "in."+id, data); err != nil {
			t.Fatal(err)
		}
		r.track(from, "in."+id)
	}
	put("f1", "lena", filePending)
	put("f2", "lena", filePending)
	put("f3", "lars", filePending)
	if err := r.kv.Delete(ctx, "in.f1"); err != nil { // carried by another node
		t.Fatal(err)
	}
	if err := r.kv.Delete(ctx, "in.f3"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	r.startDue(ctx, &wg)
	wg.Wait()
	if err := r.waitSender(ctx, "lars"); err != nil {
		t.Fatalf("lars's only offer is gone, yet his text waits: %v", err)
	}
	short, stop := context.WithTimeout(ctx, 20*time.Millisecond)
	defer stop()
	if err := r.waitSender(short, "lena"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitSender with lena's f2 pending = %v, want the deadline", err)
	}
	put("f2", "lena", fileDone)
	r.startDue(ctx, &wg)
	wg.Wait()
	if err := r.waitSender(ctx, "lena"); err != nil {
		t.Fatalf("lena's offers are all done, yet her text waits: %v", err)
	}
}
