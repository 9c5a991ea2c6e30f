package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// longFaults reports whether the long tier of the fault suite runs
// (FERRY_FAULTS=long): more messages and more faults per test.
func longFaults() bool { return os.Getenv("FERRY_FAULTS") == "long" }

// checker compares, per direction ("alice→bob"), the ids the sender had
// acknowledged, in acknowledgement order, with the ids the recipient's
// device received. Every fault test uses it: zero lost acknowledged
// messages, zero duplicates a user can see, order kept per conversation.
type checker struct {
	mu      sync.Mutex
	planned int                        // messages the senders mean to send, all flows
	acked   map[string][]string        // flow → ids acknowledged to the sender
	got     map[string][]string        // flow → ids received (pushed by a device)
	pulled  map[string]func() []string // flow → ids received (read from a device)
}

func newChecker() *checker {
	return &checker{acked: map[string][]string{}, got: map[string][]string{}, pulled: map[string]func() []string{}}
}

func flowName(from, to string) string { return from + "→" + to }

func (c *checker) plan(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.planned += n
}

func (c *checker) ack(flow, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acked[flow] = append(c.acked[flow], id)
}

func (c *checker) receive(flow, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got[flow] = append(c.got[flow], id)
}

// pullFrom makes the checker read flow's received ids from a legacy phone,
// which keeps its own record of what reached it.
func (c *checker) pullFrom(flow string, p *legacyPhone) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pulled[flow] = func() []string {
		p.mu.Lock()
		defer p.mu.Unlock()
		ids := make([]string, 0, len(p.got))
		for _, m := range p.got {
			ids = append(ids, m.ID)
		}
		return ids
	}
}

// snapshot returns, per flow, what was acknowledged and what was received.
func (c *checker) snapshot() (acked, got map[string][]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acked, got = map[string][]string{}, map[string][]string{}
	for f, ids := range c.acked {
		acked[f] = slices.Clone(ids)
	}
	for f, ids := range c.got {
		got[f] = slices.Clone(ids)
	}
	for f, pull := range c.pulled {
		got[f] = pull()
	}
	return acked, got
}

// received is the number of messages received over all flows.
func (c *checker) received() int {
	_, got := c.snapshot()
	n := 0
	for _, ids := range got {
		n += len(ids)
	}
	return n
}

// pending reports whether some planned message has not been received yet.
func (c *checker) pending() bool {
	c.mu.Lock()
	planned := c.planned
	c.mu.Unlock()
	return c.received() < planned
}

// caughtUp reports whether every acknowledged message count has been
// matched by received ones in every flow.
func (c *checker) caughtUp() bool {
	acked, got := c.snapshot()
	for f, ids := range acked {
		if len(got[f]) < len(ids) {
			return false
		}
	}
	return true
}

func (c *checker) String() string {
	acked, got := c.snapshot()
	var b strings.Builder
	for _, f := range slices.Sorted(mapsKeys(acked)) {
		fmt.Fprintf(&b, "%s: %d acknowledged, %d received; ", f, len(acked[f]), len(got[f]))
	}
	return b.String()
}

