package cloud

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// waitFor bounds every wait in these tests; nothing takes near it on a
// healthy run.
const waitFor = 10 * time.Second

var testKey = ed25519.NewKeyFromSeed([]byte("ferry cloud package test key...."))

// node is one running Service on an httptest server.
type node struct {
	svc  *Service
	srv  *httptest.Server
	url  string
	stop func() // Shutdown, stop Run, close the server; idempotent
}

// startNode starts a Service on js with Run and an HTTP server. mutate may
// adjust the Config. It stops at cleanup.
func startNode(tb testing.TB, js jetstream.JetStream, mutate func(*Config)) *node {
	tb.Helper()
	return startNodeOn(tb, js, nil, mutate)
}

// startNodeOn is startNode serving on ln (nil: a new loopback listener),
// so that a test can restart a service at the same address.
func startNodeOn(tb testing.TB, js jetstream.JetStream, ln net.Listener, mutate func(*Config)) *node {
	tb.Helper()
	cfg := Config{JS: js, TokenKey: testKey.Public().(ed25519.PublicKey), ReconnectWindow: time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	svc, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	srv := httptest.NewUnstartedServer(svc.Handler())
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	var once sync.Once
	n := &node{svc: svc, srv: srv, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"}
	n.stop = func() {
		once.Do(func() {
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
	}
	tb.Cleanup(n.stop)
	return n
}

// fixture is an engine plus one node.
type fixture struct {
	eng *engine.Engine
	*node
}

func newFixture(tb testing.TB, mutate func(*Config)) *fixture {
	tb.Helper()
	eng := enginetest.Start(tb)
	return &fixture{eng: eng, node: startNode(tb, eng.JS, mutate)}
}

func token(tb testing.TB, sub, role string) string {
	tb.Helper()
	now := time.Now()
	tok, err := cloudwire.SignToken(testKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience}, Subject: sub, Role: role, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// dial opens a client for user (role user) on device, resuming after cursor.
func (n *node) dial(tb testing.TB, user, device string, cursor uint64) *Client {
	tb.Helper()
	return n.dialRole(tb, user, cloudwire.RoleUser, device, cursor)
}

func (n *node) dialRole(tb testing.TB, sub, role, device string, cursor uint64) *Client {
	tb.Helper()
	c, err := Dial(context.Background(), ClientConfig{
		URL:   n.url,
		Token: token(tb, sub, role),
		Hello: cloudwire.Hello{Device: device, Platform: "test", ClientVersion: "1.0.0", Cursor: cursor},
	})
	if err != nil {
		tb.Fatalf("Dial %s/%s: %v", sub, device, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// collector drains a client's events in the background.
type collector struct {
	mu     sync.Mutex
	evs    []cloudwire.Event
	closed bool
	signal chan struct{}
}

func collect(c *Client) *collector {
	col := &collector{signal: make(chan struct{}, 1)}
	go func() {
		for ev := range c.Events() {
			col.mu.Lock()
			col.evs = append(col.evs, ev)
			col.mu.Unlock()
			col.poke()
		}
		col.mu.Lock()
		col.closed = true
		col.mu.Unlock()
		col.poke()
	}()
	return col
}

func (col *collector) poke() {
	select {
	case col.signal <- struct{}{}:
	default:
	}
}

func (col *collector) events() []cloudwire.Event {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]cloudwire.Event(nil), col.evs...)
}

// waitN waits until at least n events arrived and returns them all.
func (col *collector) waitN(tb testing.TB, n int) []cloudwire.Event {
	tb.Helper()
	deadline := time.After(waitFor)
	for {
		col.mu.Lock()
		got, closed := len(col.evs), col.closed
		col.mu.Unlock()
		if got >= n {
			return col.events()
		}
		if closed {
			tb.Fatalf("events closed after %d of %d", got, n)
		}
		select {
		case <-col.signal:
		case <-deadline:
			tb.Fatalf("got %d of %d events in %v", got, n, waitFor)
		}
	}
}

// settle gives stray (duplicate) events a moment to show up before a test
// asserts that nothing more arrived. It is not a synchronisation point.
func settle() { time.Sleep(100 * time.Millisecond) }

func msgID(tb testing.TB) string {
	tb.Helper()
	id, err := uuid.NewV7()
	if err != nil {
		tb.Fatal(err)
	}
	return id.String()
}

func send(tb testing.TB, c *Client, to, text string) cloudwire.Ack {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ack, err := c.Send(ctx, cloudwire.Send{To: to, MsgID: msgID(tb), Text: text})
	if err != nil {
		tb.Fatalf("Send %q: %v", text, err)
	}
	return ack
}

func waitSynced(tb testing.TB, c *Client) {
	tb.Helper()
	select {
	case <-c.Synced():
	case <-time.After(waitFor):
		tb.Fatal("no synced")
	}
}

func waitDone(tb testing.TB, c *Client) {
	tb.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		tb.Fatal("client not done")
	}
}

func serverError(tb testing.TB, err error, code string) {
	tb.Helper()
	var se *ServerError
	if !errors.As(err, &se) || se.Code != code {
		tb.Fatalf("error = %v, want a server error %q", err, code)
	}
}

func closeCode(tb testing.TB, err error, code int) *CloseError {
	tb.Helper()
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		tb.Fatalf("error = %v, want close %d", err, code)
	}
	return ce
}

// rawConn opens a plain WebSocket with a header token and completes the
// hello, for tests that need to send what Client never would.
func rawConn(tb testing.TB, n *node, user string) *websocket.Conn {
	tb.Helper()
	return rawConnRole(tb, n, user, cloudwire.RoleUser)
}

// rawConnRole is rawConn with a token of the given role.
func rawConnRole(tb testing.TB, n *node, user, role string) *websocket.Conn {
	tb.Helper()
	d := websocket.Dialer{Subprotocols: []string{cloudwire.Subprotocol}}
	h := http.Header{"Authorization": {"Bearer " + token(tb, user, role)}}
	conn, _, err := d.Dial(n.url, h)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	b, _ := cloudwire.Encode(cloudwire.Hello{Device: "raw"})
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		tb.Fatal(err)
	}
	if f := readFrame(tb, conn); f.FrameType() != cloudwire.TypeWelcome {
		tb.Fatalf("got %s, want welcome", f.FrameType())
	}
	return conn
}

// readFrame reads frames from a raw connection, skipping what the service
// pushes on its own (events, synced, presence and its snapshot, typing).
func readFrame(tb testing.TB, conn *websocket.Conn) cloudwire.Frame {
	tb.Helper()
	for {
		_ = conn.SetReadDeadline(time.Now().Add(waitFor))
		_, b, err := conn.ReadMessage()
		if err != nil {
			tb.Fatalf("read: %v", err)
		}
		f, err := cloudwire.Decode(b)
		if err != nil {
			tb.Fatalf("decode %s: %v", b, err)
		}
		switch f.(type) {
		case cloudwire.Event, cloudwire.Synced, cloudwire.Presence, cloudwire.PresenceSnapshot, cloudwire.Typing:
			continue
		}
		return f
	}
}

func msgIDs(evs []cloudwire.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%s/%s", ev.Kind, ev.MsgID)
	}
	return out
}
