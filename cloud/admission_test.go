package cloud

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestAdmissionShedsHandshakeFlood: with MaxHandshakes sessions stuck in
// their set-up (an admission check that does not answer), a flood of
// further handshakes is answered 503 with a Retry-After before any
// upgrade, counted as shed; the sessions open before keep working; once
// the stuck ones finish, a Link that was shed gets in after the
// Retry-After.
func TestAdmissionShedsHandshakeFlood(t *testing.T) {
	const slots, flood = 4, 64
	hold := make(chan struct{})
	var held atomic.Int64
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *Config) {
		c.MaxHandshakes = slots
		c.ShedRetry = time.Second
		c.Registerer = reg
		c.Admit = func(ctx context.Context, user string) error {
			if user != "slow" {
				return nil
			}
			held.Add(1)
			select {
			case <-hold:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold) }) }
	t.Cleanup(release)

	// Healthy sessions, open and synced before the flood.
	alice := f.dial(t, "alice", "a1", 0)
	bob := f.dial(t, "bob", "b1", 0)
	waitSynced(t, alice)
	waitSynced(t, bob)
	bobEvs := collect(bob)
	collect(alice)

	// Fill every set-up slot with sessions stuck in admission.
	d := websocket.Dialer{Subprotocols: []string{cloudwire.Subprotocol}}
	hello, _ := cloudwire.Encode(cloudwire.Hello{Device: "stuck"})
	for range slots {
		conn, _, err := d.Dial(f.url, http.Header{"Authorization": {"Bearer " + token(t, "slow", cloudwire.RoleUser)}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if err := conn.WriteMessage(websocket.TextMessage, hello); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(waitFor)
	for held.Load() < slots {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sessions reached admission", held.Load(), slots)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// The flood: every handshake is shed before the upgrade.
	var wg sync.WaitGroup
	var shed, other atomic.Int64
	for range flood {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			c, err := Dial(ctx, ClientConfig{URL: f.url, Token: token(t, "carol", cloudwire.RoleUser), Hello: cloudwire.Hello{Device: "c1"}})
			var de *DialError
			switch {
			case errors.As(err, &de) && de.StatusCode == http.StatusServiceUnavailable && de.RetryAfter == time.Second:
				shed.Add(1)
			default:
				if c != nil {
					c.Close()
				}
				other.Add(1)
				t.Errorf("flood dial: %v", err)
			}
		})
	}
	// Meanwhile the open sessions keep working.
	ack := send(t, alice, "bob", "during the flood")
	wg.Wait()
	if shed.Load() != flood {
		t.Fatalf("%d of %d flood handshakes shed (%d otherwise)", shed.Load(), flood, other.Load())
	}
	evs := bobEvs.waitN(t, 1)
	if evs[len(evs)-1].MsgID != ack.MsgID {
		t.Fatalf("bob got %v, want %s", msgIDs(evs), ack.MsgID)
	}
	if got := testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")); got != flood {
		t.Errorf("gateway_cloud_handshakes_total{result=shed} = %v, want %d", got, flood)
	}
	if got := testutil.ToFloat64(f.svc.m.settingUp); got != slots {
		t.Errorf("gateway_cloud_handshakes_in_flight = %v, want %d", got, slots)
	}

	// A Link shed now comes back after the Retry-After, once the stuck
	// sessions are through.
	connected := make(chan struct{}, 1)
	l, _ := runLink(t, f.url, "carol", "c2", func(c *LinkConfig) {
		c.OnConnect = func(cloudwire.Welcome) { connected <- struct{}{} }
	})
	drainLink(l)
	for testutil.ToFloat64(f.svc.m.handshakes.WithLabelValues("shed")) == flood {
		if time.Now().After(deadline.Add(waitFor)) {
			t.Fatal("the link was never shed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	release()
	select {
	case <-connected:
	case <-time.After(waitFor):
		t.Fatal("the shed link never connected")
	}
	if alice.Err() != nil || bob.Err() != nil {
		t.Errorf("healthy sessions dropped: %v, %v", alice.Err(), bob.Err())
	}
}
