package cloud

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudtest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// BenchmarkSendAck measures one send round trip through the service: the
// log append, both inbox writes and the idempotency record, on the embedded
// engine. Read it next to BenchmarkRawEcho, which runs the same client code
// against a server that acks without storing anything; the ratio is the
// cost of the service.
func BenchmarkSendAck(b *testing.B) {
	f := newFixture(b, nil)
	alice, bob := f.dial(b, "alice", "a", 0), f.dial(b, "bob", "b", 0)
	go drain(alice)
	go drain(bob)
	benchSends(b, alice)
}

// BenchmarkRawEcho runs the Client against a bare gorilla/websocket server
// that answers hello with welcome and every send with an ack at once.
func BenchmarkRawEcho(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(echoServer))
	b.Cleanup(srv.Close)
	c, err := Dial(context.Background(), ClientConfig{
		URL:   "ws" + strings.TrimPrefix(srv.URL, "http"),
		Token: "unchecked",
		Hello: cloudwire.Hello{Device: "bench"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	go drain(c)
	benchSends(b, c)
}

func benchSends(b *testing.B, c *Client) {
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Send(ctx, cloudwire.Send{To: "bob", Text: "benchmark message"}); err != nil {
			b.Fatal(err)
		}
	}
}

func drain(c *Client) {
	for range c.Events() {
	}
}

var echoUpgrader = websocket.Upgrader{Subprotocols: []string{cloudwire.Subprotocol}}

func echoServer(w http.ResponseWriter, r *http.Request) {
	conn, err := echoUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer conn.Close()
	cloudtest.AckEcho(conn)
}
