package main

// The reconnect benchmark: N cloud clients (cloud.Link, the product's
// reconnecting client) spread over several load processes ride out a
// restart of the cloud service on the same engine, while one message per
// user is written during the downtime; it measures how fast they resync
// from their cursors and checks that every client got exactly its one
// missed message. The floor is the same clients, the same restart and the
// same downtime against a bare gorilla/websocket server that answers every
// hello from memory.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
)

// reconnectDialerArg is the hidden first argument of "gateway bench" that
// makes the process a reconnect load process: it keeps -n cloud.Links
// connected, prints "connected" once each has been welcomed, "ready" once
// each has its first message, "resynced" once each has its second, and on
// the end of its standard input a JSON rcReport line.
const reconnectDialerArg = "internal-reconnect-dialer"

const (
	// reconnectN is the default number of clients (-n overrides it).
	reconnectN = 10000
	// reconnectPerProc is how many clients one load process holds by
	// default: each costs one descriptor there, and a process may have
	// 20,000.
	reconnectPerProc = 2500
	// reconnectSender is the user who writes every client's messages.
	reconnectSender = "rc-sender"
	// reconnectWait bounds each wait for the load processes, plus
	// reconnectWaitPer for each client.
	reconnectWait    = 2 * time.Minute
	reconnectWaitPer = 50 * time.Millisecond
	// reconnectSends is how many sends the writer keeps in flight.
	reconnectSends = 64
	// reconnectHandshakesEnv, when set to a positive number, is the
	// cloud.Config.MaxHandshakes of the benchmark's services, to measure
	// how much admission caps the resync rate (the default is
	// cloud.DefaultMaxHandshakes, the product's).
	reconnectHandshakesEnv = "FERRY_BENCH_MAX_HANDSHAKES"
)

// rcMaxHandshakes is the admission bound the benchmark's services use:
// reconnectHandshakesEnv's value, or cloud.DefaultMaxHandshakes.
func rcMaxHandshakes() (int, error) {
	v := os.Getenv(reconnectHandshakesEnv)
	if v == "" {
		return cloud.DefaultMaxHandshakes, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s=%q: want a positive number", reconnectHandshakesEnv, v)
	}
	return n, nil
}

// rcTiming is the reconnect schedule: the spread of the going-away hint
// the server sends and the clients' jittered backoff after a failed dial.
type rcTiming struct {
	window, backoffMin, backoffMax time.Duration
}

var (
	rcTimingFull  = rcTiming{window: time.Second, backoffMin: 250 * time.Millisecond, backoffMax: 2 * time.Second}
	rcTimingSmoke = rcTiming{window: 50 * time.Millisecond, backoffMin: 20 * time.Millisecond, backoffMax: 200 * time.Millisecond}
)

// rcUser is the user id of client i of a load process.
func rcUser(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }

// rcBefore and rcMissed are the texts of a client's two messages: the one
// that gives it a cursor before the restart and the one written during
// the downtime.
func rcBefore(user string) string { return "before " + user }
func rcMissed(user string) string { return "missed " + user }

// rcReport is what a load process found once its standard input closed.
type rcReport struct {
	Exact    int    `json:"exact"`    // clients with exactly their two messages, right ones, in order
	Resynced int    `json:"resynced"` // clients that got their missed message
	Dup      int    `json:"dup"`      // messages beyond the two expected
	Bad      int    `json:"bad"`      // clients that got a message not theirs or out of order
	LastNS   int64  `json:"last_ns"`  // wall clock when the last missed message arrived
	Err      string `json:"err,omitempty"`
}

// rcClient is one client's view, touched only by the goroutine draining
// its link's events until the link ends.
type rcClient struct {
	welcomed bool // set on the link's Run goroutine only
	user     string
	msgs     int
	first    string // message id of the first message
	bad      bool
	gotAt    int64
	runErr   error
}

