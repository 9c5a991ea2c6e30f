package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// Within bounds every wait of the end-to-end test.
const within = 20 * time.Second

// legacyPhone is a legacy device of a user, as a real libp2p host on
// loopback that registers at the agent's supernode.
type legacyPhone struct {
	host host.Host
	dev  *legacy.Device
	dir  *legacy.Directory
	mu   sync.Mutex
	got  []legacywire.ChatMessage
	recv chan legacywire.ChatMessage
}

func newLegacyPhone(t *testing.T, ta *testAgent, user string) *legacyPhone {
	t.Helper()
	h, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var cert legacywire.Certificate
	req := certRequest{PeerID: h.ID().String(), User: user, Platform: "desktop", ClientVersion: "7.4.1"}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert); err != nil {
		t.Fatal(err)
	}
	p := &legacyPhone{host: h, recv: make(chan legacywire.ChatMessage, 64)}
	p.dev, err = legacy.NewDevice(legacy.DeviceConfig{
		Host:      h,
		Cert:      cert,
		Authority: agentAuthority(t, ta),
		Supernode: ta.supernode(t),
		OnMessage: func(m legacywire.ChatMessage) {
			p.mu.Lock()
			p.got = append(p.got, m)
			p.mu.Unlock()
			select { // got is the record; recv is for tests that wait on one message
			case p.recv <- m:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.dir = legacy.NewDirectory(h, cert, ta.supernode(t))
	if err := p.dev.Register(ctx); err != nil {
		t.Fatalf("register %s: %v", user, err)
	}
	return p
}

func agentAuthority(t *testing.T, ta *testAgent) ed25519.PublicKey {
	t.Helper()
	var b bootstrap
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := ta.admin().do(ctx, http.MethodGet, "/v1/admin/legacy/bootstrap", nil, &b); err != nil {
		t.Fatal(err)
	}
	k, err := base64.StdEncoding.DecodeString(b.Authority)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// waitRoute waits until a lookup of user resolves to the bridge.
func (p *legacyPhone) waitRoute(t *testing.T, user string, bridge host.Host) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		look, err := p.dir.Lookup(ctx, user)
		cancel()
		if err == nil && look.Route != nil && !look.Route.Withdrawn && look.Route.PeerID == bridge.ID().String() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("a lookup of %s never resolved to the bridge", user)
}

// cloudDevice is a cloud device of a user on the real WebSocket protocol.
type cloudDevice struct {
	c *cloud.Client
}

func dialCloud(t *testing.T, ta *testAgent, user, device string, cursor uint64) *cloudDevice {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := cloud.Dial(ctx, cloud.ClientConfig{
		URL:   ta.a.cloudURL(),
		Token: userToken(t, ta, user),
		Hello: cloudwire.Hello{Device: device, Platform: "web", ClientVersion: "1.0.0", Cursor: cursor},
	})
	if err != nil {
		t.Fatalf("dial cloud as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close() })
	select {
	case <-c.Synced():
	case <-time.After(within):
		t.Fatal("cloud sync did not finish")
	}
	return &cloudDevice{c: c}
}

// next returns the next event of kind, skipping others (which are returned too).
func (d *cloudDevice) next(t *testing.T, kind string) (cloudwire.Event, []cloudwire.Event) {
	t.Helper()
	var skipped []cloudwire.Event
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-d.c.Events():
			if !ok {
				t.Fatalf("cloud connection ended: %v", d.c.Err())
			}
			if ev.Kind == kind {
				return ev, skipped
			}
			skipped = append(skipped, ev)
		case <-timeout:
			t.Fatalf("no %s event within %s", kind, within)
		}
	}
}

// quiet asserts that no message event arrives for a while: what was expected
// arrived exactly once.
func (d *cloudDevice) quiet(t *testing.T, d2 time.Duration) {
	t.Helper()
	timeout := time.After(d2)
	for {
		select {
		case ev, ok := <-d.c.Events():
			if ok && ev.Kind == cloudwire.KindMsg {
				t.Fatalf("unexpected message event %+v", ev)
			}
		case <-timeout:
			return
		}
	}
}

// TestMessageCrossesBothWays is the walking skeleton's end-to-end test with
// every real part in one process: a legacy device of alice (phase legacy) and
// a cloud device of bob (phase cloud) talk through the bridge; the agent is
// then restarted on the same data directory and bob's device catches up from
// its cursor.
func TestMessageCrossesBothWays(t *testing.T) {
	dir := t.TempDir()
	ports := agentPorts(t)
	ta := startAgent(t, dir, ports)
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)

	alice := newLegacyPhone(t, ta, "alice")
	alice.waitRoute(t, "bob", ta.a.brHost)
	bob := dialCloud(t, ta, "bob", "bob-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// alice → bob, through the bridge into the cloud conversation.
	sent, ack, err := alice.dev.Send(ctx, "bob", "hello bob")
	if err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("alice → bob: ack %+v, err %v", ack, err)
	}
	ev, _ := bob.next(t, cloudwire.KindMsg)
	if ev.MsgID != sent.ID || ev.From != "alice" || ev.Text != "hello bob" || ev.Conv != cloudwire.DirectConversationID("alice", "bob") {
		t.Fatalf("bob got %+v, want message %s from alice", ev, sent.ID)
	}
	lastSeq := ev.Seq

	// bob → alice, from the cloud to alice's legacy device.
	id := uuid.Must(uuid.NewV7()).String()
	bAck, err := bob.c.Send(ctx, cloudwire.Send{To: "alice", MsgID: id, Text: "hi alice"})
	if err != nil || bAck.Seq <= lastSeq {
		t.Fatalf("bob → alice: ack %+v, err %v", bAck, err)
	}
	select {
	case m := <-alice.recv:
		if m.ID != id || m.From != "bob" || m.Text != "hi alice" {
			t.Fatalf("alice got %+v", m)
		}
	case <-time.After(within):
		t.Fatal("alice never got bob's message")
	}
	// alice's delivery ack is a delivery receipt on bob's device.
	rc, skipped := bob.next(t, cloudwire.KindReceipt)
	if rc.MsgID != id || rc.Status != cloudwire.StatusDelivered || rc.By != "alice" {
		t.Fatalf("receipt %+v, want delivered by alice for %s", rc, id)
	}
	for _, ev := range skipped { // bob's own copy of what he sent is the only other event
		if ev.Kind == cloudwire.KindMsg && ev.MsgID != id {
			t.Fatalf("unexpected event %+v", ev)
		}
	}
	bob.quiet(t, 300*time.Millisecond)
	cursor := bob.c.Cursor()
	bob.c.Close()

	// While bob is offline alice sends two more; the agent restarts; she sends a third.
	var missed []string
	for _, text := range []string{"one", "two"} {
		m, ack, err := alice.dev.Send(ctx, "bob", text)
		if err != nil || ack.Status != legacywire.StatusDelivered {
			t.Fatalf("offline send %q: %+v %v", text, ack, err)
		}
		missed = append(missed, m.ID)
	}
	ta.stop()
	ta = startAgent(t, dir, ports)
	if u, ok := ta.a.state.Get("bob"); !ok || u.Phase != migrate.PhaseCloud {
		t.Fatalf("after restart bob is %+v, want phase cloud", u)
	}
	if u, ok := ta.a.state.Get("alice"); !ok || u.Phase != migrate.PhaseLegacy || len(u.Devices) == 0 {
		t.Fatalf("after restart alice is %+v, want phase legacy with her device", u)
	}
	if err := alice.dev.Register(ctx); err != nil { // a real client refreshes its registration
		t.Fatal(err)
	}
	alice.waitRoute(t, "bob", ta.a.brHost)
	m, ack, err := alice.dev.Send(ctx, "bob", "three")
	if err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("send after restart: %+v %v", ack, err)
	}
	missed = append(missed, m.ID)

	// bob reconnects with his cursor: what he missed, in order, once.
	bob = dialCloud(t, ta, "bob", "bob-laptop", cursor)
	var got []string
	for len(got) < len(missed) {
		ev, _ := bob.next(t, cloudwire.KindMsg)
		if ev.Cursor <= cursor {
			t.Fatalf("replayed an event at cursor %d, before the resume cursor %d", ev.Cursor, cursor)
		}
		if ev.Seq <= lastSeq {
			t.Fatalf("conversation order broken: seq %d after %d", ev.Seq, lastSeq)
		}
		lastSeq = ev.Seq
		got = append(got, ev.MsgID)
	}
	if !slices.Equal(got, missed) {
		t.Fatalf("after reconnect got %v, want %v", got, missed)
	}
	bob.quiet(t, 500*time.Millisecond)

	alice.mu.Lock()
	defer alice.mu.Unlock()
	if len(alice.got) != 1 {
		t.Fatalf("alice received %d messages, want exactly 1: %+v", len(alice.got), alice.got)
	}
}

// TestRouteFollowsPhase checks that a lookup resolves to the bridge exactly
// while the user's inbound home is the cloud: a rollback to shadow withdraws
// the route and lookups return the user's own legacy device again.
func TestRouteFollowsPhase(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	alice := newLegacyPhone(t, ta, "alice")
	frank := newLegacyPhone(t, ta, "frank")
	setPhases(t, ta.admin(), "frank", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice.waitRoute(t, "frank", ta.a.brHost)

	setPhases(t, ta.admin(), "frank", migrate.PhaseShadow)
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		look, err := alice.dir.Lookup(ctx, "frank")
		cancel()
		if err == nil {
			targets, err := look.Targets()
			if err == nil && len(targets) == 1 && targets[0].ID == frank.host.ID() {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after rollback a lookup of frank still resolves to %+v (err %v)", look.Route, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And alice's message now goes peer to peer to frank's own device.
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	m, ack, err := alice.dev.Send(ctx, "frank", "back on the overlay")
	if err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("send after rollback: %+v %v", ack, err)
	}
	select {
	case got := <-frank.recv:
		if got.ID != m.ID {
			t.Fatalf("frank got %+v", got)
		}
	case <-time.After(within):
		t.Fatal("frank's device never got the message")
	}
}

// TestOfflineLegacyRecipient checks the bridge's outbox: what a cloud user
// sends to a legacy user whose device is unreachable waits in JetStream and
// reaches the user's next device in order, with delivery receipts after.
func TestOfflineLegacyRecipient(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "gina", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	gina := dialCloud(t, ta, "gina", "gina-phone", 0)
	old := newLegacyPhone(t, ta, "hank")
	old.host.Close() // hank's registered device goes away without a word

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sent []string
	for _, text := range []string{"are", "you", "there"} {
		id := uuid.Must(uuid.NewV7()).String()
		if _, err := gina.c.Send(ctx, cloudwire.Send{To: "hank", MsgID: id, Text: text}); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, id)
	}
	hank := newLegacyPhone(t, ta, "hank") // hank comes back on a new device
	var got []string
	for len(got) < len(sent) {
		select {
		case m := <-hank.recv:
			got = append(got, m.ID)
		case <-time.After(within):
			t.Fatalf("hank got %d of %d queued messages", len(got), len(sent))
		}
	}
	if !slices.Equal(got, sent) {
		t.Fatalf("hank got %v, want in order %v", got, sent)
	}
	receipts := map[string]bool{}
	for len(receipts) < len(sent) {
		ev, _ := gina.next(t, cloudwire.KindReceipt)
		receipts[ev.MsgID] = ev.Status == cloudwire.StatusDelivered && ev.By == "hank"
	}
	for _, id := range sent {
		if !receipts[id] {
			t.Fatalf("no delivered receipt for %s: %v", id, receipts)
		}
	}
}

func (ta *testAgent) supernode(t testing.TB) peer.AddrInfo {
	t.Helper()
	info, err := ta.a.supernodeInfo()
	if err != nil {
		t.Fatal(err)
	}
	return info
}
