//go:build linux

package cloudweb_test

import (
	"context"
	"crypto/ed25519"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudweb/cdptest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestBrowserClient drives the reference page in headless Chromium against
// a real service on an embedded engine, with a Go client as the other user:
// the page signs in with a token in hello, shows a message from Go and reads
// it (the Go sender sees the read receipt), sends a message that reaches Go
// with a UUIDv7 client message id, shows Go's read receipt, and after
// leaving and coming back resumes from its saved cursor with nothing lost
// or doubled.
func TestBrowserClient(t *testing.T) {
	b := cdptest.Start(t).NewPage(t)
	n := startNode(t)
	artifacts := func(name string) {
		b.Screenshot(t, name)
	}

	bob := n.dial(t, "bob", "bob-phone")
	const alice = "alice"
	page := n.httpURL + "/#token=" + token(t, alice, cloudwire.RoleUser) + "&device=web1"
	b.Navigate(t, page)
	b.WaitState(t, "live", func(s cdptest.State) bool { return s.Status == "live" && s.User == alice })

	var addr string
	b.Eval(t, "location.href", &addr)
	if strings.Contains(addr, "token=") {
		t.Errorf("the token stays in the address bar: %s", addr)
	}

	// Go -> page; the page, showing the conversation, reads it.
	ack := send(t, bob, alice, "hello from go")
	s := b.WaitState(t, "message from Go shown", func(s cdptest.State) bool {
		return len(s.Texts(ack.Conv)) == 1
	})
	if got := s.Texts(ack.Conv); got[0] != "bob: hello from go" {
		t.Fatalf("page shows %q", got)
	}
	if txt := b.Text(t, "#msgs"); !strings.Contains(txt, "hello from go") {
		t.Fatalf("message list does not show the message: %q", txt)
	}
	bob.waitEvent(t, "alice's read receipt", func(ev cloudwire.Event) bool {
		return ev.Kind == cloudwire.KindReceiptUpTo && ev.By == alice && ev.Status == cloudwire.StatusRead &&
			ev.UpTo >= ack.Seq && ev.FromDevice == "web1"
	})

	// Page -> Go, typed and sent through the page's own form.
	b.Eval(t, `(() => {
		document.querySelector("#text").value = "hello from chromium";
		document.querySelector("#send").click();
		return true;
	})()`, nil)
	got := bob.waitEvent(t, "message from the page", func(ev cloudwire.Event) bool {
		return ev.Kind == cloudwire.KindMsg && ev.From == alice
	})
	if got.Text != "hello from chromium" || got.To != "bob" || got.Conv != ack.Conv || got.FromDevice != "web1" {
		t.Fatalf("Go client got %+v", got)
	}
	if !uuidRE.MatchString(got.MsgID) {
		t.Errorf("client message id %q is not a UUIDv7", got.MsgID)
	}
	s = b.WaitState(t, "own message acknowledged and shown", func(s cdptest.State) bool {
		return s.Outbox == 0 && len(s.Texts(ack.Conv)) == 2
	})

	// Bob reads it; the page shows "read" on its message.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := bob.Receipt(ctx, cloudwire.Receipt{Conv: got.Conv, UpTo: got.Seq, Status: cloudwire.StatusRead}); err != nil {
		t.Fatalf("bob's receipt: %v", err)
	}
	b.WaitState(t, "read mark on the page's message", func(s cdptest.State) bool {
		m, ok := s.Msg(got.MsgID)
		return ok && m.Receipt == "read"
	})
	if mark := b.Attr(t, `#msgs li[data-msg-id="`+got.MsgID+`"]`, "data-receipt"); mark != "read" {
		t.Errorf("message element shows receipt %q, want read", mark)
	}
	artifacts("1-conversation")
	before := b.WaitState(t, "cursor", func(cdptest.State) bool { return true })

	// Leave the page (its socket closes), miss a message, come back: the
	// token is in this tab's sessionStorage, the cursor in localStorage.
	b.Navigate(t, "about:blank")
	waitOffline(t, n, 1)
	missed := send(t, bob, alice, "while you were away")
	b.Navigate(t, n.httpURL+"/")
	s = b.WaitState(t, "resumed", func(s cdptest.State) bool {
		return s.Status == "live" && len(s.Texts(ack.Conv)) == 3
	})
	if s.HelloCursor != before.Cursor || before.Cursor == 0 {
		t.Errorf("resumed from cursor %d, saved %d", s.HelloCursor, before.Cursor)
	}
	want := []string{"bob: hello from go", "alice: hello from chromium", "bob: while you were away"}
	if g := s.Texts(ack.Conv); strings.Join(g, "|") != strings.Join(want, "|") {
		t.Errorf("after resume the page shows %q, want %q", g, want)
	}
	// Only what was missed is replayed: the message and the receipts about
	// it, not the history before the cursor.
	if s.Replayed < 1 || s.Replayed > 3 {
		t.Errorf("replayed %d events after the resume, want the missed message (and its receipts)", s.Replayed)
	}
	bob.waitEvent(t, "read receipt of the missed message", func(ev cloudwire.Event) bool {
		return ev.Kind == cloudwire.KindReceiptUpTo && ev.By == alice && ev.Status == cloudwire.StatusRead && ev.UpTo >= missed.Seq
	})
	if txt := b.Text(t, "#msgs"); strings.Count(txt, "while you were away") != 1 || strings.Count(txt, "hello from go") != 1 {
		t.Errorf("message list after resume: %q", txt)
	}
	artifacts("2-resumed")
}