func (c *rcClient) observe(ev cloudwire.Event) (first, second bool) {
	if ev.Kind != cloudwire.KindMsg {
		return false, false
	}
	c.msgs++
	switch c.msgs {
	case 1:
		c.first = ev.MsgID
		c.bad = c.bad || ev.Text != rcBefore(c.user) || ev.From != reconnectSender
		return true, false
	case 2:
		c.bad = c.bad || ev.Text != rcMissed(c.user) || ev.From != reconnectSender || ev.MsgID == c.first
		c.gotAt = time.Now().UnixNano()
		return false, true
	}
	return false, false
}

// loadKey is the first message the bench process writes to a cloud-idle
// or reconnect load process's standard input: the token key's seed. Like
// bridgeLoadSetup it never goes on the command line nor in the
// environment, both of which other users' processes can read
// (/proc/PID/cmdline, /proc/PID/environ).
type loadKey struct {
	Seed []byte `json:"seed"`
}

// readLoadKey reads the loadKey at the start of stdin. Its decoder may
// read ahead past that message: the callers want nothing more from stdin
// but its end, which means stop (and which a later read still sees).
func readLoadKey(stdin io.Reader) (ed25519.PrivateKey, error) {
	var k loadKey
	if err := json.NewDecoder(stdin).Decode(&k); err != nil {
		return nil, fmt.Errorf("load process: read token key: %w", err)
	}
	if len(k.Seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("load process: token key seed of %d bytes, want %d", len(k.Seed), ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(k.Seed), nil
}

// reconnectDialer is a load process of the reconnect benchmark.
func reconnectDialer(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("reconnect-dialer", flag.ContinueOnError)
	url := fs.String("url", "", "WebSocket URL")
	n := fs.Int("n", 0, "clients")
	prefix := fs.String("prefix", "rc", "user id prefix")
	var t rcTiming
	fs.DurationVar(&t.backoffMin, "backoff-min", rcTimingFull.backoffMin, "cloud.LinkConfig.BackoffMin")
	fs.DurationVar(&t.backoffMax, "backoff-max", rcTimingFull.backoffMax, "cloud.LinkConfig.BackoffMax")
	if err := fs.Parse(args); err != nil {
		return err
	}
	key, err := readLoadKey(os.Stdin)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg              sync.WaitGroup
		conns           atomic.Int64
		firsts, seconds atomic.Int64
		connected       = make(chan struct{})
		ready, resynced = make(chan struct{}), make(chan struct{})
		clients         = make([]rcClient, *n)
		stdinDone       = make(chan struct{})
		target          = int64(*n)
	)
	for i := range clients {
		c := &clients[i]
		c.user = rcUser(*prefix, i)
		tok, err := benchToken(key, c.user)
		if err != nil {
			return err
		}
		l, err := cloud.NewLink(cloud.LinkConfig{
			Client: cloud.ClientConfig{URL: *url, Token: tok, EventBuffer: 4,
				Hello: cloudwire.Hello{Device: c.user, Platform: "bench", ClientVersion: version}},
			BackoffMin: t.backoffMin, BackoffMax: t.backoffMax,
			OnConnect: func(cloudwire.Welcome) {
				if !c.welcomed {
					c.welcomed = true
					if conns.Add(1) == target {
						close(connected)
					}
				}
			},
		})
		if err != nil {
			return err
		}
		wg.Go(func() { c.runErr = l.Run(ctx) })
		wg.Go(func() {
			for ev := range l.Events() {
				first, second := c.observe(ev)
				if first && firsts.Add(1) == target {
					close(ready)
				}
				if second && seconds.Add(1) == target {
					close(resynced)
				}
			}
		})
	}
	go func() {
		io.Copy(io.Discard, os.Stdin) //nolint:errcheck // any end of stdin means stop
		close(stdinDone)
	}()
	for _, step := range []struct {
		ch   chan struct{}
		line string
	}{{connected, "connected"}, {ready, "ready"}, {resynced, "resynced"}} {
		select {
		case <-step.ch:
			fmt.Fprintln(stdout, step.line)
		case <-stdinDone:
		}
	}
	<-stdinDone
	cancel()
	wg.Wait()
	var r rcReport
	for i := range clients {
		c := &clients[i]
		if c.runErr != nil && r.Err == "" {
			r.Err = fmt.Sprintf("%s: %v", c.user, c.runErr)
		}
		if c.msgs >= 2 {
			r.Resynced++
			r.LastNS = max(r.LastNS, c.gotAt)
		}
		r.Dup += max(0, c.msgs-2)
		if c.bad {
			r.Bad++
		}
		if c.msgs == 2 && !c.bad {
			r.Exact++
		}
	}
	return json.NewEncoder(stdout).Encode(r)
}

// startLoadProcess starts this binary as a load process ("gateway bench
// ARGS..."). With a key, it writes the token key's seed as the first
// message on the process's standard input (loadKey), never on its
// command line or in its environment; the bridge load process, which
// gets its tokens in its setup, is started without one.
func startLoadProcess(ctx context.Context, key ed25519.PrivateKey, args ...string) (*exec.Cmd, io.WriteCloser, io.ReadCloser, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := pinLoad(exec.CommandContext(ctx, exe, append([]string{"bench"}, args...)...))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		in.Close()
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		in.Close()
		out.Close()
		return nil, nil, nil, fmt.Errorf("start load process: %w", err)
	}
	if key != nil {
		if err := json.NewEncoder(in).Encode(loadKey{Seed: key.Seed()}); err != nil {
			in.Close()
			return nil, nil, nil, errors.Join(fmt.Errorf("load process: write token key: %w", err), cmd.Wait())
		}
	}
	return cmd, in, out, nil
}

