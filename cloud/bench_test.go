package cloud

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudtest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
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

// BenchmarkSendAckRemoteEngine is BenchmarkSendAck with the service
// reaching JetStream over TCP through a delay line of engineDelay each
// way, as a node does with -nats-url: the sequential JetStream round trips
// of a send then show in its wall time (ns/op) whatever the machine's load.
// Each round trip adds about 2*engineDelay.
func BenchmarkSendAckRemoteEngine(b *testing.B) {
	const engineDelay = 250 * time.Microsecond
	srv, err := engine.Start(engine.Config{DataDir: b.TempDir(), Listen: "127.0.0.1:-1", Name: "bench-server"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	remote, err := engine.Start(engine.Config{URL: "nats://" + delayLine(b, u.Host, engineDelay), Name: "bench-node"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { remote.Close() })
	n := startNode(b, remote.JS, nil)
	alice, bob := n.dial(b, "alice", "a", 0), n.dial(b, "bob", "b", 0)
	go drain(alice)
	go drain(bob)
	benchSends(b, alice)
}

// delayLine forwards TCP connections to target, delaying every chunk by d
// in each direction (bandwidth is not limited), until the benchmark ends.
func delayLine(b *testing.B, target string, d time.Duration) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	pipe := func(dst, src net.Conn) {
		type chunk struct {
			due time.Time
			b   []byte
		}
		q := make(chan chunk, 1024)
		go func() {
			defer close(q)
			for {
				buf := make([]byte, 32<<10)
				n, err := src.Read(buf)
				if n > 0 {
					q <- chunk{time.Now().Add(d), buf[:n]}
				}
				if err != nil {
					return
				}
			}
		}()
		for c := range q {
			time.Sleep(time.Until(c.due))
			if _, err := dst.Write(c.b); err != nil {
				break
			}
		}
		dst.Close()
		src.Close()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go pipe(t, c)
			go pipe(c, t)
		}
	}()
	return ln.Addr().String()
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

// benchSends also reports the process's CPU time per send (cpu-ns/op),
// which a loaded machine disturbs far less than the wall time per send.
func benchSends(b *testing.B, c *Client) {
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Send(ctx, cloudwire.Send{To: "bob", Text: "benchmark message"}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}

// processCPU is the user and system CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