// waitOffline waits until the node has at most n sessions open.
func waitOffline(tb testing.TB, n *testNode, want int) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for n.svc.Sessions() > want {
		if time.Now().After(deadline) {
			tb.Fatalf("%d sessions open after %v, want %d", n.svc.Sessions(), waitFor, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- the service and a Go client ------------------------------------------

// waitFor bounds every wait in these tests, as it bounds the browser's.
const waitFor = cdptest.WaitFor

// testNode is a cloud.Service on an embedded engine, served on 127.0.0.1
// with the page's own origin allowed.
type testNode struct {
	svc     *cloud.Service
	httpURL string // http://127.0.0.1:port
	wsURL   string
}

func startNode(tb testing.TB) *testNode {
	tb.Helper()
	eng := enginetest.Start(tb)
	srv := httptest.NewUnstartedServer(nil)
	origin := "http://" + srv.Listener.Addr().String()
	svc, err := cloud.New(context.Background(), cloud.Config{
		JS:             eng.JS,
		TokenKey:       testKey.Public().(ed25519.PublicKey),
		AllowedOrigins: []string{origin},
	})
	if err != nil {
		tb.Fatalf("cloud.New: %v", err)
	}
	srv.Config.Handler = svc.Handler()
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitFor)
		defer scancel()
		if err := svc.Shutdown(sctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		cancel()
		if err := <-runErr; err != nil {
			tb.Errorf("Run: %v", err)
		}
		srv.Close()
	})
	return &testNode{svc: svc, httpURL: origin, wsURL: "ws://" + srv.Listener.Addr().String() + "/v1/ws"}
}

var testKey = ed25519.NewKeyFromSeed([]byte("ferry cloudweb test key........."))

func token(tb testing.TB, sub, role string) string {
	tb.Helper()
	now := time.Now()
	tok, err := cloudwire.SignToken(testKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience}, Subject: sub, Role: role, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// goClient is a cloud.Client whose events and live frames are collected.
type goClient struct {
	*cloud.Client
	mu      sync.Mutex
	evs     []cloudwire.Event
	lives   []cloudwire.Frame
	livesAt int // lives before it were consumed by waitLive
	signal  chan struct{}
}

func (n *testNode) dial(tb testing.TB, user, device string) *goClient {
	tb.Helper()
	c, err := cloud.Dial(context.Background(), cloud.ClientConfig{
		URL:   n.wsURL,
		Token: token(tb, user, cloudwire.RoleUser),
		Hello: cloudwire.Hello{Device: device, Platform: "test"},
	})
	if err != nil {
		tb.Fatalf("Dial %s: %v", user, err)
	}
	tb.Cleanup(func() { c.Close() })
	gc := &goClient{Client: c, signal: make(chan struct{}, 1)}
	notify := func() {
		select {
		case gc.signal <- struct{}{}:
		default:
		}
	}
	go func() {
		for ev := range c.Events() {
			gc.mu.Lock()
			gc.evs = append(gc.evs, ev)
			gc.mu.Unlock()
			notify()
		}
	}()
	go func() {
		for f := range c.Live() {
			gc.mu.Lock()
			gc.lives = append(gc.lives, f)
			gc.mu.Unlock()
			notify()
		}
	}()
	return gc
}

// waitLive waits for the next live frame matching ok after the one the
// previous waitLive returned, and returns it.
func (c *goClient) waitLive(tb testing.TB, what string, ok func(cloudwire.Frame) bool) cloudwire.Frame {
	tb.Helper()
	c.mu.Lock()
	from := c.livesAt
	c.mu.Unlock()
	f, i := waitIn(tb, c, what+" (live frames)", &c.lives, from, ok)
	c.mu.Lock()
	c.livesAt = i + 1
	c.mu.Unlock()
	return f
}

// waitEvent waits for an event matching ok, among all received so far.
func (c *goClient) waitEvent(tb testing.TB, what string, ok func(cloudwire.Event) bool) cloudwire.Event {
	tb.Helper()
	ev, _ := waitIn(tb, c, what+" (events)", &c.evs, 0, ok)
	return ev
}

// waitIn waits until an item of (*items)[from:], which c.mu guards and
// c.signal announces, matches ok, and returns it with its index.
func waitIn[T any](tb testing.TB, c *goClient, what string, items *[]T, from int, ok func(T) bool) (T, int) {
	tb.Helper()
	deadline := time.After(waitFor)
	for {
		c.mu.Lock()
		for i := from; i < len(*items); i++ {
			if v := (*items)[i]; ok(v) {
				c.mu.Unlock()
				return v, i
			}
		}
		n := len(*items)
		c.mu.Unlock()
		select {
		case <-c.signal:
		case <-deadline:
			tb.Fatalf("Go client: no %s among %d received in %v", what, n, waitFor)
		}
	}
}

func send(tb testing.TB, c *goClient, to, text string) cloudwire.Ack {
	tb.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := c.Send(ctx, cloudwire.Send{To: to, MsgID: id.String(), Text: text})
	if err != nil {
		tb.Fatalf("Send %q: %v", text, err)
	}
	return ack
}
