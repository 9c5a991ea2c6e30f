package cloud

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// runBridgeLink starts a Link with a bridge token on f's service.
func runBridgeLink(tb testing.TB, f *fixture) *Link {
	tb.Helper()
	l, _ := runLink(tb, f.url, "bridge", "bridge-dev", func(c *LinkConfig) {
		c.Client.Token = token(tb, "bridge", cloudwire.RoleBridge)
	})
	drainLink(l)
	return l
}

// TestBridgeRequestsOrderedPerUser: a bridge pipelines many users' sends
// on one session without waiting for acks; the acks come back in any
// order across users, and each user's messages are stored in the order
// they were sent (the ack of a user's k-th message has seq k). Then many
// users send at once through a Link, whose acks are matched to requests.
func TestBridgeRequestsOrderedPerUser(t *testing.T) {
	f := newFixture(t, nil)
	const users, perUser = 20, 30

	conn := rawConnRole(t, f.node, "bridge", cloudwire.RoleBridge)
	writeErr := make(chan error, 1)
	go func() {
		for k := range perUser {
			for u := range users {
				b, err := cloudwire.Encode(cloudwire.Send{
					Ref: fmt.Sprintf("%d-%d", u, k), As: fmt.Sprintf("pu%d", u), To: fmt.Sprintf("pr%d", u),
					MsgID: msgID(t), Text: strconv.Itoa(k),
				})
				if err == nil {
					err = conn.WriteMessage(websocket.TextMessage, b)
				}
				if err != nil {
					writeErr <- err
					return
				}
			}
		}
		writeErr <- nil
	}()
	inOrder := true // acks in exactly the order sent
	for i := range users * perUser {
		ack, ok := readFrame(t, conn).(cloudwire.Ack)
		if !ok {
			t.Fatalf("answer %d is not an ack", i)
		}
		var u, k int
		if _, err := fmt.Sscanf(ack.Ref, "%d-%d", &u, &k); err != nil {
			t.Fatalf("ref %q: %v", ack.Ref, err)
		}
		if ack.Seq != uint64(k+1) {
			t.Fatalf("user %d message %d stored at seq %d, want %d", u, k, ack.Seq, k+1)
		}
		inOrder = inOrder && ack.Ref == fmt.Sprintf("%d-%d", i%users, i/users)
	}
	if err := <-writeErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("acks in send order across users: %v", inOrder)

	// Through a Link: every user sends its messages one after another,
	// all users at once.
	l := runBridgeLink(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for _, err := range inParallel(users, func(u int) error {
		for k := range perUser {
			id := msgID(t)
			ack, err := l.Send(ctx, cloudwire.Send{As: fmt.Sprintf("lu%d", u), To: fmt.Sprintf("lr%d", u), MsgID: id, Text: strconv.Itoa(k)})
			if err == nil && (ack.MsgID != id || ack.Seq != uint64(k+1)) {
				err = fmt.Errorf("user %d message %d: ack %s seq %d, want %s seq %d", u, k, ack.MsgID, ack.Seq, id, k+1)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}) {
		t.Error(err)
	}
}

// inParallel runs fn(0..n-1) on n goroutines and returns their errors once
// all have returned.
func inParallel(n int, fn func(i int) error) []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return slices.DeleteFunc(errs, func(err error) bool { return err == nil })
}

// TestBridgeSlowUserDoesNotBlockOthers: while one user's send is held in
// the store path (ActFor blocks), another user's send on the same bridge
// session is stored and acknowledged; the held user's next send waits
// behind its first and is stored after it.
func TestBridgeSlowUserDoesNotBlockOthers(t *testing.T) {
	held := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	f := newFixture(t, func(c *Config) {
		c.ActFor = func(ctx context.Context, user string) error {
			if user == "slow" {
				once.Do(func() { close(held) })
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
	})
	l := runBridgeLink(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	type answer struct {
		ack cloudwire.Ack
		err error
	}
	slow := func(text string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			ack, err := l.Send(ctx, cloudwire.Send{As: "slow", To: "slow-peer", Text: text})
			ch <- answer{ack, err}
		}()
		return ch
	}
	first := slow("first")
	select {
	case <-held:
	case <-ctx.Done():
		t.Fatal("the slow send never reached the store path")
	}
	if _, err := l.Send(ctx, cloudwire.Send{As: "fast", To: "fast-peer", Text: "hi"}); err != nil {
		t.Fatalf("fast send: %v", err)
	}
	select {
	case a := <-first:
		t.Fatalf("the slow send finished while held: %+v", a)
	default:
	}
	second := slow("second")
	close(release)
	for i, ch := range []<-chan answer{first, second} {
		a := <-ch
		if a.err != nil {
			t.Fatalf("slow send %d: %v", i+1, a.err)
		}
		if a.ack.Seq != uint64(i+1) {
			t.Errorf("slow send %d stored at seq %d, want %d", i+1, a.ack.Seq, i+1)
		}
	}
}

// TestBridgeInFlightBound: with every request held in the store path, a
// bridge session takes exactly maxBridgeInFlight requests of different
// users and reads no more until one is answered; then all complete.
func TestBridgeInFlightBound(t *testing.T) {
	const users = maxBridgeInFlight + 36
	gate := make(chan struct{})
	var cur, peak, entered atomic.Int64
	reached := make(chan struct{})
	f := newFixture(t, func(c *Config) {
		c.ActFor = func(ctx context.Context, user string) error {
			n := cur.Add(1)
			defer cur.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			if entered.Add(1) == maxBridgeInFlight {
				close(reached)
			}
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	l := runBridgeLink(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	errs := make(chan []error, 1)
	go func() {
		errs <- inParallel(users, func(u int) error {
			_, err := l.Send(ctx, cloudwire.Send{As: fmt.Sprintf("bu%d", u), To: "peer", Text: "x"})
			return err
		})
	}()
	select {
	case <-reached:
	case <-ctx.Done():
		t.Fatalf("only %d requests reached the store path", entered.Load())
	}
	// Give a reader that ignored the bound the chance to show it; this
	// wait asserts nothing about speed.
	time.Sleep(200 * time.Millisecond)
	if n := entered.Load(); n != maxBridgeInFlight {
		t.Errorf("%d requests in flight while all were held, want %d", n, maxBridgeInFlight)
	}
	close(gate)
	for _, err := range <-errs {
		t.Error(err)
	}
	if p := peak.Load(); p > maxBridgeInFlight {
		t.Errorf("peak in flight %d, above the bound %d", p, maxBridgeInFlight)
	}
	if n := entered.Load(); n != users {
		t.Errorf("%d requests handled, want %d", n, users)
	}
}

// TestDispatcherReportsQueueWait: a request read while its user's earlier
// one is being handled reports the time it waited behind it; another
// user's request, and a user's first, wait for nothing.
func TestDispatcherReportsQueueWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var mu sync.Mutex
		var waits []time.Duration
		handle := func(f cloudwire.Frame) {
			if f.(cloudwire.Send).Text == "slow" {
				<-release
			}
		}
		waited := func(d time.Duration) {
			mu.Lock()
			waits = append(waits, d)
			mu.Unlock()
		}
		never := make(chan struct{})
		d := newDispatcher(handle, waited, never, never, 8)
		for _, s := range []cloudwire.Send{{As: "a", Text: "slow"}, {As: "a", Text: "next"}, {As: "b", Text: "other"}} {
			if !d.dispatch(s.As, s) {
				t.Fatal("dispatch refused")
			}
		}
		time.Sleep(10 * time.Millisecond)
		close(release)
		d.wait()
		slices.Sort(waits)
		want := []time.Duration{0, 0, 10 * time.Millisecond}
		if !slices.Equal(waits, want) {
			t.Fatalf("waits %v, want %v", waits, want)
		}
	})
}
