package bridge

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

var puppetTestKey = ed25519.NewKeyFromSeed([]byte("ferry bridge puppet test key...."))

// puppetCloud is a real cloud service on loopback whose act-for rule
// refuses the users in moved.
type puppetCloud struct {
	url string
	mu  sync.Mutex
	out map[string]bool
}

func (pc *puppetCloud) move(user string, out bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.out[user] = out
}

func startPuppetCloud(t *testing.T) *puppetCloud {
	t.Helper()
	eng := enginetest.Start(t)
	pc := &puppetCloud{out: map[string]bool{}}
	svc, err := cloud.New(context.Background(), cloud.Config{
		JS: eng.JS, TokenKey: puppetTestKey.Public().(ed25519.PublicKey),
		ActFor: func(_ context.Context, user string) error {
			pc.mu.Lock()
			defer pc.mu.Unlock()
			if pc.out[user] {
				return fmt.Errorf("%s is a cloud user", user)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(svc.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = svc.Shutdown(sctx)
		cancel()
		<-done
		srv.Close()
	})
	pc.url = "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws"
	return pc
}

func (pc *puppetCloud) dial(t *testing.T, noFeed bool) *cloud.Client {
	t.Helper()
	now := time.Now()
	tok, err := cloudwire.SignToken(puppetTestKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience},
		Subject: User, Role: cloudwire.RoleBridge, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := cloud.Dial(context.Background(), cloud.ClientConfig{URL: pc.url, Token: tok,
		Hello: cloudwire.Hello{Device: "bridge-test", Platform: "bridge", NoFeed: noFeed}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPuppetLifecycle drives the puppet table against a real cloud
// service: opening, open (one act for many requests), refused (the cloud's
// act-for rule), reconnecting when the link drops and open again at the
// next use on the new session, closed after the idle time (with a close
// request) and reopened on demand; the state gauge and the open results
// follow.
func TestPuppetLifecycle(t *testing.T) {
	pc := startPuppetCloud(t)
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	tab := newPuppetTable(time.Minute, 5*time.Second, m, clock, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c1 := pc.dial(t, true)
	var gen uint64 = 1
	clientOf := func(int) (*cloud.Client, uint64) { return c1, gen }
	state := func(user string) PuppetStatus {
		t.Helper()
		for _, p := range tab.summary("", MaxPuppetList).List {
			if p.User == user {
				return p
			}
		}
		t.Fatalf("no puppet for %s", user)
		return PuppetStatus{}
	}
	gauge := func(s PuppetState) float64 { return testutil.ToFloat64(m.puppets.WithLabelValues(string(s))) }
	opens := func(r string) float64 { return testutil.ToFloat64(m.puppetOpens.WithLabelValues(r)) }

	for range 3 {
		if err := tab.acquire(ctx, "carol", 1, gen, c1); err != nil {
			t.Fatalf("acquire carol: %v", err)
		}
	}
	if st := state("carol"); st.State != PuppetOpen || st.Link != 1 {
		t.Fatalf("carol: %+v", st)
	}
	if opens(resultOK) != 1 {
		t.Fatalf("opens{ok} = %v, want 1 for three uses", opens(resultOK))
	}

	pc.move("mallory", true)
	err = tab.acquire(ctx, "mallory", 0, gen, c1)
	var se *cloud.ServerError
	if !errors.As(err, &se) || se.Code != cloudwire.CodeForbidden || !refusedForGood(err) {
		t.Fatalf("acquire mallory: %v, want the cloud's forbidden", err)
	}
	if st := state("mallory"); st.State != PuppetRefused || !strings.Contains(st.LastError, "cloud user") {
		t.Fatalf("mallory: %+v", st)
	}
	// Back on the overlay (a rollback): the next use opens her puppet.
	pc.move("mallory", false)
	if err := tab.acquire(ctx, "mallory", 0, gen, c1); err != nil {
		t.Fatalf("mallory after the rollback: %v", err)
	}
	if gauge(PuppetOpen) != 2 || gauge(PuppetRefused) != 0 || opens(resultRefused) != 1 {
		t.Fatalf("gauges open %v refused %v, opens{refused} %v", gauge(PuppetOpen), gauge(PuppetRefused), opens(resultRefused))
	}

	// The link drops: both go reconnecting; the next use reopens on the
	// new session.
	c1.Close()
	tab.linkDown(0)
	tab.linkDown(1)
	if gauge(PuppetReconnecting) != 2 || state("carol").State != PuppetReconnecting {
		t.Fatalf("after the drop: reconnecting %v, carol %+v", gauge(PuppetReconnecting), state("carol"))
	}
	c1, gen = pc.dial(t, true), 2
	if err := tab.acquire(ctx, "carol", 1, gen, c1); err != nil {
		t.Fatalf("carol after the drop: %v", err)
	}
	if st := state("carol"); st.State != PuppetOpen || st.LastError == "" {
		t.Fatalf("carol reopened: %+v (the drop's error must stay)", st)
	}

	// Idle: carol is used again within the idle time, mallory is not.
	advance(40 * time.Second)
	if err := tab.acquire(ctx, "carol", 1, gen, c1); err != nil {
		t.Fatal(err)
	}
	advance(30 * time.Second)
	tab.sweep(ctx, clientOf)
	if st := state("mallory"); st.State != PuppetClosed {
		t.Fatalf("mallory idle for 70 s: %+v", st)
	}
	if st := state("carol"); st.State != PuppetOpen {
		t.Fatalf("carol idle for 30 s: %+v", st)
	}
	advance(time.Minute)
	tab.sweep(ctx, clientOf)
	if st := state("carol"); st.State != PuppetClosed {
		t.Fatalf("carol idle for 90 s: %+v", st)
	}
	if gauge(PuppetClosed) != 2 || gauge(PuppetOpen) != 0 {
		t.Fatalf("closed %v open %v", gauge(PuppetClosed), gauge(PuppetOpen))
	}
	// A close went to the cloud: carol's reopen answers one open puppet.
	a, err := c1.Act(ctx, cloudwire.ActOpen, "dave")
	if err != nil || a.Puppets != 1 {
		t.Fatalf("the session's puppets after carol's close: %+v, %v (want dave alone)", a, err)
	}
	if err := tab.acquire(ctx, "carol", 1, gen, c1); err != nil || state("carol").State != PuppetOpen {
		t.Fatalf("carol on demand: %v, %+v", err, state("carol"))
	}

	// Idle again: closed by one sweep, forgotten by the next.
	advance(puppetForgetFactor * time.Minute)
	tab.sweep(ctx, clientOf)
	tab.sweep(ctx, clientOf)
	if s := tab.summary(PuppetClosed, 10); len(s.List) != 0 || s.Counts[PuppetClosed] != 0 || gauge(PuppetClosed) != 0 {
		t.Fatalf("forgotten puppets still listed: %+v", s)
	}
	if s := tab.summary("", 10); s.Counts[PuppetClosed] != 0 || len(s.Counts) != len(puppetStates) {
		t.Fatalf("summary counts: %+v", s.Counts)
	}
}

// TestLinkIndexStable: a user's link is a pure function of the id and the
// pool size, spread over every link, and always 0 for a pool of one.
func TestLinkIndexStable(t *testing.T) {
	seen := map[int]int{}
	for i := range 1000 {
		u := fmt.Sprintf("user-%d", i)
		k := linkIndex(u, 4)
		if k != linkIndex(u, 4) || k < 0 || k >= 4 {
			t.Fatalf("linkIndex(%s, 4) = %d, unstable or out of range", u, k)
		}
		if linkIndex(u, 1) != 0 {
			t.Fatalf("linkIndex(%s, 1) != 0", u)
		}
		seen[k]++
	}
	for k := range 4 {
		if seen[k] < 150 {
			t.Fatalf("link %d got %d of 1000 users: %v", k, seen[k], seen)
		}
	}
}
