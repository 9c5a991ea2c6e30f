package cloud

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestPuppets: a bridge session opens puppets for users ActFor allows and
// is refused (forbidden) for others; the node counts the open ones, a
// close and the session's end forget them; a user session may not act; an
// open puppet does not exempt later requests from ActFor.
func TestPuppets(t *testing.T) {
	var mu sync.Mutex
	moved := map[string]bool{"mallory": true}
	f := newFixture(t, func(c *Config) {
		c.ActFor = func(_ context.Context, user string) error {
			mu.Lock()
			defer mu.Unlock()
			if moved[user] {
				return errors.New(user + " is a cloud user")
			}
			return nil
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	br := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	collect(br)
	gauge := func() float64 { return testutil.ToFloat64(f.svc.m.puppets) }

	for i, u := range []string{"carol", "dave", "carol"} {
		a, err := br.Act(ctx, cloudwire.ActOpen, u)
		if err != nil {
			t.Fatalf("open %s: %v", u, err)
		}
		if want := min(i+1, 2); a.Puppets != want || a.As != u || a.Op != cloudwire.ActOpen {
			t.Fatalf("open %s: %+v, want %d puppets", u, a, want)
		}
	}
	if gauge() != 2 {
		t.Fatalf("gauge = %v, want 2", gauge())
	}
	_, err := br.Act(ctx, cloudwire.ActOpen, "mallory")
	serverError(t, err, cloudwire.CodeForbidden)
	if gauge() != 2 {
		t.Fatalf("a refused open counted: gauge = %v", gauge())
	}

	// carol moves after her puppet opened: her next send is refused.
	mu.Lock()
	moved["carol"] = true
	mu.Unlock()
	_, err = br.Send(ctx, cloudwire.Send{As: "carol", To: "alice", MsgID: msgID(t), Text: "after the move"})
	serverError(t, err, cloudwire.CodeForbidden)
	if _, err := br.Send(ctx, cloudwire.Send{As: "dave", To: "alice", MsgID: msgID(t), Text: "hi"}); err != nil {
		t.Fatalf("dave's send: %v", err)
	}

	if a, err := br.Act(ctx, cloudwire.ActClose, "dave"); err != nil || a.Puppets != 1 {
		t.Fatalf("close dave: %+v, %v", a, err)
	}
	if gauge() != 1 {
		t.Fatalf("after a close: gauge = %v, want 1", gauge())
	}
	_, err = alice.Act(ctx, cloudwire.ActOpen, "carol")
	serverError(t, err, cloudwire.CodeForbidden)

	br.Close()
	waitUntilTrue(t, func() bool { return gauge() == 0 })
}

// TestNoFeedSession: a request-only bridge session (hello no_feed) gets no
// inbox event, neither replayed nor live, and still serves requests; a
// feed session beside it gets each event once.
func TestNoFeedSession(t *testing.T) {
	f := newFixture(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	send(t, alice, "bob", "before")

	c, err := Dial(ctx, ClientConfig{
		URL: f.url, Token: token(t, "bridge", cloudwire.RoleBridge),
		Hello: cloudwire.Hello{Device: "bridge-req", Platform: "bridge", NoFeed: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Welcome().Head != 0 {
		t.Fatalf("no-feed welcome head = %d, want the hello's cursor 0", c.Welcome().Head)
	}
	waitSynced(t, c)
	reqOnly := collect(c)
	feed := collect(f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-feed", 0))

	if _, err := c.Send(ctx, cloudwire.Send{As: "carol", To: "alice", MsgID: msgID(t), Text: "from the overlay"}); err != nil {
		t.Fatalf("send on the request-only session: %v", err)
	}
	send(t, alice, "bob", "after")
	// before (alice's and bob's inbox), carol's message (carol, alice),
	// after (alice, bob): six events on the feed session.
	feed.waitN(t, 6)
	settle()
	if evs := reqOnly.events(); len(evs) != 0 {
		t.Fatalf("request-only session got %d events: %+v", len(evs), evs)
	}
}

// waitUntilTrue polls cond for up to 10 s.
func waitUntilTrue(tb testing.TB, cond func() bool) {
	tb.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatal("condition not met in 10 s")
}
