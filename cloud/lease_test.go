package cloud

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
)

// testLease is the node lease of these tests: short, so that a dead
// node is noticed quickly, and long enough for heartbeats on a busy
// machine.
const testLease = 3 * time.Second

// TestDeadNodeDevicesGoOffline: two nodes on one JetStream; node B dies
// without closing its sessions (its NATS connection and its sockets are
// cut, so nothing marks its devices offline). Within the lease, node A's
// sessions get an offline presence for B's device, a snapshot no longer
// lists it, and a call to its user does not ring it.
func TestDeadNodeDevicesGoOffline(t *testing.T) {
	a, b, killB := deadNodePair(t, nil)
	a1 := a.dial(t, "alice", "a1", 0)
	collect(a1)
	alice := &liveCollector{ch: a1.Live()}
	send(t, a1, "bob", "hi") // alice and bob share a conversation
	b1 := b.dial(t, "bob", "b1", 0)
	collect(b1)
	alice.next(t, presenceOf("bob", "b1", cloudwire.PresenceActive))

	// Node B dies: nothing it would write on a clean stop reaches the
	// engine.
	killB()
	start := time.Now()
	alice.next(t, presenceOf("bob", "b1", cloudwire.PresenceOffline))
	t.Logf("offline after %v (lease %v)", time.Since(start).Round(time.Millisecond), testLease)
	if got := testutil.ToFloat64(a.svc.m.reaped); got != 1 {
		t.Errorf("devices reaped by node A: %v, want 1", got)
	}

	a2 := a.dial(t, "alice", "a2", 0)
	collect(a2)
	if diff := cmp.Diff([]string{"alice/a1/active"}, snapshotOf(t, &liveCollector{ch: a2.Live()})); diff != "" {
		t.Errorf("a2 snapshot (-want +got):\n%s", diff)
	}
	devs, err := a.svc.calleeDevices(t.Context(), "bob")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 0 {
		t.Errorf("bob's devices a call would ring: %v, want none", devs)
	}

	// Bob comes back on node A: online again for alice.
	b1a := a.dial(t, "bob", "b1", 0)
	collect(b1a)
	alice.next(t, presenceOf("bob", "b1", cloudwire.PresenceActive))
}

// deadNodePair starts node A on the engine's in-process connection and
// node B on a connection of its own, and returns a kill for B that cuts
// its NATS connection and then its sockets: nothing B would write on a
// clean stop reaches the engine, as when its process is killed.
func deadNodePair(t *testing.T, mutate func(*Config)) (a, b *node, killB func()) {
	t.Helper()
	eng, err := engine.Start(engine.Config{DataDir: t.TempDir(), Name: t.Name(), Listen: "127.0.0.1:-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ncB, err := nats.Connect(eng.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ncB.Close)
	jsB, err := jetstream.New(ncB)
	if err != nil {
		t.Fatal(err)
	}
	withLease := func(c *Config) {
		c.NodeLease = testLease
		if mutate != nil {
			mutate(c)
		}
	}
	a = startNode(t, eng.JS, withLease)
	b = startNode(t, jsB, withLease)
	return a, b, func() {
		ncB.Close()
		b.srv.CloseClientConnections()
	}
}

// TestDeadNodeCallsEnd: a call owned by a node that dies (its caller's
// node) ends as unavailable on the callee's devices on the other node
// within the lease, instead of ringing on; its record is gone.
func TestDeadNodeCallsEnd(t *testing.T) {
	a, b, killB := deadNodePair(t, callOpt(time.Hour, time.Hour))
	alice := dialDevice(t, b, "alice", "a1")
	send(t, alice.c, "bob", "hi") // so that alice sees bob's presence
	bob := dialDevice(t, a, "bob", "b1")
	alice.live.next(t, presenceOf("bob", "b1", cloudwire.PresenceActive)) // b1's activity is recorded
	ack, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	callStateOf(t, bob.live, cloudwire.CallRinging, "")
	killB()
	st := callStateOf(t, bob.live, cloudwire.CallEnded, cloudwire.ReasonUnavailable)
	if st.CallID != ack.MsgID {
		t.Errorf("ended call %s, want %s", st.CallID, ack.MsgID)
	}
	if got := testutil.ToFloat64(a.svc.m.callsReaped); got != 1 {
		t.Errorf("calls reaped by node A: %v, want 1", got)
	}
	if _, err := a.svc.store.lease.calls.Get(t.Context(), ack.MsgID); err == nil {
		t.Error("the dead node's call is still recorded")
	}
	// The answer that comes too late is told the call is gone.
	_, err = doCall(t, bob.c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: ack.MsgID})
	serverError(t, err, cloudwire.CodeNotFound)
}

// TestCallIDTakenOnceAcrossNodes: the same invite sent to two nodes (a
// resend after a reconnect elsewhere) starts one call; the second is a
// duplicate, and another caller's use of the id is a conflict.
func TestCallIDTakenOnceAcrossNodes(t *testing.T) {
	f := newFixture(t, callOpt(time.Hour, time.Hour))
	n2 := startNode(t, f.eng.JS, callOpt(time.Hour, time.Hour))
	dialDevice(t, f.node, "bob", "b1")
	a1 := dialDevice(t, f.node, "alice", "a1")
	a2 := dialDevice(t, n2, "alice", "a2")
	id := msgID(t)
	ack, err := doCall(t, a1.c, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: "bob"})
	if err != nil || ack.Duplicate {
		t.Fatalf("first invite: %+v, %v", ack, err)
	}
	ack, err = doCall(t, a2.c, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: "bob"})
	if err != nil || !ack.Duplicate {
		t.Fatalf("the same invite on another node: %+v, %v; want a duplicate", ack, err)
	}
	carol := dialDevice(t, n2, "carol", "c1")
	_, err = doCall(t, carol.c, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: "bob"})
	serverError(t, err, cloudwire.CodeConflict)
}

// TestLiveNodeDevicesStayOnline: a node that keeps heartbeating keeps its
// devices online for the other nodes, lease after lease.
func TestLiveNodeDevicesStayOnline(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.NodeLease = testLease })
	b := startNode(t, f.eng.JS, func(c *Config) { c.NodeLease = testLease })
	a1 := f.dial(t, "alice", "a1", 0)
	collect(a1)
	send(t, a1, "bob", "hi")
	b1 := b.dial(t, "bob", "b1", 0)
	collect(b1)
	time.Sleep(2 * testLease)
	a2 := f.dial(t, "alice", "a2", 0)
	collect(a2)
	if diff := cmp.Diff([]string{"alice/a1/active", "bob/b1/active"}, snapshotOf(t, &liveCollector{ch: a2.Live()})); diff != "" {
		t.Errorf("a2 snapshot (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(f.svc.m.reaped) + testutil.ToFloat64(b.svc.m.reaped); got != 0 {
		t.Errorf("devices reaped: %v, want 0", got)
	}
}
