package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// benchPayload is the message of the floor benchmarks, about the size of a
// short chat send frame.
var benchPayload = []byte(strings.Repeat("x", 64))

// rate runs op in a closed loop on conns goroutines (op's argument is the
// goroutine's index) for d and returns the completed ops per second.
func rate(ctx context.Context, d time.Duration, conns int, op func(i int) error) (float64, error) {
	var n atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	g, ctx := errgroup.WithContext(ctx)
	for i := range conns {
		g.Go(func() error {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(i); err != nil {
					return err
				}
				n.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// tcpEchoServer echoes every byte back on every connection until closed.
func tcpEchoServer() (addr string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				io.Copy(c, c) //nolint:errcheck // ends when the client closes
			})
		}
	})
	return ln.Addr().String(), func() { ln.Close(); wg.Wait() }, nil
}

// wsServer serves handle on every upgraded connection of a bare
// gorilla/websocket server on loopback.
type wsServer struct {
	srv *http.Server
	ln  net.Listener
	url string
	wg  sync.WaitGroup

	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
}

var benchUpgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, Subprotocols: []string{cloudwire.Subprotocol}}

func startWSServer(handle func(*websocket.Conn)) (*wsServer, error) {
	return startHTTPServer(nil, handle)
}

// startHTTPServer serves h, or when h is nil a bare WebSocket server
// running handle on each connection.
func startHTTPServer(h http.Handler, handle func(*websocket.Conn)) (*wsServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &wsServer{ln: ln, url: "ws://" + ln.Addr().String() + "/v1/ws", conns: map[*websocket.Conn]struct{}{}}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := benchUpgrader.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[c] = struct{}{}
			s.mu.Unlock()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			handle(c)
		})
	}
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Go(func() { s.srv.Serve(ln) }) //nolint:errcheck // ErrServerClosed at stop
	return s, nil
}

// stop closes the listener and every connection the bare handler holds.
func (s *wsServer) stop() {
	s.srv.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func wsEcho(c *websocket.Conn) {
	for {
		t, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(t, msg); err != nil {
			return
		}
	}
}

func benchFloor(ctx context.Context, o benchOptions) ([]benchRow, error) {
	var rows []benchRow

	// Echo round trips: what one request/response costs on loopback, with
	// and without WebSocket framing.
	tcpAddr, stopTCP, err := tcpEchoServer()
	if err != nil {
		return nil, err
	}
	defer stopTCP()
	ws, err := startWSServer(wsEcho)
	if err != nil {
		return nil, err
	}
	defer ws.stop()
	tcpConns := make([]net.Conn, o.Conns)
	wsConns := make([]*websocket.Conn, o.Conns)
	for i := range o.Conns {
		if tcpConns[i], err = net.Dial("tcp", tcpAddr); err != nil {
			return nil, err
		}
		defer tcpConns[i].Close()
		if wsConns[i], _, err = websocket.DefaultDialer.DialContext(ctx, ws.url, nil); err != nil {
			return nil, err
		}
		defer wsConns[i].Close()
	}
	tcpRT := func(ctx context.Context) (float64, error) {
		bufs := make([][]byte, o.Conns)
		return rate(ctx, o.Duration, o.Conns, func(i int) error {
			if bufs[i] == nil {
				bufs[i] = make([]byte, len(benchPayload))
			}
			if _, err := tcpConns[i].Write(benchPayload); err != nil {
				return err
			}
			_, err := io.ReadFull(tcpConns[i], bufs[i])
			return err
		})
	}
	wsRT := func(ctx context.Context) (float64, error) {
		return rate(ctx, o.Duration, o.Conns, func(i int) error {
			if err := wsConns[i].WriteMessage(websocket.BinaryMessage, benchPayload); err != nil {
				return err
			}
			_, _, err := wsConns[i].ReadMessage()
			return err
		})
	}
	cs, fs, err := alternate(ctx, o.Runs, wsRT, tcpRT)
	if err != nil {
		return nil, fmt.Errorf("echo: %w", err)
	}
	rows = append(rows, newRow("floor", "echo", "raw WebSocket echo", "raw TCP echo", "round trips/s", cs, fs, nil,
		fmt.Sprintf("%d connections, closed loop, %d-byte messages, load and server in one process, not pinned", o.Conns, len(benchPayload))))

	// One-way writes: one WebSocket message per write (a syscall each), as a
	// socket without coalescing sends, against the same bytes batched through
	// a 64 KB buffer on raw TCP.
	oneWay, err := benchOneWay(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("one-way: %w", err)
	}
	rows = append(rows, oneWay)

	// One fsync: the price of a durable write, against the same write left
	// to the page cache.
	f, err := os.CreateTemp("", "ferry-bench-fsync-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	write := func(sync bool) measureFunc {
		return func(ctx context.Context) (float64, error) {
			return rate(ctx, o.Duration, 1, func(int) error {
				if _, err := f.Write(benchPayload); err != nil {
					return err
				}
				if sync {
					return syscall.Fdatasync(int(f.Fd()))
				}
				return nil
			})
		}
	}
	cs, fs, err = alternate(ctx, o.Runs, write(true), write(false))
	if err != nil {
		return nil, fmt.Errorf("fsync: %w", err)
	}
	rows = append(rows, newRow("floor", "fsync", "64 B write + fdatasync", "64 B write, no sync", "writes/s", cs, fs, nil,
		"fsync of "+os.TempDir()+"; group fsyncs per batch"))
	return rows, nil
}

func benchOneWay(ctx context.Context, o benchOptions) (benchRow, error) {
	var wsGot, tcpGot atomic.Int64
	ws, err := startWSServer(func(c *websocket.Conn) {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
			wsGot.Add(1)
		}
	})
	if err != nil {
		return benchRow{}, err
	}
	defer ws.stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return benchRow{}, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 64<<10)
				buf := make([]byte, len(benchPayload))
				for {
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
					tcpGot.Add(1)
				}
			})
		}
	})
	wsc, _, err := websocket.DefaultDialer.DialContext(ctx, ws.url, nil)
	if err != nil {
		return benchRow{}, err
	}
	defer wsc.Close()
	tc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return benchRow{}, err
	}
	defer tc.Close()
	bw := bufio.NewWriterSize(tc, 64<<10)
	// Each run counts what the receiver took in the run's time, so that
	// writes buffered but not yet read do not count.
	received := func(got *atomic.Int64, write func() error, flush func() error) measureFunc {
		return func(ctx context.Context) (float64, error) {
			before := got.Load()
			start := time.Now()
			if _, err := rate(ctx, o.Duration, 1, func(int) error { return write() }); err != nil {
				return 0, err
			}
			if err := flush(); err != nil {
				return 0, err
			}
			return float64(got.Load()-before) / time.Since(start).Seconds(), nil
		}
	}
	wsRun := received(&wsGot, func() error { return wsc.WriteMessage(websocket.BinaryMessage, benchPayload) }, func() error { return nil })
	tcpRun := received(&tcpGot, func() error { _, err := bw.Write(benchPayload); return err }, bw.Flush)
	cs, fs, err := alternate(ctx, o.Runs, wsRun, tcpRun)
	if err != nil {
		return benchRow{}, err
	}
	return newRow("floor", "one-way", "WebSocket, one write per message", "TCP, writes batched in 64 KB", "messages/s", cs, fs, nil,
		"one connection; counted at the receiver"), nil
}