func mapsKeys(m map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// verify waits up to d for every acknowledged message to arrive, lets
// settle pass so that late duplicates show, and then requires each flow's
// received ids to equal its acknowledged ids exactly: nothing lost, nothing
// doubled, nothing reordered. why adds context (a process's log) to a failure.
func (c *checker) verify(t *testing.T, d, settle time.Duration, why func() string) {
	t.Helper()
	waitUntil(t, d, c.caughtUp, func() string { return c.String() + why() })
	time.Sleep(settle)
	acked, got := c.snapshot()
	for _, f := range slices.Sorted(mapsKeys(acked)) {
		want, have := acked[f], got[f]
		seen := map[string]int{}
		for _, id := range have {
			seen[id]++
		}
		lost, dups := 0, 0
		for _, id := range want {
			if seen[id] == 0 {
				lost++
			}
		}
		for _, n := range seen {
			dups += n - 1
		}
		t.Logf("checker %s: %d acknowledged, %d received, %d lost, %d duplicated", f, len(want), len(have), lost, dups)
		tally("messages_acknowledged", len(want))
		tally("messages_lost", lost)
		tally("messages_duplicated", dups)
		if !slices.Equal(have, want) {
			t.Errorf("%s: received differs from acknowledged (%d lost, %d duplicated, or reordered):\ngot  %v\nwant %v%s", f, lost, dups, have, want, why())
		}
	}
}

// sendLegacy sends n messages from p (user from) to to, each retried with
// the same id until the bridge acknowledges it as delivered, pace apart.
func sendLegacy(ctx context.Context, ck *checker, p *legacyPhone, from, to string, n int, pace time.Duration) error {
	flow := flowName(from, to)
	for i := range n {
		msg := legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: from, To: to, Text: fmt.Sprintf("%s%d", from, i), SentAt: time.Now().UTC()}
		for {
			actx, cancel := context.WithTimeout(ctx, 3*time.Second)
			ack, err := p.dev.SendMessage(actx, msg)
			cancel()
			if err == nil && ack.Status == legacywire.StatusDelivered {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s's message %d never acknowledged: %v %+v", from, i, err, ack)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ck.ack(flow, msg.ID)
		time.Sleep(pace)
	}
	return nil
}

// sendCloud sends n messages from u to to, each retried with the same
// message id (the service deduplicates it) across reconnects until acked.
func sendCloud(ctx context.Context, ck *checker, u *cloudUser, to string, n int, pace time.Duration) error {
	flow := flowName(u.user, to)
	for i := range n {
		id := uuid.Must(uuid.NewV7()).String()
		for {
			var err error
			if c := u.client(); c != nil {
				actx, cancel := context.WithTimeout(ctx, 3*time.Second)
				_, err = c.Send(actx, cloudwire.Send{To: to, MsgID: id, Text: fmt.Sprintf("%s%d", u.user, i)})
				cancel()
				if err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				return fmt.Errorf("%s's message %d never acknowledged: %v", u.user, i, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ck.ack(flow, id)
		time.Sleep(pace)
	}
	return nil
}

// cloudUser is a cloud device that stays connected: when its session ends
// (the service restarted, the link broke) it dials again with its cursor,
// as a real client does, and records every message from peer it receives.
type cloudUser struct {
	user, peer string
	urls       []string // dialled in turn: the next one when a dial fails
	token      string
	ck         *checker

	mu         sync.Mutex
	c          *cloud.Client
	reconnects int
}

// newCloudUser connects user's device to url and keeps it connected until
// the test ends. It returns once the first session has synced.
func newCloudUser(t *testing.T, ta *testAgent, url, user, peer string, ck *checker) *cloudUser {
	t.Helper()
	return startCloudUser(t, []string{url}, userToken(t, ta, user), user, peer, ck)
}

// startCloudUser is newCloudUser for a device that fails over between the
// cloud services at urls, with a token obtained elsewhere.
func startCloudUser(t *testing.T, urls []string, token, user, peer string, ck *checker) *cloudUser {
	t.Helper()
	u := &cloudUser{user: user, peer: peer, urls: urls, token: token, ck: ck}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	synced := make(chan struct{})
	go func() {
		defer close(done)
		u.run(ctx, synced)
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-synced:
	case <-time.After(within):
		t.Fatalf("%s's device never connected", user)
	}
	return u
}

func (u *cloudUser) client() *cloud.Client {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.c
}

func (u *cloudUser) run(ctx context.Context, synced chan struct{}) {
	var cursor uint64
	flow := flowName(u.peer, u.user)
	first := true
	for next := 0; ctx.Err() == nil; {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := cloud.Dial(dctx, cloud.ClientConfig{
			URL: u.urls[next%len(u.urls)], Token: u.token,
			Hello: cloudwire.Hello{Device: u.user + "-device", Platform: "web", ClientVersion: "1.0.0", Cursor: cursor},
		})
		cancel()
		if err != nil {
			next++
			time.Sleep(100 * time.Millisecond)
			continue
		}
		u.mu.Lock()
		u.c = c
		if !first {
			u.reconnects++
		}
		u.mu.Unlock()
		if first {
			select {
			case <-c.Synced():
			case <-ctx.Done():
			}
			close(synced)
			first = false
		}
	read:
		for {
			select {
			case ev, ok := <-c.Events():
				if !ok {
					break read
				}
				if ev.Kind == cloudwire.KindMsg && ev.From == u.peer {
					u.ck.receive(flow, ev.MsgID)
				}
			case <-ctx.Done():
				break read
			}
		}
		u.mu.Lock()
		u.c = nil
		u.mu.Unlock()
		c.Close()
		cursor = c.Cursor()
	}
}

// exchange streams n messages each way between alice (legacy) and bob
// (cloud), pace apart, while faults runs; faults gets a context that ends
// when both streams are done. It then verifies with the checker.
func exchange(t *testing.T, ck *checker, alice *legacyPhone, bob *cloudUser, n int, pace time.Duration, faults func(ctx context.Context), why func() string) {
	t.Helper()
	ck.plan(2 * n)
	ck.pullFrom(flowName("bob", "alice"), alice)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = sendLegacy(ctx, ck, alice, "alice", "bob", n, pace) })
	wg.Go(func() { errs[1] = sendCloud(ctx, ck, bob, "alice", n, pace) })
	sendersDone := make(chan struct{})
	go func() { wg.Wait(); close(sendersDone) }()
	fctx, fcancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sendersDone:
		case <-ctx.Done():
		}
		fcancel()
	}()
	faults(fctx)
	<-sendersDone
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%v\n%s%s", err, ck, why())
	}
	ck.verify(t, time.Minute, 500*time.Millisecond, why)
	bob.mu.Lock()
	t.Logf("bob's device reconnected %d times", bob.reconnects)
	tally("cloud_reconnects", bob.reconnects)
	bob.mu.Unlock()
	if !t.Failed() {
		tally("fault_scenarios", 1)
	}
}

// sleepCtx sleeps for d or until ctx ends, and reports whether it slept.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}
