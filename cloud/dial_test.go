package cloud

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestDialCancelledWhileWaitingForWelcome: a server that upgrades and never
// sends welcome does not hold Dial once its context is cancelled.
func TestDialCancelledWhileWaitingForWelcome(t *testing.T) {
	release := make(chan struct{})
	up := websocket.Upgrader{Subprotocols: []string{cloudwire.Subprotocol}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		<-release // never writes
	}))
	defer srv.Close()
	defer close(release)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(100*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, ClientConfig{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Hello: cloudwire.Hello{Device: "d"}})
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Dial = nil error, want one: no welcome came")
		}
	case <-time.After(dialTimeout / 2): // generous, yet before Dial's own timeout
		t.Fatal("Dial did not return after its context was cancelled")
	}
}

// TestShutdownSubMillisecondReconnectWindow: a positive ReconnectWindow under
// a millisecond does not panic Shutdown.
func TestShutdownSubMillisecondReconnectWindow(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ReconnectWindow = 500 * time.Microsecond })
	a := f.dial(t, "alice", "phone", 0)
	waitSynced(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := f.svc.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
