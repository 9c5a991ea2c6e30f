package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// TestFaultReconnectStorm runs a cloud service (in process, embedded NATS)
// while a few thousand storm devices, spread over several 127.0.0.x source
// addresses, connect at once, hold a session briefly, drop it without a
// close frame and come back after a jittered exponential backoff, a few
// times each. Three
// pairs of healthy cloud users exchange messages all the while: none of
// their sessions may be dropped, and the checker must pass for them.
//
// Short tier: 2,000 storm devices (about 4,000 sockets in this process,
// well under the 20,000 open files limit). Long tier: 8,000.
func TestFaultReconnectStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("a few thousand sockets; skipped with -short")
	}
	dir := t.TempDir()
	cfg := agentPorts(t)
	cfg.Roles = []string{roleCloud}
	ta := startAgent(t, dir, cfg)
	url := ta.a.cloudURL()

	devices, users, cycles, n, pace := 2000, 40, 2, 40, 50*time.Millisecond
	if longFaults() {
		devices, users, cycles, n, pace = 8000, 100, 10, 600, 30*time.Millisecond
	}
	sources := 8 // 127.0.0.2 … 127.0.0.9: ephemeral ports and TIME_WAIT spread over them

	// Healthy pairs.
	ck := newChecker()
	type pair struct{ a, b *cloudUser }
	var pairs []pair
	for i := range 3 {
		a, b := fmt.Sprintf("healthy%da", i), fmt.Sprintf("healthy%db", i)
		setPhases(t, ta.admin(), a, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
		setPhases(t, ta.admin(), b, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
		pairs = append(pairs, pair{newCloudUser(t, ta, url, a, b, ck), newCloudUser(t, ta, url, b, a, ck)})
	}

	// Storm users: each has devices/users devices.
	tokens := make([]string, users)
	for i := range users {
		u := fmt.Sprintf("storm%d", i)
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
		tokens[i] = userToken(t, ta, u)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	stormCtx, stopStorm := context.WithCancel(ctx)
	var st stormStats
	var storm sync.WaitGroup
	for i := range devices {
		local := net.IPv4(127, 0, 0, byte(2+i%sources))
		storm.Go(func() {
			stormDevice(stormCtx, url, tokens[i%users], fmt.Sprintf("storm-d%d", i), local, cycles, &st)
		})
	}

	ck.plan(2 * len(pairs) * n)
	errs := make([]error, 2*len(pairs))
	var healthy sync.WaitGroup
	for i, p := range pairs {
		healthy.Go(func() { errs[2*i] = sendCloud(ctx, ck, p.a, p.b.user, n, pace) })
		healthy.Go(func() { errs[2*i+1] = sendCloud(ctx, ck, p.b, p.a.user, n, pace) })
	}
	healthy.Wait()
	storm.Wait()
	stopStorm()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("%v\n%s storm: %s", err, ck, st.String())
		}
	}
	t.Logf("storm of %d devices over %d source addresses: %s", devices, sources, st.String())
	tally("load_storm_sessions", int(st.sessions.Load()))
	tally("load_storm_shed", int(st.refused.Load()))
	ck.verify(t, time.Minute, 500*time.Millisecond, func() string { return "\nstorm: " + st.String() })
	for _, p := range pairs {
		for _, u := range []*cloudUser{p.a, p.b} {
			u.mu.Lock()
			if u.reconnects != 0 {
				t.Errorf("healthy session of %s was dropped %d times during the storm", u.user, u.reconnects)
			}
			u.mu.Unlock()
		}
	}
	tallyFault(t, "storm", 1)
}

// stormStats counts what the storm devices saw.
type stormStats struct {
	sessions atomic.Int64 // welcomes received
	refused  atomic.Int64 // handshakes answered with an HTTP status, an error frame or a close
	failed   atomic.Int64 // dials that got no answer (reset, timeout)
}

func (s *stormStats) String() string {
	return fmt.Sprintf("%d sessions opened, %d refused (shed), %d failed dials", s.sessions.Load(), s.refused.Load(), s.failed.Load())
}

// stormDevice connects from local as device of the token's user, holds the
// session for up to a second, drops it without a close frame, and
// reconnects after a jittered backoff (full jitter from 200 ms, doubling on
// failure up to 5 s), until it has had cycles sessions or ctx ends.
func stormDevice(ctx context.Context, url, token, device string, local net.IP, cycles int, st *stormStats) {
	d := websocket.Dialer{
		HandshakeTimeout: 10 * time.Second,
		Subprotocols:     []string{cloudwire.Subprotocol},
		NetDialContext:   (&net.Dialer{LocalAddr: &net.TCPAddr{IP: local}}).DialContext,
		ReadBufferSize:   1 << 10,
		WriteBufferSize:  1 << 10,
	}
	header := http.Header{"Authorization": {"Bearer " + token}}
	hello, err := cloudwire.Encode(cloudwire.Hello{Device: device, Platform: "web", ClientVersion: "1.0.0"})
	if err != nil {
		panic(err) // a constant frame
	}
	const base = 200 * time.Millisecond
	backoff := base
	for done := 0; done < cycles && ctx.Err() == nil; {
		if stormSession(ctx, &d, url, header, hello, st) {
			done++
			backoff = base
		} else if backoff < 5*time.Second {
			backoff *= 2
		}
		if !sleepCtx(ctx, time.Duration(rand.Int64N(int64(backoff)))+time.Millisecond) {
			return
		}
	}
}

// stormSession is one connect, hold and drop; it reports whether the
// service welcomed the session.
func stormSession(ctx context.Context, d *websocket.Dialer, url string, header http.Header, hello []byte, st *stormStats) bool {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, resp, err := d.DialContext(dctx, url, header)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
			st.refused.Add(1)
		} else if ctx.Err() == nil {
			st.failed.Add(1)
		}
		return false
	}
	defer conn.Close() // a drop: no close frame
	deadline := time.Now().Add(10 * time.Second)
	conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.TextMessage, hello); err != nil {
		st.failed.Add(1)
		return false
	}
	conn.SetReadDeadline(deadline)
	_, msg, err := conn.ReadMessage()
	if err != nil {
		if _, ok := err.(*websocket.CloseError); ok {
			st.refused.Add(1)
		} else if ctx.Err() == nil {
			st.failed.Add(1)
		}
		return false
	}
	if f, err := cloudwire.Decode(msg); err != nil {
		st.failed.Add(1)
		return false
	} else if _, ok := f.(cloudwire.Welcome); !ok {
		st.refused.Add(1)
		return false
	}
	st.sessions.Add(1)
	// Hold the session, reading (and so answering pings) until dropped.
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	sleepCtx(ctx, time.Duration(rand.IntN(1000))*time.Millisecond)
	return true
}
