package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// filePhone is a chat v3 (or older) legacy device that records the file
// offers it gets.
type filePhone struct {
	*versionedPhone
	offers chan legacywire.FileOffer
}

func newFilePhone(t *testing.T, ta *testAgent, user string, maxVersion int) *filePhone {
	t.Helper()
	offers := make(chan legacywire.FileOffer, 8)
	p := newVersionedPhoneWith(t, ta, user, maxVersion, func(dc *legacy.DeviceConfig) {
		dc.OnFileOffer = func(o legacywire.FileOffer) {
			select {
			case offers <- o:
			default:
			}
		}
	})
	return &filePhone{versionedPhone: p, offers: offers}
}

func (p *filePhone) nextOffer(t *testing.T) legacywire.FileOffer {
	t.Helper()
	return waitOffer(t, p.offers)
}

// waitOffer waits for the next file offer a test device recorded.
func waitOffer(t *testing.T, offers <-chan legacywire.FileOffer) legacywire.FileOffer {
	t.Helper()
	select {
	case o := <-offers:
		return o
	case <-time.After(within):
		t.Fatal("no file offer reached the legacy device")
	}
	return legacywire.FileOffer{}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// patterned is n bytes that are not all alike.
func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i/509)
	}
	return b
}

// storedFiles counts the objects in the cloud's attachments bucket.
func storedFiles(t *testing.T, ta *testAgent) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	obj, err := ta.a.eng.JS.ObjectStore(ctx, "ferry_files")
	if err != nil {
		t.Fatal(err)
	}
	list, err := obj.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

// TestBridgeFileLegacyToCloud: a chat v3 legacy device sends a file to a
// cloud user, who gets a file message and downloads the same bytes; a
// user outside the conversation cannot; a file over the cloud's bound is
// refused with a clear error and nothing is stored.
func TestBridgeFileLegacyToCloud(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "carl", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	lena := newFilePhone(t, ta, "lena", 3)
	lena.waitRoute(t, "carl", ta.a.brHost)
	carl := dialCloud(t, ta, "carl", "carl-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	data := patterned(300 << 10) // ten legacy chunks, three object chunks
	path := filepath.Join(t.TempDir(), "report.pdf")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	offer, res, err := lena.dev.OfferFile(ctx, "carl", path)
	if err != nil || res.Offered != 1 {
		t.Fatalf("OfferFile: %+v, %v; want the bridge to take the offer", res, err)
	}
	ev, _ := carl.next(t, cloudwire.KindMsg)
	if ev.MsgID != offer.ID || ev.From != "lena" || ev.File == nil || ev.File.Name != "report.pdf" ||
		ev.File.Size != int64(len(data)) || ev.File.SHA256 != sha256Hex(data) {
		t.Fatalf("carl got %+v (file %+v), want lena's file message %s", ev, ev.File, offer.ID)
	}
	got, err := cloud.DownloadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "carl"), ev.File.ID)
	if err != nil {
		t.Fatal(err)
	}
	if sha256Hex(got) != sha256Hex(data) {
		t.Fatalf("carl downloaded %d bytes hashing to %s, lena sent %s", len(got), sha256Hex(got), sha256Hex(data))
	}
	_, err = cloud.DownloadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "mallory"), ev.File.ID)
	var he *cloud.FileHTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
		t.Fatalf("a non-member's download: %v, want 403", err)
	}
	waitMetric(t, ta, `gateway_bridge_files_total{direction="legacy_to_cloud",result="ok"}`)
	if n := storedFiles(t, ta); n != 1 {
		t.Fatalf("%d files stored, want 1", n)
	}

	// Over the cloud's bound (64 MiB by default): refused before any byte
	// moves. The file is sparse, so it costs only its hashing.
	big := filepath.Join(t.TempDir(), "huge.iso")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(cloud.DefaultMaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, _, err = lena.dev.OfferFile(ctx, "carl", big)
	var refused *legacy.RefusedError
	if !errors.As(err, &refused) || refused.Code != legacywire.CodeFileTooLarge || !strings.Contains(refused.Message, "at most") {
		t.Fatalf("oversized offer: %v, want a file_too_large refusal that says the limit", err)
	}
	waitMetric(t, ta, `gateway_bridge_files_total{direction="legacy_to_cloud",result="too_large"}`)
	carl.quiet(t, time.Second)
	if n := storedFiles(t, ta); n != 1 {
		t.Fatalf("%d files stored after the refusal, want still 1", n)
	}
}