// share is how many of n clients load process p of procs holds.
func share(n, procs, p int) int {
	k := n / procs
	if p < n%procs {
		k++
	}
	return k
}

// rcLoad is the load processes of one reconnect run.
type rcLoad struct {
	cmds  []*exec.Cmd
	stdin []io.WriteCloser
	lines []chan string // per process, every line it printed; closed at its end
}

func startReconnectLoad(ctx context.Context, urls []string, key ed25519.PrivateKey, n int, prefix string, t rcTiming) (*rcLoad, error) {
	l := &rcLoad{}
	for p, url := range urls {
		cmd, in, out, err := startLoadProcess(ctx, key, reconnectDialerArg, "-url", url, "-n", strconv.Itoa(share(n, len(urls), p)),
			"-prefix", fmt.Sprintf("%s-%d", prefix, p),
			"-backoff-min", t.backoffMin.String(), "-backoff-max", t.backoffMax.String())
		if err != nil {
			return nil, errors.Join(err, l.stop())
		}
		lines := make(chan string, 4)
		l.cmds, l.stdin, l.lines = append(l.cmds, cmd), append(l.stdin, in), append(l.lines, lines)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
	}
	return l, nil
}

// waitLine waits until every load process has printed line, or the wait
// bounded by d ends; it reports whether all did.
func (l *rcLoad) waitLine(ctx context.Context, line string, d time.Duration) (bool, error) {
	deadline := time.After(d)
	for p, ch := range l.lines {
		select {
		case got, ok := <-ch:
			if !ok {
				return false, fmt.Errorf("load process %d ended before %q", p, line)
			}
			if got != line {
				return false, fmt.Errorf("load process %d said %q, want %q", p, got, line)
			}
		case <-deadline:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return true, nil
}

// stop closes the load processes' standard input, collects their
// reports and waits for them.
func (l *rcLoad) stop() error {
	_, err := l.finish()
	return err
}

func (l *rcLoad) finish() ([]rcReport, error) {
	var (
		errs    []error
		reports []rcReport
	)
	for _, in := range l.stdin {
		in.Close()
	}
	for p, ch := range l.lines {
		for line := range ch {
			if !strings.HasPrefix(line, "{") {
				continue // a "resynced" that came after the bounded wait
			}
			var r rcReport
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				errs = append(errs, fmt.Errorf("load process %d: report %q: %w", p, line, err))
				continue
			}
			reports = append(reports, r)
		}
	}
	for _, c := range l.cmds {
		if err := c.Wait(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(reports) != len(l.cmds) && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%d reports from %d load processes", len(reports), len(l.cmds)))
	}
	return reports, errors.Join(errs...)
}

// rcFront is the listeners the clients dial: one per load process, on
// 127.0.0.(10+p), so that each process has the ephemeral ports towards
// its own address (a run opens about 2N connections, and shed handshakes
// more; ports stay in TIME_WAIT for a minute). It can close and listen
// again on the same addresses, as a restarted server would.
type rcFront struct {
	addrs []string
	srv   *http.Server
	wg    sync.WaitGroup
}

func newFront(procs int) *rcFront {
	f := &rcFront{}
	for p := range procs {
		f.addrs = append(f.addrs, fmt.Sprintf("127.0.0.%d:0", 10+p))
	}
	return f
}

func (f *rcFront) urls() []string {
	us := make([]string, len(f.addrs))
	for i, a := range f.addrs {
		us[i] = "ws://" + a + "/v1/ws"
	}
	return us
}

// serve listens on every address (the same ports as before after the
// first time) and serves h there until stop.
func (f *rcFront) serve(h http.Handler) error {
	f.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	for i, a := range f.addrs {
		var (
			ln  net.Listener
			err error
		)
		for try := 0; try < 50; try++ { // a port of ours can be briefly taken by a client's dial
			if ln, err = net.Listen("tcp", a); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			f.stop()
			return fmt.Errorf("listen again on %s: %w", a, err)
		}
		f.addrs[i] = ln.Addr().String()
		f.wg.Go(func() { f.srv.Serve(ln) }) //nolint:errcheck // ErrServerClosed at stop
	}
	return nil
}

// stop closes the listeners; upgraded connections are the handler's.
func (f *rcFront) stop() {
	if f.srv != nil {
		f.srv.Close()
	}
	f.wg.Wait()
}

// rcFloor is the floor's server: startWSServer's bare gorilla/websocket
// server, served on the front's addresses (its own listener is left
// unused), with serveRCFloor on every connection.
type rcFloor struct {
	ws     *wsServer
	window time.Duration
}

// serveRCFloor answers a hello from memory, with the client's first
// message when its cursor is 0 (the case sends it live) and the missed one
// when it is 1, then reads until the end.
func serveRCFloor(c *websocket.Conn) {
	_, msg, err := c.ReadMessage()
	if err != nil {
		return
	}
	f, err := cloudwire.Decode(msg)
	h, ok := f.(cloudwire.Hello)
	if err != nil || !ok {
		return
	}
	frames := []cloudwire.Frame{cloudwire.Welcome{ProtocolVersion: cloudwire.ProtocolVersion, User: h.Device, Role: cloudwire.RoleUser, Device: h.Device, Session: "floor", Head: h.Cursor}}
	if h.Cursor < 2 {
		text := rcBefore(h.Device)
		if h.Cursor == 1 {
			text = rcMissed(h.Device)
		}
		frames = append(frames, cloudwire.Event{Cursor: h.Cursor + 1, User: h.Device, Kind: cloudwire.KindMsg,
			Conv: cloudwire.DirectConversationID(reconnectSender, h.Device), Seq: h.Cursor + 1,
			MsgID: fmt.Sprintf("floor-%s-%d", h.Device, h.Cursor+1), From: reconnectSender, To: h.Device, Text: text, At: time.Now()})
	}
	frames = append(frames, cloudwire.Synced{Cursor: h.Cursor + 1})
	for _, f := range frames {
		b, err := cloudwire.Encode(f)
		if err != nil {
			return
		}
		if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
			return
		}
	}
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
	}
}

