package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudtest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
)

// benchCloud is a real cloud.Service on an embedded engine in a temporary
// directory, served on loopback.
type benchCloud struct {
	eng  *engine.Engine
	svc  *cloud.Service
	http *wsServer
	key  ed25519.PrivateKey
	dir  string
	stop func() error
}

func startBenchCloud(ctx context.Context) (*benchCloud, error) {
	dir, err := os.MkdirTemp("", "ferry-bench-*")
	if err != nil {
		return nil, err
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	eng, err := engine.Start(engine.Config{DataDir: dir, Name: "ferry-bench"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start engine: %w", err)
	}
	svc, err := cloud.New(ctx, cloud.Config{JS: eng.JS, TokenKey: pub, ReconnectWindow: 100 * time.Millisecond})
	if err != nil {
		eng.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start cloud service: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(runCtx) }()
	hs, err := startHTTPServer(svc.Handler(), nil)
	if err != nil {
		cancel()
		<-runErr
		eng.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	bc := &benchCloud{eng: eng, svc: svc, http: hs, key: key, dir: dir}
	bc.stop = func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		err := svc.Shutdown(sctx)
		cancel()
		err = errors.Join(err, <-runErr)
		hs.stop()
		err = errors.Join(err, eng.Close())
		return errors.Join(err, os.RemoveAll(dir))
	}
	return bc, nil
}

// benchToken is a day's user token for a benchmark's own cloud service,
// which runs with the default issuer and audience.
func benchToken(key ed25519.PrivateKey, user string) (string, error) {
	return tokenIssuer{key: key}.issue(user, cloudwire.RoleUser, 24*time.Hour)
}

func benchCloudRTT(ctx context.Context, o benchOptions) ([]benchRow, error) {
	bc, err := startBenchCloud(ctx)
	if err != nil {
		return nil, err
	}
	echo, err := startWSServer(cloudtest.AckEcho)
	if err != nil {
		return nil, errors.Join(err, bc.stop())
	}
	rows, err := func() ([]benchRow, error) {
		dial := func(url, user string) (*cloud.Client, error) {
			tok, err := benchToken(bc.key, user)
			if err != nil {
				return nil, err
			}
			c, err := cloud.Dial(ctx, cloud.ClientConfig{URL: url, Token: tok,
				Hello: cloudwire.Hello{Device: "bench", Platform: "bench", ClientVersion: version}})
			if err != nil {
				return nil, fmt.Errorf("dial %s: %w", url, err)
			}
			go func() {
				for range c.Events() { // every send lands in the sender's inbox too
				}
			}()
			return c, nil
		}
		svcClients := make([]*cloud.Client, o.Conns)
		echoClients := make([]*cloud.Client, o.Conns)
		for i := range o.Conns {
			if svcClients[i], err = dial(bc.http.url, "bench-"+strconv.Itoa(i)); err != nil {
				return nil, err
			}
			defer svcClients[i].Close()
			if echoClients[i], err = dial(echo.url, "bench-"+strconv.Itoa(i)); err != nil {
				return nil, err
			}
			defer echoClients[i].Close()
		}
		sends := func(clients []*cloud.Client) measureFunc {
			return func(ctx context.Context) (float64, error) {
				return rate(ctx, o.Duration, len(clients), func(i int) error {
					_, err := clients[i].Send(ctx, cloudwire.Send{To: "peer-" + strconv.Itoa(i), Text: "benchmark message"})
					return err
				})
			}
		}
		cs, fs, err := alternate(ctx, o.Runs, sends(svcClients), sends(echoClients))
		if err != nil {
			return nil, err
		}
		// The storage alone, measured after the pairs on the same engine:
		// what limits the case (bench_storefloor.go).
		sf, err := newStoreFloor(ctx, bc.eng.JS)
		if err != nil {
			return nil, err
		}
		var ss []float64
		for range o.Runs {
			v, err := rate(ctx, o.Duration, o.Conns, func(i int) error { return sf.send(ctx, i) })
			if err != nil {
				return nil, errors.Join(err, sf.drop(ctx))
			}
			ss = append(ss, v)
		}
		if err := sf.drop(ctx); err != nil {
			return nil, err
		}
		return []benchRow{newRow("cloud-rtt", "send→ack", "cloud.Service, embedded engine", "raw gorilla/websocket ack", "round trips/s", cs, fs,
			&benchTarget{Of: "ratio", Op: ">=", Value: 0.5},
			fmt.Sprintf("%d clients, closed loop, cloud.Client on both sides; engine file store, sync every %s; load and server in one process, not pinned", o.Conns, engine.DefaultSyncInterval),
			fmt.Sprintf("storage floor: a send's JetStream writes alone (log append with the idempotency lookup alongside, then two inbox writes and the idempotency record awaited together), %d workers on the same engine, no WebSocket: median %.0f sends/s, %.3f of the raw ack; the case cannot pass it", o.Conns, median(ss), median(ss)/median(fs)))}, nil
	}()
	echo.stop()
	return rows, errors.Join(err, bc.stop())
}

// idleDialerArg is the hidden first argument of "gateway bench" that makes
// the process a cloud-idle load process: it opens idle sessions, prints
// "ready", and holds them until its standard input closes.
const idleDialerArg = "internal-idle-dialer"

func idleDialer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("idle-dialer", flag.ContinueOnError)
	url := fs.String("url", "", "WebSocket URL")
	n := fs.Int("n", 0, "sessions to open")
	src := fs.String("src", "127.0.0.1", "source address")
	prefix := fs.String("prefix", "idle", "user id prefix")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, err := readLoadKey(os.Stdin)
	if err != nil {
		return err
	}
	d := &websocket.Dialer{
		NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}}).DialContext,
		Subprotocols:     []string{cloudwire.Subprotocol},
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	var (
		mu    sync.Mutex
		conns []*websocket.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i := range *n {
		g.Go(func() error {
			user := *prefix + "-" + strconv.Itoa(i)
			tok, err := benchToken(key, user)
			if err != nil {
				return err
			}
			c, _, err := d.DialContext(gctx, *url, http.Header{"Authorization": {"Bearer " + tok}})
			if err != nil {
				return fmt.Errorf("dial %s from %s: %w", *url, *src, err)
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			hello, err := cloudwire.Encode(cloudwire.Hello{Device: "idle", Platform: "bench", ClientVersion: version})
			if err != nil {
				return err
			}
			if err := c.WriteMessage(websocket.TextMessage, hello); err != nil {
				return err
			}
			for { // until the welcome; later frames are read and dropped below
				_, msg, err := c.ReadMessage()
				if err != nil {
					return fmt.Errorf("read welcome: %w", err)
				}
				if f, err := cloudwire.Decode(msg); err == nil {
					if _, ok := f.(cloudwire.Welcome); ok {
						break
					}
				}
			}
			go func() { // answers pings; ends when the connection closes
				for {
					if _, _, err := c.NextReader(); err != nil {
						return
					}
				}
			}()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	io.Copy(io.Discard, os.Stdin) //nolint:errcheck // any end of stdin means stop
	return nil
}

// idleLoad is the load processes of one cloud-idle run.
type idleLoad struct {
	cmds  []*exec.Cmd
	stdin []io.WriteCloser
}

func startIdleLoad(ctx context.Context, url string, key ed25519.PrivateKey, n, procs int, prefix string) (*idleLoad, error) {
	l := &idleLoad{}
	ready := make(chan error, procs)
	for p := range procs {
		cmd, in, out, err := startLoadProcess(ctx, key, idleDialerArg, "-url", url, "-n", strconv.Itoa(share(n, procs, p)),
			"-src", fmt.Sprintf("127.0.0.%d", 10+p), "-prefix", fmt.Sprintf("%s-%d", prefix, p))
		if err != nil {
			return nil, errors.Join(err, l.stop())
		}
		l.cmds, l.stdin = append(l.cmds, cmd), append(l.stdin, in)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err == nil && line != "ready\n" {
				err = fmt.Errorf("load process said %q", line)
			}
			if err != nil {
				err = fmt.Errorf("load process %d did not get ready: %w", p, err)
			}
			// The load process writes nothing after "ready" (errors go
			// to stderr): no goroutine drains its output, so that the
			// harness holds one goroutine per load process in this
			// process (os/exec's context watcher), which cloud-idle
			// takes off its count.
			ready <- err
		}()
	}
	for range procs {
		if err := <-ready; err != nil {
			return nil, errors.Join(err, l.stop())
		}
	}
	return l, nil
}

// stop closes the load processes' standard input and waits for them.
func (l *idleLoad) stop() error {
	var errs []error
	for _, in := range l.stdin {
		in.Close()
	}
	for _, c := range l.cmds {
		if err := c.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// heapAndStacks is the memory the process holds for its data and
// goroutine stacks, after a collection.
func heapAndStacks() (bytes float64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse + m.StackInuse), runtime.NumGoroutine()
}

// waitCount polls count until it reaches want or the bounded wait ends.
func waitCount(ctx context.Context, what string, count func() int, want int) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := count()
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d, want %d after 60s", what, got, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cloudIdleN is cloud-idle's number of idle sessions when -n is not
// given: its targets are per connection at 10,000 of them (README,
// Performance).
const cloudIdleN = 10000

func benchCloudIdle(ctx context.Context, o benchOptions) ([]benchRow, error) {
	if !o.NSet && !o.Smoke {
		o.N = cloudIdleN
	}
	procs := o.Procs
	if procs <= 0 {
		procs = (o.N + 2499) / 2500
	}
	bc, err := startBenchCloud(ctx)
	if err != nil {
		return nil, err
	}
	floor, err := startWSServer(func(c *websocket.Conn) {
		// Welcome the hello, then one reader per connection, as a bare
		// gorilla/websocket service would.
		cloudtest.AckEcho(c)
	})
	if err != nil {
		return nil, errors.Join(err, bc.stop())
	}
	floorConns := func() int {
		floor.mu.Lock()
		defer floor.mu.Unlock()
		return len(floor.conns)
	}
	var caseG, floorG []float64
	run := 0
	measure := func(url string, count func() int, gs *[]float64) measureFunc {
		return func(ctx context.Context) (float64, error) {
			run++
			base := count()
			mem0, g0 := heapAndStacks()
			load, err := startIdleLoad(ctx, url, bc.key, o.N, procs, fmt.Sprintf("r%d", run))
			if err != nil {
				return 0, err
			}
			err = waitCount(ctx, "sessions", count, base+o.N)
			time.Sleep(200 * time.Millisecond) // let the sessions' sync finish
			mem1, g1 := heapAndStacks()
			err = errors.Join(err, load.stop(), waitCount(ctx, "sessions after the load left", count, base))
			if err != nil {
				return 0, err
			}
			// The harness holds one goroutine per load process here
			// (startIdleLoad); the rest are the server's.
			*gs = append(*gs, float64(g1-g0-procs)/float64(o.N))
			return (mem1 - mem0) / float64(o.N), nil
		}
	}
	cs, fs, err := alternate(ctx, o.Runs,
		measure(bc.http.url, bc.svc.Sessions, &caseG),
		measure(floor.url, floorConns, &floorG))
	floor.stop()
	if err = errors.Join(err, bc.stop()); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("N=%d idle sessions per run from %d load processes on 127.0.0.10-%d; heap in use + stacks after GC, server process only; goroutines without the harness's one per load process", o.N, procs, 9+procs)
	return []benchRow{
		newRow("cloud-idle", "memory", "cloud.Service session", "bare gorilla/websocket", "bytes/conn", cs, fs,
			&benchTarget{Of: "ratio", Op: "<=", Value: 2.5}, note),
		newRow("cloud-idle", "memory-abs", "cloud.Service session", "bare gorilla/websocket", "bytes/conn", cs, fs,
			&benchTarget{Of: "case", Op: "<=", Value: 12 * 1024}),
		newRow("cloud-idle", "goroutines", "cloud.Service session", "bare gorilla/websocket", "goroutines/conn", caseG, floorG,
			&benchTarget{Of: "case", Op: "<=", Value: 1}),
	}, nil
}
