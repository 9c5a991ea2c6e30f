package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/bridge"
)

// bridgeStatus reads GET /v1/admin/bridge from ta and returns its links:
// one per link of the default pool, in index order.
func bridgeStatus(t *testing.T, ta *testAgent) []bridge.LinkStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var st bridge.Status
	if err := ta.admin().do(ctx, http.MethodGet, "/v1/admin/bridge", nil, &st); err != nil {
		t.Fatalf("GET /v1/admin/bridge: %v", err)
	}
	if len(st.Links) != bridge.DefaultLinks {
		t.Fatalf("links = %+v, want %d", st.Links, bridge.DefaultLinks)
	}
	for i, l := range st.Links {
		if l.Name != fmt.Sprintf("link-%d", i) {
			t.Fatalf("link %d is named %q", i, l.Name)
		}
	}
	return st.Links
}

// waitLinkState waits until every link of ta's bridge is in state, and
// returns the feed link's (link 0) status.
func waitLinkState(t *testing.T, ta *testAgent, state bridge.LinkState) bridge.LinkStatus {
	t.Helper()
	var last []bridge.LinkStatus
	waitUntil(t, within, func() bool {
		last = bridgeStatus(t, ta)
		for _, l := range last {
			if l.State != state {
				return false
			}
		}
		return true
	}, func() string { return fmt.Sprintf("links never all %s: %+v", state, last) })
	return last[0]
}

// linkStateGauge returns the value of gateway_bridge_link_state{link,state}
// when every link of the default pool has the same, and says which differ
// otherwise.
func linkStateGauge(t *testing.T, ta *testAgent, state bridge.LinkState) string {
	t.Helper()
	lines := strings.Split(scrape(t, ta), "\n")
	vals := make([]string, bridge.DefaultLinks)
	for i := range vals {
		vals[i] = "absent"
		prefix := fmt.Sprintf(`gateway_bridge_link_state{link="%d",state="%s"} `, i, state)
		for _, line := range lines {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				vals[i] = v
			}
		}
	}
	for _, v := range vals[1:] {
		if v != vals[0] {
			return "per link " + strings.Join(vals, ",")
		}
	}
	return vals[0]
}

// startBridgeAgent starts an agent with the bridge role alone, on dir (the
// core agent ta's keys) and ta's NATS, reaching the cloud at cloudURL.
func startBridgeAgent(t *testing.T, ta *testAgent, dir, cloudURL string) *testAgent {
	t.Helper()
	sn := ta.supernode(t)
	snAddrs, err := peer.AddrInfoToP2pAddrs(&sn)
	if err != nil {
		t.Fatal(err)
	}
	bcfg := agentPorts(t)
	bcfg.Roles = []string{roleBridge}
	bcfg.NatsURL = ta.natsURL()
	bcfg.CloudURL = cloudURL
	bcfg.Supernode = snAddrs[0].String()
	return startAgent(t, dir, bcfg)
}

// reopenProxy starts a fault proxy on addr, where a closed one listened.
func reopenProxy(tb testing.TB, addr, target string) *faultProxy {
	tb.Helper()
	var ln net.Listener
	var err error
	for range 50 { // the old listener's port may take a moment to free
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target, healed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	close(p.healed)
	p.wg.Go(p.accept)
	tb.Cleanup(p.close)
	return p
}

// TestBridgeLinkState: a bridge in its own agent reaches the cloud through a
// proxy. Its state is connected, turns reconnecting (with the error) while
// the proxy is down, and connected again after, in the admin API and in the
// state gauge. A bridge whose token the cloud does not accept is in
// bad_credentials. The endpoint needs the admin token.
func TestBridgeLinkState(t *testing.T) {
	ta, dir := startCoreAgent(t)
	proxy := newFaultProxy(t, strings.TrimPrefix(strings.TrimSuffix(ta.a.cloudURL(), "/v1/ws"), "ws://"))
	sn := ta.supernode(t)
	snAddrs, err := peer.AddrInfoToP2pAddrs(&sn)
	if err != nil {
		t.Fatal(err)
	}

	// The agent without the bridge role has no bridge to show.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := ta.admin().do(ctx, http.MethodGet, "/v1/admin/bridge", nil, new(bridge.Status)); err == nil || !strings.Contains(err.Error(), "no_bridge") {
		t.Fatalf("status from an agent without a bridge: err = %v, want no_bridge", err)
	}

	br := startBridgeAgent(t, ta, dir, "ws://"+proxy.addr()+"/v1/ws")

	resp, err := http.Get(br.a.adminURL() + "/v1/admin/bridge")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/admin/bridge without a token: %d, want 401", resp.StatusCode)
	}

	up := waitLinkState(t, br, bridge.LinkConnected)
	if got := linkStateGauge(t, br, bridge.LinkConnected); got != "1" {
		t.Fatalf("connected gauge = %s, want 1", got)
	}
	if got := linkStateGauge(t, br, bridge.LinkReconnecting); got != "0" {
		t.Fatalf("reconnecting gauge = %s, want 0", got)
	}

	// Closing the proxy resets the link and refuses redials; a new proxy
	// on the same address lets the bridge back in.
	addr, target := proxy.addr(), proxy.target
	proxy.close()
	down := waitLinkState(t, br, bridge.LinkReconnecting)
	if down.LastError == "" || down.LastErrorAt.IsZero() || !down.Since.After(up.Since) {
		t.Fatalf("reconnecting without an error or a new since: %+v (was %+v)", down, up)
	}
	if got := linkStateGauge(t, br, bridge.LinkReconnecting); got != "1" {
		t.Fatalf("reconnecting gauge = %s, want 1", got)
	}
	reopenProxy(t, addr, target)
	again := waitLinkState(t, br, bridge.LinkConnected)
	if again.Reconnects < 1 || again.LastError == "" {
		t.Fatalf("after the cut: %+v, want a reconnect and the last error kept", again)
	}

	// A bridge with its own data directory signs its cloud token with a key
	// the cloud does not know: 401 at the handshake.
	xcfg := agentPorts(t)
	xcfg.Roles = []string{roleBridge}
	xcfg.CloudURL = ta.a.cloudURL()
	xcfg.Supernode = snAddrs[0].String()
	stranger := startAgent(t, t.TempDir(), xcfg)
	bad := waitLinkState(t, stranger, bridge.LinkBadCredentials)
	if !strings.Contains(bad.LastError, "401") {
		t.Fatalf("bad credentials without the refusal: %+v", bad)
	}
	if got := linkStateGauge(t, stranger, bridge.LinkBadCredentials); got != "1" {
		t.Fatalf("bad_credentials gauge = %s, want 1", got)
	}
}
