package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// userOnLink returns a user id of the form prefix-N whose requests go to
// link (the documented FNV-1a hash of the id modulo the pool size).
func userOnLink(prefix string, link, links int) string {
	for i := 0; ; i++ {
		u := fmt.Sprintf("%s-%d", prefix, i)
		h := fnv.New32a()
		h.Write([]byte(u))
		if int(h.Sum32()%uint32(links)) == link {
			return u
		}
	}
}

// bridgePuppets reads GET /v1/admin/bridge?puppets=N[&state=S].
func bridgePuppets(t *testing.T, ta *testAgent, query string) bridge.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var st bridge.Status
	if err := ta.admin().do(ctx, http.MethodGet, "/v1/admin/bridge?"+query, nil, &st); err != nil {
		t.Fatalf("GET /v1/admin/bridge?%s: %v", query, err)
	}
	return st
}

// TestBridgePoolPuppets: with the default pool of two links, two legacy
// users on different links stream to a cloud user; each one's messages
// arrive once and in order, and the cloud user's answers reach each legacy
// device exactly once (only link 0 carries the feed). Each legacy sender
// has an open puppet on their link, in the admin API and the gauges (the
// bridge's and the cloud's); cutting the links (the bridge runs in its own
// agent, behind a proxy) turns them reconnecting, and their next messages
// open them again on the new sessions.
func TestBridgePoolPuppets(t *testing.T) {
	ta, dir := startCoreAgent(t)
	proxy := newFaultProxy(t, strings.TrimPrefix(strings.TrimSuffix(ta.a.cloudURL(), "/v1/ws"), "ws://"))
	br := startBridgeAgent(t, ta, dir, "ws://"+proxy.addr()+"/v1/ws")
	waitLinkState(t, br, bridge.LinkConnected)

	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	users := []string{userOnLink("pool", 0, bridge.DefaultLinks), userOnLink("pool", 1, bridge.DefaultLinks)}
	phones := make([]*legacyPhone, len(users))
	for i, u := range users {
		phones[i] = newLegacyPhone(t, ta, u)
		phones[i].waitRoute(t, "bob", br.a.brHost)
	}
	bob := dialCloud(t, ta, "bob", "bob-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const rounds = 5
	sent := map[string][]string{}
	send := func(round int) {
		t.Helper()
		for i, p := range phones {
			m, ack, err := p.dev.Send(ctx, "bob", fmt.Sprintf("%s %d", users[i], round))
			if err != nil || ack.Status != legacywire.StatusDelivered {
				t.Fatalf("%s → bob: ack %+v, err %v", users[i], ack, err)
			}
			sent[users[i]] = append(sent[users[i]], m.ID)
		}
	}
	got := map[string][]string{}
	receive := func(n int) {
		t.Helper()
		for n > 0 {
			ev, _ := bob.next(t, cloudwire.KindMsg)
			if ev.From == "bob" {
				continue // his own copy of what he sent
			}
			got[ev.From] = append(got[ev.From], ev.MsgID)
			n--
		}
	}
	for r := range rounds {
		send(r)
	}
	receive(rounds * len(users))

	st := bridgePuppets(t, br, "puppets=10&state=open")
	if len(st.Links) != bridge.DefaultLinks {
		t.Fatalf("links %+v", st.Links)
	}
	for i, l := range st.Links {
		if l.State != bridge.LinkConnected || l.Name != fmt.Sprintf("link-%d", i) {
			t.Fatalf("link %d: %+v", i, l)
		}
	}
	if st.Puppets.Counts[bridge.PuppetOpen] < len(users) {
		t.Fatalf("puppet counts %+v, want %d open at least", st.Puppets.Counts, len(users))
	}
	links := map[string]int{}
	for _, p := range st.Puppets.List {
		if p.State != bridge.PuppetOpen {
			t.Fatalf("state=open listed %+v", p)
		}
		links[p.User] = p.Link
	}
	for i, u := range users {
		if l, ok := links[u]; !ok || l != i {
			t.Fatalf("%s's puppet: link %d (listed %v), want link %d", u, l, ok, i)
		}
	}
	if v := metricValues(t, br, "gateway_bridge_puppets")[string(bridge.PuppetOpen)]; v < float64(len(users)) {
		t.Fatalf("gateway_bridge_puppets{open} = %v", v)
	}
	if v := metricValues(t, ta, "gateway_cloud_bridge_puppets")[""]; v < float64(len(users)) {
		t.Fatalf("gateway_cloud_bridge_puppets = %v", v)
	}

	// bob answers each: one copy each on the legacy devices.
	for _, u := range users {
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := bob.c.Send(ctx, cloudwire.Send{To: u, MsgID: id, Text: "hi " + u}); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range phones {
		select {
		case m := <-p.recv:
			if m.From != "bob" {
				t.Fatalf("%s got %+v", users[i], m)
			}
		case <-time.After(within):
			t.Fatalf("%s never got bob's message", users[i])
		}
	}

	// Cut every link: the puppets go reconnecting (the cloud forgets
	// them with the sessions); the links come back and the next messages
	// reopen them.
	addr, target := proxy.addr(), proxy.target
	proxy.close()
	waitUntil(t, within, func() bool {
		return bridgePuppets(t, br, "").Puppets.Counts[bridge.PuppetReconnecting] >= len(users)
	}, func() string { return fmt.Sprintf("puppets never reconnecting: %+v", bridgePuppets(t, br, "").Puppets) })
	reopenProxy(t, addr, target)
	waitLinkState(t, br, bridge.LinkConnected)
	for r := rounds; r < 2*rounds; r++ {
		send(r)
	}
	receive(rounds * len(users))
	bob.quiet(t, 300*time.Millisecond)
	for _, u := range users {
		if !slices.Equal(got[u], sent[u]) {
			t.Fatalf("%s's messages at bob: %v, want %v (once each, in order)", u, got[u], sent[u])
		}
	}
	st = bridgePuppets(t, br, "puppets=10")
	for _, p := range st.Puppets.List {
		if slices.Contains(users, p.User) && (p.State != bridge.PuppetOpen || !strings.Contains(p.LastError, "link")) {
			t.Fatalf("after the cut %s: %+v, want open again with the drop as last error", p.User, p)
		}
	}
	for i, p := range phones {
		p.mu.Lock()
		n := len(p.got)
		p.mu.Unlock()
		if n != 1 {
			t.Fatalf("%s received %d messages, want exactly 1", users[i], n)
		}
	}
}
