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
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// pageState is what window.ferry.state() returns.
type pageState struct {
	Status      string `json:"status"`
	User        string `json:"user"`
	Device      string `json:"device"`
	Cursor      uint64 `json:"cursor"`
	HelloCursor uint64 `json:"helloCursor"`
	Replayed    int    `json:"replayed"`
	Sessions    int    `json:"sessions"`
	LastError   string `json:"lastError"`
	Outbox      int    `json:"outbox"`
	Convs       []struct {
		ID   string `json:"id"`
		Peer string `json:"peer"`
		Msgs []struct {
			Seq        uint64 `json:"seq"`
			MsgID      string `json:"msg_id"`
			From       string `json:"from"`
			FromDevice string `json:"from_device"`
			Text       string `json:"text"`
			Receipt    string `json:"receipt"`
		} `json:"msgs"`
	} `json:"convs"`
}

// texts lists the page's messages of conv as "from: text".
func (s pageState) texts(conv string) []string {
	var out []string
	for _, c := range s.Convs {
		if c.ID != conv {
			continue
		}
		for _, m := range c.Msgs {
			out = append(out, m.From+": "+m.Text)
		}
	}
	return out
}

// waitPage polls the page's state until ok holds. Evaluation errors (the
// page is loading) are retried until the bound.
func waitPage(tb testing.TB, b *browser, what string, ok func(pageState) bool) pageState {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	var last pageState
	var lastErr error
	for time.Now().Before(deadline) {
		var s *pageState
		lastErr = b.evalErr("window.ferry ? window.ferry.state() : null", &s)
		if lastErr == nil && s != nil {
			last = *s
			if ok(last) {
				return last
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	tb.Fatalf("page: %s not reached in %v; last state %+v, last error %v", what, waitFor, last, lastErr)
	return last
}

// domText returns the text of the page's message list.
func domText(tb testing.TB, b *browser) string {
	tb.Helper()
	var s string
	b.eval(tb, `document.querySelector("#msgs").innerText`, &s)
	return s
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestBrowserClient drives the reference page in headless Chromium against
// a real service on an embedded engine, with a Go client as the other user:
// the page signs in with a token in hello, shows a message from Go and reads
// it (the Go sender sees the read receipt), sends a message that reaches Go
// with a UUIDv7 client message id, shows Go's read receipt, and after
// leaving and coming back resumes from its saved cursor with nothing lost
// or doubled.
func TestBrowserClient(t *testing.T) {
	b := startBrowser(t)
	n := startNode(t)
	artifacts := func(name string) {
		b.screenshot(t, name)
	}

	bob := n.dial(t, "bob", "bob-phone")
	const alice = "alice"
	page := n.httpURL + "/#token=" + token(t, alice, cloudwire.RoleUser) + "&device=web1"
	b.navigate(t, page)
	waitPage(t, b, "live", func(s pageState) bool { return s.Status == "live" && s.User == alice })

	var addr string
	b.eval(t, "location.href", &addr)
	if strings.Contains(addr, "token=") {
		t.Errorf("the token stays in the address bar: %s", addr)
	}

	// Go -> page; the page, showing the conversation, reads it.
	ack := send(t, bob, alice, "hello from go")
	s := waitPage(t, b, "message from Go shown", func(s pageState) bool {
		return len(s.texts(ack.Conv)) == 1
	})
	if got := s.texts(ack.Conv); got[0] != "bob: hello from go" {
		t.Fatalf("page shows %q", got)
	}
	if txt := domText(t, b); !strings.Contains(txt, "hello from go") {
		t.Fatalf("message list does not show the message: %q", txt)
	}
	bob.waitEvent(t, "alice's read receipt", func(ev cloudwire.Event) bool {
		return ev.Kind == cloudwire.KindReceiptUpTo && ev.By == alice && ev.Status == cloudwire.StatusRead &&
			ev.UpTo >= ack.Seq && ev.FromDevice == "web1"
	})

	// Page -> Go, typed and sent through the page's own form.
	b.eval(t, `(() => {
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
	s = waitPage(t, b, "own message acknowledged and shown", func(s pageState) bool {
		return s.Outbox == 0 && len(s.texts(ack.Conv)) == 2
	})

	// Bob reads it; the page shows "read" on its message.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := bob.Receipt(ctx, cloudwire.Receipt{Conv: got.Conv, UpTo: got.Seq, Status: cloudwire.StatusRead}); err != nil {
		t.Fatalf("bob's receipt: %v", err)
	}
	waitPage(t, b, "read mark on the page's message", func(s pageState) bool {
		for _, c := range s.Convs {
			for _, m := range c.Msgs {
				if m.MsgID == got.MsgID {
					return m.Receipt == "read"
				}
			}
		}
		return false
	})
	var mark string
	b.eval(t, `document.querySelector('#msgs li[data-msg-id="`+got.MsgID+`"]').dataset.receipt`, &mark)
	if mark != "read" {
		t.Errorf("message element shows receipt %q, want read", mark)
	}
	artifacts("1-conversation")
	before := waitPage(t, b, "cursor", func(pageState) bool { return true })

	// Leave the page (its socket closes), miss a message, come back: the
	// token is in this tab's sessionStorage, the cursor in localStorage.
	b.navigate(t, "about:blank")
	waitOffline(t, n, 1)
	missed := send(t, bob, alice, "while you were away")
	b.navigate(t, n.httpURL+"/")
	s = waitPage(t, b, "resumed", func(s pageState) bool {
		return s.Status == "live" && len(s.texts(ack.Conv)) == 3
	})
	if s.HelloCursor != before.Cursor || before.Cursor == 0 {
		t.Errorf("resumed from cursor %d, saved %d", s.HelloCursor, before.Cursor)
	}
	want := []string{"bob: hello from go", "alice: hello from chromium", "bob: while you were away"}
	if g := s.texts(ack.Conv); strings.Join(g, "|") != strings.Join(want, "|") {
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
	if txt := domText(t, b); strings.Count(txt, "while you were away") != 1 || strings.Count(txt, "hello from go") != 1 {
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

// waitFor bounds every wait in these tests; nothing takes near it on a
// healthy run.
const waitFor = 20 * time.Second

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
	tok, err := cloudwire.SignToken(testKey, cloudwire.Claims{Subject: sub, Role: role, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// goClient is a cloud.Client whose events are collected.
type goClient struct {
	*cloud.Client
	mu     sync.Mutex
	evs    []cloudwire.Event
	signal chan struct{}
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
	go func() {
		for ev := range c.Events() {
			gc.mu.Lock()
			gc.evs = append(gc.evs, ev)
			gc.mu.Unlock()
			select {
			case gc.signal <- struct{}{}:
			default:
			}
		}
	}()
	return gc
}

// waitEvent waits for an event matching ok, among all received so far.
func (c *goClient) waitEvent(tb testing.TB, what string, ok func(cloudwire.Event) bool) cloudwire.Event {
	tb.Helper()
	deadline := time.After(waitFor)
	for {
		c.mu.Lock()
		for _, ev := range c.evs {
			if ok(ev) {
				c.mu.Unlock()
				return ev
			}
		}
		n := len(c.evs)
		c.mu.Unlock()
		select {
		case <-c.signal:
		case <-deadline:
			tb.Fatalf("Go client: no %s among %d events in %v", what, n, waitFor)
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