// TestBridgeFileCloudToLegacy: a cloud user's file reaches a chat v3
// device as an offer, which it accepts and gets the same bytes from the
// bridge; a chat v2 device gets the file as a notice with the download
// link, never nothing.
func TestBridgeFileCloudToLegacy(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "carl", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	lena := newFilePhone(t, ta, "lena", 3)
	liam := newFilePhone(t, ta, "liam", 2)
	lena.waitRoute(t, "carl", ta.a.brHost)
	carl := dialCloud(t, ta, "carl", "carl-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	data := patterned(200 << 10)
	send := func(to string) (cloudwire.File, string) {
		t.Helper()
		file, err := cloud.UploadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "carl"),
			cloud.FileUpload{To: to, Name: "plan.png", MIME: "image/png", Data: data})
		if err != nil {
			t.Fatal(err)
		}
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := carl.c.Send(ctx, cloudwire.Send{To: to, MsgID: id, Text: "the plan", File: &file}); err != nil {
			t.Fatal(err)
		}
		return file, id
	}

	file, id := send("lena")
	o := lena.nextOffer(t)
	if o.ID != id || o.From != "carl" || o.To != "lena" || o.Name != "plan.png" || o.Size != int64(len(data)) || o.SHA256 != sha256Hex(data) {
		t.Fatalf("lena's offer %+v, want carl's file %+v as %s", o, file, id)
	}
	out := filepath.Join(t.TempDir(), "plan.png")
	if err := lena.dev.AcceptFile(ctx, o.ID, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("lena got %d bytes, carl sent %d", len(got), len(data))
	}
	dv := nextReceiptStatus(t, carl, cloudwire.StatusDelivered)
	if dv.MsgID != id || dv.By != "lena" {
		t.Fatalf("receipt %+v, want lena's delivery of %s", dv, id)
	}

	file, id = send("liam")
	m := liam.nextMsg(t)
	link := cloud.FileURL(ta.a.cloudURL(), file.ID)
	if m.ID != id || m.From != "carl" || !strings.Contains(m.Text, "plan.png") || !strings.Contains(m.Text, link) || !strings.Contains(m.Text, "the plan") {
		t.Fatalf("liam got %+v, want a notice of plan.png with the link %s", m, link)
	}
	select {
	case o := <-liam.offers:
		t.Fatalf("a chat v2 device got an offer %+v", o)
	default:
	}

	// A group's file: offered to its chat v3 member, who may fetch it as
	// a member, and a notice to its chat v2 member, with the group's name.
	gAck, err := carl.c.Group(ctx, cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: uuid.Must(uuid.NewV7()).String(),
		Name: "Team", Members: []string{"lena", "liam"}})
	if err != nil {
		t.Fatal(err)
	}
	gfile, err := cloud.UploadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "carl"),
		cloud.FileUpload{Conv: gAck.Conv, Name: "agenda.txt", Data: data[:5000]})
	if err != nil {
		t.Fatal(err)
	}
	gid := uuid.Must(uuid.NewV7()).String()
	if _, err := carl.c.Send(ctx, cloudwire.Send{Conv: gAck.Conv, MsgID: gid, Text: "agenda.txt", File: &gfile}); err != nil {
		t.Fatal(err)
	}
	if o := lena.nextOffer(t); o.ID != gid || o.Name != "agenda.txt" {
		t.Fatalf("lena's group offer %+v, want %s", o, gid)
	}
	gout := filepath.Join(t.TempDir(), "agenda.txt")
	if err := lena.dev.AcceptFile(ctx, gid, gout); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(gout); err != nil || !bytes.Equal(got, data[:5000]) {
		t.Fatalf("lena's group file: %d bytes, %v", len(got), err)
	}
	if m := liam.nextMsg(t); m.ID != gid || !strings.HasPrefix(m.Text, "[Team] ") || !strings.Contains(m.Text, cloud.FileURL(ta.a.cloudURL(), gfile.ID)) {
		t.Fatalf("liam's group notice %+v", m)
	}
	waitMetric(t, ta, `gateway_bridge_files_total{direction="cloud_to_legacy",result="ok"}`)
	waitMetric(t, ta, `gateway_bridge_files_total{direction="cloud_to_legacy",result="notice"}`)
	waitMetric(t, ta, `gateway_bridge_file_bytes_total{direction="cloud_to_legacy"}`)
}

// TestBridgeFileOnce: the agent stops right after the bridge took a legacy
// offer (the transfer may be under way) and starts again; the device then
// resends the same offer. The cloud user gets one file message and the
// cloud holds one object, with the bytes sent.
func TestBridgeFileOnce(t *testing.T) {
	dir := t.TempDir()
	ports := agentPorts(t)
	ta := startAgent(t, dir, ports)
	setPhases(t, ta.admin(), "carl", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	lena := newFilePhone(t, ta, "lena", 3)
	lena.waitRoute(t, "carl", ta.a.brHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	data := patterned(4 << 20)
	path := filepath.Join(t.TempDir(), "video.mp4")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	offer, res, err := lena.dev.OfferFile(ctx, "carl", path)
	if err != nil || res.Offered != 1 {
		t.Fatalf("OfferFile: %+v, %v", res, err)
	}
	ta.stop()
	ta = startAgent(t, dir, ports)
	if err := lena.dev.Register(ctx); err != nil {
		t.Fatal(err)
	}
	lena.waitRoute(t, "carl", ta.a.brHost)

	// The same offer again, as a device that did not see the ack would.
	var cert legacywire.Certificate
	req := certRequest{PeerID: lena.host.ID().String(), User: "lena", Platform: "desktop", ClientVersion: "7.4.1"}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert); err != nil {
		t.Fatal(err)
	}
	br := peer.AddrInfo{ID: ta.a.brHost.ID(), Addrs: ta.a.brHost.Addrs()}
	ack, _, err := legacy.SendChatFrame(ctx, lena.host, cert, br, 3, legacywire.ChatFrame{Type: legacywire.FrameFileOffer, ID: offer.ID, FileOffer: &offer})
	if err != nil || !ack.Delivered() {
		t.Fatalf("resent offer: %+v, %v", ack, err)
	}

	carl := dialCloud(t, ta, "carl", "carl-laptop", 0)
	ev, _ := carl.next(t, cloudwire.KindMsg)
	if ev.MsgID != offer.ID || ev.File == nil || ev.File.SHA256 != sha256Hex(data) {
		t.Fatalf("carl got %+v, want lena's file %s", ev, offer.ID)
	}
	carl.quiet(t, 3*fileRetryWait)
	if n := storedFiles(t, ta); n != 1 {
		t.Fatalf("%d files stored, want 1", n)
	}
	got, err := cloud.DownloadFile(ctx, http.DefaultClient, ta.a.cloudURL(), userToken(t, ta, "carl"), ev.File.ID)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: %d bytes, %v; want the %d sent", len(got), err, len(data))
	}
}

// fileRetryWait is a little more than the bridge's retry tick for file
// transfers: long enough for a second copy to show up if one were made.
const fileRetryWait = 3 * time.Second
