package main

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy forwards TCP connections from a loopback listener to target.
// Cut makes it stop delivering bytes in both directions without closing
// anything: to both ends this looks like a link whose packets are dropped
// (nothing arrives, no FIN, no RST). Bytes already read are held, as TCP
// would retransmit them, so a connection that outlives the cut carries on
// intact after Heal. A connection accepted during a cut reaches target only
// after Heal.
type faultProxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cut    bool
	delay  time.Duration // added before each chunk is forwarded (a slow link)
	healed chan struct{} // closed while the link is up
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// newFaultProxy starts a proxy to target and closes it when the test ends.
func newFaultProxy(tb testing.TB, target string) *faultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, healed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.healed)
	p.wg.Go(p.accept)
	tb.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// Cut stops all traffic through the proxy until Heal.
func (p *faultProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		p.cut = true
		p.healed = make(chan struct{})
	}
}

// Heal lets traffic through again, held bytes first.
func (p *faultProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		p.cut = false
		close(p.healed)
	}
}

// SetDelay makes the proxy hold each chunk for d before forwarding it, in
// both directions: a slow link or a slow peer behind it. Zero removes it.
func (p *faultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

func (p *faultProxy) latency() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delay
}

// gate returns a channel that is closed while the link is up.
func (p *faultProxy) gate() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.healed
}

func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	if p.cut {
		p.cut = false
		close(p.healed)
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *faultProxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(down) {
			return
		}
		p.wg.Go(func() {
			<-p.gate() // a cut link answers no handshake either
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				down.Close()
				return
			}
			if !p.track(up) {
				down.Close()
				return
			}
			var wg sync.WaitGroup
			wg.Go(func() { p.pump(up, down) })
			wg.Go(func() { p.pump(down, up) })
			wg.Wait()
			up.Close()
			down.Close()
		})
	}
}

// pump copies src to dst, holding each chunk while the link is cut.
func (p *faultProxy) pump(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := p.latency(); d > 0 {
				time.Sleep(d)
			}
			<-p.gate()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
					return
				}
			}
			dst.Close()
			return
		}
	}
}

// TestFaultProxy checks the proxy itself: bytes flow, a cut delivers
// nothing and closes nothing, and a heal delivers what was held, in order.
func TestFaultProxy(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	p := newFaultProxy(t, echo.Addr().String())
	c, err := net.Dial("tcp", p.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip := func(msg string) string {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		return string(got)
	}
	if got := roundTrip("before"); got != "before" {
		t.Fatalf("got %q", got)
	}
	p.Cut()
	if _, err := c.Write([]byte("during")); err != nil {
		t.Fatal(err)
	}
	readDone := make(chan string, 1)
	go func() {
		got := make([]byte, len("during"))
		_, err := io.ReadFull(c, got)
		if err != nil {
			readDone <- "error: " + err.Error()
			return
		}
		readDone <- string(got)
	}()
	select {
	case got := <-readDone:
		t.Fatalf("a cut link delivered %q", got)
	case <-time.After(300 * time.Millisecond):
	}
	p.Heal()
	if got := <-readDone; got != "during" {
		t.Fatalf("after heal got %q, want the held bytes", got)
	}
	if got := roundTrip("after"); got != "after" {
		t.Fatalf("got %q", got)
	}
	p.SetDelay(20 * time.Millisecond)
	if got := roundTrip("slow"); got != "slow" {
		t.Fatalf("through a slow link got %q", got)
	}
}
