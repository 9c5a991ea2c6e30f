package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fileBytes is n bytes that are not all alike.
func fileBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// noFilesStored fails unless the attachments bucket holds no object.
func noFilesStored(tb testing.TB, js jetstream.JetStream) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	obj, err := js.ObjectStore(ctx, filesBucket)
	if err != nil {
		tb.Fatal(err)
	}
	list, err := obj.List(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		tb.Fatal(err)
	}
	if len(list) > 0 {
		tb.Fatalf("%d objects stored, want none: first %s", len(list), list[0].Name)
	}
	si, err := js.Stream(ctx, "OBJ_"+filesBucket)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := si.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	if info.State.Msgs != 0 {
		tb.Fatalf("bucket stream holds %d messages (partial chunks), want 0", info.State.Msgs)
	}
}

func httpStatus(tb testing.TB, err error, want int) {
	tb.Helper()
	var he *FileHTTPError
	if !errors.As(err, &he) || he.StatusCode != want {
		tb.Fatalf("error = %v, want HTTP %d", err, want)
	}
	if he.Body == "" {
		tb.Errorf("HTTP %d without a reason", want)
	}
}

// TestFileMessage: alice uploads a file to bob and sends it; bob's event
// carries the file, he downloads the same bytes; carol, who is not in the
// conversation, cannot.
func TestFileMessage(t *testing.T) {
	f := newFixture(t, nil)
	alice := f.dial(t, "alice", "a1", 0)
	bob := f.dial(t, "bob", "b1", 0)
	col := collect(bob)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	data := fileBytes(300 << 10) // several object chunks
	file, err := UploadFile(ctx, http.DefaultClient, f.url, token(t, "alice", cloudwire.RoleUser), FileUpload{To: "bob", Name: "photo.jpg", MIME: "image/jpeg", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if file.Size != int64(len(data)) || file.SHA256 != sha(data) || file.Name != "photo.jpg" || file.MIME != "image/jpeg" {
		t.Fatalf("upload answered %+v", file)
	}
	id := msgID(t)
	if _, err := alice.Send(ctx, cloudwire.Send{To: "bob", MsgID: id, Text: "photo.jpg", File: &cloudwire.File{ID: file.ID, Name: "renamed", Size: 1, SHA256: file.SHA256}}); err != nil {
		t.Fatal(err)
	}
	ev := col.waitN(t, 1)[0]
	if ev.MsgID != id || ev.File == nil || *ev.File != file {
		t.Fatalf("bob got %+v, want the stored file %+v (the service's copy, not the sender's)", ev, file)
	}
	got, err := DownloadFile(ctx, http.DefaultClient, f.url, token(t, "bob", cloudwire.RoleUser), file.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("bob downloaded %d bytes, not the %d uploaded", len(got), len(data))
	}
	_, err = DownloadFile(ctx, http.DefaultClient, f.url, token(t, "carol", cloudwire.RoleUser), file.ID)
	httpStatus(t, err, http.StatusForbidden)
	_, err = DownloadFile(ctx, http.DefaultClient, f.url, token(t, "bob", cloudwire.RoleUser), "0190b6d2-0000-7000-8000-00000000dead")
	httpStatus(t, err, http.StatusNotFound)
	_, err = DownloadFile(ctx, http.DefaultClient, f.url, token(t, "bridge", cloudwire.RoleBridge), file.ID)
	httpStatus(t, err, http.StatusForbidden)
	_, err = DownloadFile(ctx, http.DefaultClient, f.url, "not-a-token", file.ID)
	httpStatus(t, err, http.StatusUnauthorized)

	// The file belongs to alice's conversation with bob: she cannot send
	// it to carol, and bob cannot send it as his.
	_, err = alice.Send(ctx, cloudwire.Send{To: "carol", MsgID: msgID(t), Text: "x", File: &file})
	serverError(t, err, cloudwire.CodeForbidden)
	_, err = bob.Send(ctx, cloudwire.Send{To: "alice", MsgID: msgID(t), Text: "x", File: &file})
	serverError(t, err, cloudwire.CodeForbidden)
	unknown := file
	unknown.ID = msgID(t)
	_, err = alice.Send(ctx, cloudwire.Send{To: "bob", MsgID: msgID(t), Text: "x", File: &unknown})
	serverError(t, err, cloudwire.CodeNotFound)
}

// TestFileUploadRefused: every bad upload gets a clear 4xx and stores
// nothing.
func TestFileUploadRefused(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Files.MaxSize = 100 << 10 })
	owner := f.dial(t, "alice", "a1", 0)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := groupOp(t, owner, cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: msgID(t), Name: "g", Members: []string{"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	group := ack.Conv
	small := fileBytes(1000)
	base := FileURL(f.url, "")
	base = strings.TrimSuffix(base, "/")
	tests := []struct {
		name   string
		user   string
		query  url.Values
		hash   string
		body   []byte
		length int64 // -1: streamed without Content-Length
		want   int
	}{
		{"too large announced", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, sha(fileBytes(200 << 10)), fileBytes(200 << 10), 200 << 10, http.StatusRequestEntityTooLarge},
		{"too large streamed", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, sha(fileBytes(200 << 10)), fileBytes(200 << 10), -1, http.StatusRequestEntityTooLarge},
		{"wrong hash", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, sha([]byte("other")), small, 1000, http.StatusUnprocessableEntity},
		{"wrong hash streamed", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, sha([]byte("other")), fileBytes(90 << 10), -1, http.StatusUnprocessableEntity},
		{"no hash", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, "", small, 1000, http.StatusBadRequest},
		{"upper-case hash", "alice", url.Values{"to": {"bob"}, "name": {"a"}}, strings.ToUpper(sha(small)), small, 1000, http.StatusBadRequest},
		{"no name", "alice", url.Values{"to": {"bob"}}, sha(small), small, 1000, http.StatusBadRequest},
		{"path as name", "alice", url.Values{"to": {"bob"}, "name": {"../../x"}}, sha(small), small, 1000, http.StatusBadRequest},
		{"to and conv", "alice", url.Values{"to": {"bob"}, "conv": {group}, "name": {"a"}}, sha(small), small, 1000, http.StatusBadRequest},
		{"neither to nor conv", "alice", url.Values{"name": {"a"}}, sha(small), small, 1000, http.StatusBadRequest},
		{"direct conv id", "alice", url.Values{"conv": {cloudwire.DirectConversationID("alice", "bob")}, "name": {"a"}}, sha(small), small, 1000, http.StatusBadRequest},
		{"foreign group", "carol", url.Values{"conv": {group}, "name": {"a"}}, sha(small), small, 1000, http.StatusForbidden},
		{"unknown group", "alice", url.Values{"conv": {"g" + strings.Repeat("0", 32)}, "name": {"a"}}, sha(small), small, 1000, http.StatusNotFound},
		{"no token", "", url.Values{"to": {"bob"}, "name": {"a"}}, sha(small), small, 1000, http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.length < 0 {
				body = io.MultiReader(body) // hides the length: chunked
			}
			req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"?"+tc.query.Encode(), body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = tc.length
			if tc.user != "" {
				req.Header.Set("Authorization", "Bearer "+token(t, tc.user, cloudwire.RoleUser))
			}
			if tc.hash != "" {
				req.Header.Set(cloudwire.HeaderSHA256, tc.hash)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || len(bytes.TrimSpace(msg)) == 0 {
				t.Fatalf("HTTP %d %q, want %d with a reason", resp.StatusCode, msg, tc.want)
			}
			noFilesStored(t, f.eng.JS)
		})
	}
	// A group member may upload to the group, and the other members
	// download; someone outside it may not.
	file, err := UploadFile(ctx, http.DefaultClient, f.url, token(t, "alice", cloudwire.RoleUser), FileUpload{Conv: group, Name: "notes.txt", Data: small})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DownloadFile(ctx, http.DefaultClient, f.url, token(t, "bob", cloudwire.RoleUser), file.ID); err != nil {
		t.Fatal(err)
	}
	_, err = DownloadFile(ctx, http.DefaultClient, f.url, token(t, "carol", cloudwire.RoleUser), file.ID)
	httpStatus(t, err, http.StatusForbidden)
}

// TestBridgeFileIdempotent: the bridge's PutFile of one offer id stores
// one object however often it is retried, refuses a different file under
// the same id, and refuses oversized or corrupt bytes storing nothing.
func TestBridgeFileIdempotent(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Files.MaxSize = 64 << 10 })
	bl := NewBridgeLive(f.eng.JS)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if n, err := bl.MaxFileSize(ctx); err != nil || n != 64<<10 {
		t.Fatalf("MaxFileSize = %d, %v; want the service's %d", n, err, 64<<10)
	}
	big := fileBytes(65 << 10)
	_, err := bl.PutFile(ctx, BridgeFile{ID: msgID(t), From: "lena", To: "bob", Name: "big", SHA256: sha(big), Size: int64(len(big))}, bytes.NewReader(big))
	if !errors.Is(err, ErrFileTooLarge) {
		t.Fatalf("oversized: %v, want ErrFileTooLarge", err)
	}
	_, err = bl.PutFile(ctx, BridgeFile{ID: msgID(t), From: "lena", To: "bob", Name: "big", SHA256: sha(big), Size: -1}, bytes.NewReader(big))
	if !errors.Is(err, ErrFileTooLarge) {
		t.Fatalf("oversized, size unknown: %v, want ErrFileTooLarge", err)
	}
	data := fileBytes(10 << 10)
	_, err = bl.PutFile(ctx, BridgeFile{ID: msgID(t), From: "lena", To: "bob", Name: "x", SHA256: sha(data), Size: int64(len(data))}, bytes.NewReader(data[:5000]))
	if !errors.Is(err, ErrFileHash) {
		t.Fatalf("cut short: %v, want ErrFileHash", err)
	}
	noFilesStored(t, f.eng.JS)

	bf := BridgeFile{ID: msgID(t), From: "lena", To: "bob", Name: "x.bin", SHA256: sha(data), Size: int64(len(data))}
	first, err := bl.PutFile(ctx, bf, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	again, err := bl.PutFile(ctx, bf, bytes.NewReader(data))
	if err != nil || again != first {
		t.Fatalf("retry: %+v, %v; want %+v", again, err, first)
	}
	other := bf
	other.SHA256 = sha(big)
	if _, err := bl.PutFile(ctx, other, bytes.NewReader(big)); !errors.Is(err, errConflict) {
		t.Fatalf("another file under the same id: %v, want a conflict", err)
	}
	_, r, err := bl.OpenFile(ctx, bf.ID, "bob", 4000)
	if err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(tail, data[4000:]) {
		t.Fatalf("read from 4000: %d bytes, %v", len(tail), err)
	}
	if _, _, err := bl.OpenFile(ctx, bf.ID, "carol", 0); !errors.Is(err, errForbidden) {
		t.Fatalf("carol opens lena's file to bob: %v, want forbidden", err)
	}
}

// FuzzParseUpload: no query or header crashes the upload parser, and what
// it accepts is a valid file description.
func FuzzParseUpload(f *testing.F) {
	f.Add("to=bob&name=a.jpg", sha([]byte("x")), "image/jpeg", int64(1))
	f.Add("conv=g0123&name=..", "", "text/plain; charset=utf-8", int64(-1))
	f.Add("to=%00&name=%2F", strings.Repeat("a", 64), "a/b; c", int64(-2))
	f.Fuzz(func(t *testing.T, rawQuery, hash, ctype string, length int64) {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		h := http.Header{}
		h.Set(cloudwire.HeaderSHA256, hash)
		h.Set("Content-Type", ctype)
		p, err := parseUpload(q, h, length)
		if err != nil {
			return
		}
		if (p.To == "") == (p.Conv == "") || p.Size < -1 {
			t.Fatalf("accepted %+v", p)
		}
		if err := (cloudwire.File{ID: "x", Name: p.Name, MIME: p.MIME, SHA256: p.SHA256}).Validate(); err != nil {
			t.Fatalf("accepted %+v: %v", p, err)
		}
	})
}

// BenchmarkFileUpload compares an upload through the HTTP endpoint (token,
// streaming size and hash checks, metadata) with a bare object store Put
// of the same bytes on the same engine, its floor. Compare the two
// sub-benchmarks' MB/s of one run.
func BenchmarkFileUpload(b *testing.B) {
	f := newFixture(b, nil)
	data := fileBytes(4 << 20)
	tok := token(b, "alice", cloudwire.RoleUser)
	ctx := context.Background()
	b.Run("http", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := UploadFile(ctx, http.DefaultClient, f.url, tok, FileUpload{To: "bob", Name: "a.bin", Data: data}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor", func(b *testing.B) {
		obj, err := f.eng.JS.ObjectStore(ctx, filesBucket)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := obj.Put(ctx, jetstream.ObjectMeta{Name: msgID(b), Opts: &jetstream.ObjectMetaOptions{ChunkSize: fileChunk}}, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestFileURL(t *testing.T) {
	tests := []struct{ ws, want string }{
		{"ws://127.0.0.1:8080/v1/ws", "http://127.0.0.1:8080/v1/files/f1"},
		{"wss://chat.example.test/v1/ws?x=1", "https://chat.example.test/v1/files/f1"},
		{"not a url", ""},
	}
	for _, tc := range tests {
		if got := FileURL(tc.ws, "f1"); got != tc.want {
			t.Errorf("FileURL(%q) = %q, want %q", tc.ws, got, tc.want)
		}
	}
}