// goAway closes every connection with 1001 and a retry hint below the
// window, as cloud.Service.Shutdown does.
func (s *rcFloor) goAway() {
	s.ws.mu.Lock()
	defer s.ws.mu.Unlock()
	window := max(1, int64(s.window/time.Millisecond))
	for c := range s.ws.conns {
		hint := cloudwire.CloseReason{Reason: "server going away", RetryMS: 1 + rand.Int64N(window)}
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(cloudwire.CloseGoingAway, hint.String()), time.Now().Add(time.Second))
		c.Close()
	}
}

// rcService is a cloud.Service running on the benchmark's engine, with a
// registry of its own for its metrics.
type rcService struct {
	svc  *cloud.Service
	reg  *prometheus.Registry
	stop func() error
}

// shed is how many handshakes the service has answered 503 (admission).
func (s *rcService) shed() (float64, error) {
	mfs, err := s.reg.Gather()
	if err != nil {
		return 0, err
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "gateway_cloud_handshakes_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "shed" {
					n += m.GetCounter().GetValue()
				}
			}
		}
	}
	return n, nil
}

func startRCService(ctx context.Context, eng *engine.Engine, pub ed25519.PublicKey, t rcTiming, handshakes int) (*rcService, error) {
	reg := prometheus.NewRegistry()
	svc, err := cloud.New(ctx, cloud.Config{JS: eng.JS, TokenKey: pub, ReconnectWindow: t.window, MaxHandshakes: handshakes, Registerer: reg})
	if err != nil {
		return nil, fmt.Errorf("start cloud service: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(runCtx) }()
	return &rcService{svc: svc, reg: reg, stop: func() error {
		sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer scancel()
		err := svc.Shutdown(sctx)
		cancel()
		return errors.Join(err, <-runErr)
	}}, nil
}

// rcWrite sends one message from reconnectSender to every user, with text
// from text, through the service at url.
func rcWrite(ctx context.Context, url string, key ed25519.PrivateKey, users []string, text func(string) string) error {
	tok, err := benchToken(key, reconnectSender)
	if err != nil {
		return err
	}
	c, err := cloud.Dial(ctx, cloud.ClientConfig{URL: url, Token: tok,
		Hello: cloudwire.Hello{Device: "writer", Platform: "bench", ClientVersion: version}})
	if err != nil {
		return fmt.Errorf("dial the writer: %w", err)
	}
	defer c.Close()
	go func() {
		for range c.Events() { // the sender's copy of every message
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(reconnectSends)
	for _, u := range users {
		g.Go(func() error {
			if _, err := c.Send(gctx, cloudwire.Send{To: u, Text: text(u)}); err != nil {
				return fmt.Errorf("send to %s: %w", u, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// loadAvg is the first three fields of /proc/loadavg, or "?" where there
// is none.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "?"
}

// rcBench is the state of one reconnect benchmark across its runs.
type rcBench struct {
	n, procs int
	t        rcTiming
	// handshakes is the services' cloud.Config.MaxHandshakes.
	handshakes int
	eng        *engine.Engine
	pub        ed25519.PublicKey
	key        ed25519.PrivateKey
	run        int
	downtime   time.Duration // of the last case run; the floor's is the same
	// shed is, per case run, the handshakes the restarted service shed.
	shed  []float64
	exact benchPair[[]float64]
}

// users is the user ids of one run, in the order the load processes
// number them.
func (b *rcBench) users(prefix string) []string {
	var us []string
	for p := range b.procs {
		for i := range share(b.n, b.procs, p) {
			us = append(us, rcUser(fmt.Sprintf("%s-%d", prefix, p), i))
		}
	}
	return us
}

// wait bounds a wait for all the clients of a run.
func (b *rcBench) wait() time.Duration {
	return reconnectWait + time.Duration(b.n)*reconnectWaitPer
}

// measure runs one restart: the clients connect to what front serves,
// prime (when set) gives them their first message, down stops the server,
// up serves again (after the downtime's writes) and returns the time it
// did; the figure is the resyncs per second from then to the last one.
func (b *rcBench) measure(ctx context.Context, front *rcFront, prefix string, prime, down func() error, up func() (time.Time, error), exact *[]float64) (float64, error) {
	load, err := startReconnectLoad(ctx, front.urls(), b.key, b.n, prefix, b.t)
	if err != nil {
		return 0, err
	}
	for _, step := range []struct {
		line, what string
		then       func() error
	}{{"connected", "connect", prime}, {"ready", "get their first message", nil}} {
		ok, err := load.waitLine(ctx, step.line, b.wait())
		if err == nil && !ok {
			err = fmt.Errorf("the clients did not %s within %s", step.what, b.wait())
		}
		if err == nil && step.then != nil {
			err = step.then()
		}
		if err != nil {
			return 0, errors.Join(err, load.stop())
		}
	}
	if err := down(); err != nil {
		return 0, errors.Join(err, load.stop())
	}
	start, err := up()
	if err != nil {
		return 0, errors.Join(err, load.stop())
	}
	if _, err := load.waitLine(ctx, "resynced", b.wait()); err != nil {
		return 0, errors.Join(err, load.stop())
	}
	reports, err := load.finish()
	if err != nil {
		return 0, err
	}
	var sum rcReport
	for _, r := range reports {
		sum.Exact += r.Exact
		sum.Resynced += r.Resynced
		sum.LastNS = max(sum.LastNS, r.LastNS)
		if r.Err != "" {
			return 0, fmt.Errorf("a client stopped: %s", r.Err)
		}
	}
	*exact = append(*exact, float64(sum.Exact)/float64(b.n))
	took := time.Duration(sum.LastNS - start.UnixNano())
	if sum.Resynced == 0 || took <= 0 {
		return 0, nil
	}
	return float64(sum.Resynced) / took.Seconds(), nil
}

// caseRun restarts the cloud service: the clients connect and get their
// first message live, then the service stops with "going away", a new
// service on the same engine writes one message per user while nothing
// listens, then listens again.
func (b *rcBench) caseRun(ctx context.Context) (float64, error) {
	b.run++
	prefix := fmt.Sprintf("rc%d", b.run)
	users := b.users(prefix)
	front := newFront(b.procs)
	s1, err := startRCService(ctx, b.eng, b.pub, b.t, b.handshakes)
	if err != nil {
		return 0, err
	}
	var s2 *rcService
	defer func() { // on an error: the run's own is the one to report
		front.stop()
		for _, s := range []*rcService{s1, s2} {
			if s != nil {
				s.stop() //nolint:errcheck
			}
		}
	}()
	if err := front.serve(s1.svc.Handler()); err != nil {
		return 0, err
	}
	// The first message reaches the clients live, once they are all
	// connected: their sessions open on empty inboxes and replay nothing.
	prime := func() error { return rcWrite(ctx, front.urls()[0], b.key, users, rcBefore) }
	var downAt time.Time
	down := func() error {
		downAt = time.Now()
		err := s1.stop()
		s1 = nil
		front.stop()
		return err
	}
	up := func() (time.Time, error) {
		var err error
		if s2, err = startRCService(ctx, b.eng, b.pub, b.t, b.handshakes); err != nil {
			return time.Time{}, err
		}
		private, err := startHTTPServer(s2.svc.Handler(), nil)
		if err != nil {
			return time.Time{}, err
		}
		err = rcWrite(ctx, private.url, b.key, users, rcMissed)
		private.stop()
		if err != nil {
			return time.Time{}, fmt.Errorf("write during the downtime: %w", err)
		}
		if err := front.serve(s2.svc.Handler()); err != nil {
			return time.Time{}, err
		}
		now := time.Now()
		b.downtime = now.Sub(downAt)
		return now, nil
	}
	v, err := b.measure(ctx, front, prefix, prime, down, up, &b.exact.Case)
	if err == nil {
		var shed float64
		shed, err = s2.shed()
		b.shed = append(b.shed, shed)
	}
	if err == nil {
		err = s2.stop()
		s2 = nil
	}
	return v, err
}

// floorRun does the same to the bare server, with the downtime of the
// case run before it.
func (b *rcBench) floorRun(ctx context.Context) (float64, error) {
	b.run++
	ws, err := startWSServer(serveRCFloor)
	if err != nil {
		return 0, err
	}
	srv := &rcFloor{ws: ws, window: b.t.window}
	front := newFront(b.procs)
	defer func() {
		front.stop()
		ws.stop()
	}()
	if err := front.serve(ws.srv.Handler); err != nil {
		return 0, err
	}
	down := func() error {
		front.stop()
		srv.goAway()
		return nil
	}
	up := func() (time.Time, error) {
		select {
		case <-time.After(b.downtime):
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
		if err := front.serve(ws.srv.Handler); err != nil {
			return time.Time{}, err
		}
		return time.Now(), nil
	}
	return b.measure(ctx, front, fmt.Sprintf("rf%d", b.run), nil, down, up, &b.exact.Floor)
}

func benchReconnect(ctx context.Context, o benchOptions) ([]benchRow, error) {
	b := &rcBench{n: o.N, t: rcTimingFull}
	if !o.NSet && !o.Smoke {
		b.n = reconnectN
	}
	if o.Smoke {
		b.t = rcTimingSmoke
	}
	b.procs = o.Procs
	if b.procs <= 0 {
		b.procs = max(2, (b.n+reconnectPerProc-1)/reconnectPerProc)
	}
	b.procs = min(b.procs, b.n)
	var err error
	if b.handshakes, err = rcMaxHandshakes(); err != nil {
		return nil, err
	}
	if b.pub, b.key, err = ed25519.GenerateKey(nil); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "ferry-bench-reconnect-*")
	if err != nil {
		return nil, err
	}
	if b.eng, err = engine.Start(engine.Config{DataDir: dir, Name: "ferry-bench"}); err != nil {
		return nil, errors.Join(fmt.Errorf("start engine: %w", err), os.RemoveAll(dir))
	}
	loadBefore := loadAvg()
	cs, fs, err := alternate(ctx, o.Runs, b.caseRun, b.floorRun)
	if err = errors.Join(err, b.eng.Close(), os.RemoveAll(dir)); err != nil {
		return nil, err
	}
	note := fmt.Sprintf("N=%d clients (cloud.Link) in %d load processes, each dialling 127.0.0.10-%d; "+
		"restart: Shutdown (going away, retry hint < %s), %s of downtime while a new cloud.Service on the same engine writes one message per user, then listen again; "+
		"timed from listening again to the last missed message received; backoff %s-%s with full jitter; admission: at most %d handshakes at once (%s overrides it), then a line of 8 times that waiting at most 5s, 503 beyond, median %.0f handshakes shed per resync run; "+
		"floor: the same clients, close and downtime against a bare gorilla/websocket server answering from memory; not pinned; load average %s at the start, %s at the end",
		b.n, b.procs, 9+b.procs, b.t.window, b.downtime.Round(time.Millisecond), b.t.backoffMin, b.t.backoffMax, b.handshakes, reconnectHandshakesEnv, median(b.shed), loadBefore, loadAvg())
	return []benchRow{
		newRow("reconnect", "resyncs", "cloud.Service restart, resync from cursors", "bare gorilla/websocket restart", "resyncs/s", cs, fs,
			&benchTarget{Of: "case", Op: ">=", Value: 1000}, note),
		newRow("reconnect", "exactly-once", "cloud.Service restart, resync from cursors", "bare gorilla/websocket restart", "share of clients", b.exact.Case, b.exact.Floor,
			&benchTarget{Of: "case", Op: ">=", Value: 1},
			"clients that got exactly their one missed message, the right one, after their first (duplicates are counted after cloud.Link's cursor filter, by message)"),
	}, nil
}
