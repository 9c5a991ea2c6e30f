package cloud

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// tickingClock returns a clock that moves one millisecond per reading, so
// that activity times are strictly ordered however fast the test runs.
func tickingClock() func() time.Time {
	base := time.Now()
	var n atomic.Int64
	return func() time.Time { return base.Add(time.Duration(n.Add(1)) * time.Millisecond) }
}

func callOpt(delay, timeout time.Duration) func(*Config) {
	return func(c *Config) {
		c.Now = tickingClock()
		c.RingDelay, c.RingTimeout = delay, timeout
	}
}

// callStateOf waits for the next call state on lc matching state and
// reason (and returns it), skipping other live frames.
func callStateOf(tb testing.TB, lc *liveCollector, state, reason string) cloudwire.CallState {
	tb.Helper()
	return lc.next(tb, func(f cloudwire.Frame) bool {
		cs, ok := f.(cloudwire.CallState)
		return ok && cs.State == state && (reason == "" || cs.Reason == reason)
	}).(cloudwire.CallState)
}

func doCall(tb testing.TB, c *Client, f cloudwire.Call) (cloudwire.Ack, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return c.Call(ctx, f)
}

// device is a dialed client with its event and live frames drained.
type device struct {
	c    *Client
	live *liveCollector
}

func dialDevice(tb testing.TB, n *node, user, id string) device {
	tb.Helper()
	c := n.dial(tb, user, id, 0)
	collect(c)
	waitOnRecord(tb, n, user, id)
	return device{c, &liveCollector{ch: c.Live()}}
}

// waitOnRecord waits until n has user's device id on record as online. A
// session records its device after the welcome the dial waits for; a call
// placed in between would not find the device (and would find it older
// than what another device did after the dial).
func waitOnRecord(tb testing.TB, n *node, user, id string) {
	tb.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		devs, err := n.svc.store.onlineDevices(context.Background(), user)
		if err == nil && slices.Contains(devs, id) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s's device %s not on record as online after %v (%v)", user, id, waitFor, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// bobDevices dials b1, b2, b3 and makes b2 the most recently active (b1
// sees its presence only after its activity is recorded).
func bobDevices(tb testing.TB, n *node) map[string]device {
	tb.Helper()
	d := map[string]device{}
	for _, id := range []string{"b1", "b2", "b3"} {
		d[id] = dialDevice(tb, n, "bob", id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := d["b2"].c.SetPresence(ctx, cloudwire.PresenceActive); err != nil {
		tb.Fatal(err)
	}
	// A presence frame has no answer, and b2's own announce when it
	// connected may be what b1 sees below. A session handles its requests
	// in order, so once a later one is answered (here not_found: the
	// conversation is empty) b2 is on record as active since SetPresence.
	var se *ServerError
	if _, err := d["b2"].c.History(ctx, cloudwire.History{Conv: cloudwire.DirectConversationID("alice", "bob"), Limit: 1}); err != nil && !errors.As(err, &se) {
		tb.Fatal(err)
	}
	d["b1"].live.next(tb, func(f cloudwire.Frame) bool {
		p, ok := f.(cloudwire.Presence)
		return ok && p.Device == "b2" && p.State == cloudwire.PresenceActive && !p.At.IsZero()
	})
	return d
}

// TestCallRingsMostRecentDeviceFirst: only the device in use rings while
// the delay runs; when it answers, the others are told "answered
// elsewhere" and every device agrees on the state, through the hangup.
func TestCallRingsMostRecentDeviceFirst(t *testing.T) {
	f := newFixture(t, callOpt(time.Hour, time.Hour))
	bob := bobDevices(t, f.node)
	alice := dialDevice(t, f.node, "alice", "a1")

	ack, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob", Media: "audio"})
	if err != nil {
		t.Fatal(err)
	}
	id := ack.MsgID
	for name, d := range map[string]device{"a1": alice, "b1": bob["b1"], "b2": bob["b2"], "b3": bob["b3"]} {
		cs := callStateOf(t, d.live, cloudwire.CallRinging, "")
		if cs.CallID != id || cs.From != "alice" || cs.FromDevice != "a1" || cs.To != "bob" || !cmp.Equal(cs.Ringing, []string{"b2"}) {
			t.Errorf("%s: ringing state %+v", name, cs)
		}
	}
	if _, err := doCall(t, bob["b2"].c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: id}); err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]device{"a1": alice, "b2": bob["b2"]} {
		if cs := callStateOf(t, d.live, cloudwire.CallActive, cloudwire.ReasonAnswered); cs.Device != "b2" {
			t.Errorf("%s: %+v", name, cs)
		}
	}
	for _, name := range []string{"b1", "b3"} {
		if cs := callStateOf(t, bob[name].live, cloudwire.CallActive, cloudwire.ReasonAnsweredElsewhere); cs.Device != "b2" {
			t.Errorf("%s: %+v", name, cs)
		}
	}
	// Nobody else can take the call now.
	_, err = doCall(t, bob["b1"].c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: id})
	serverError(t, err, cloudwire.CodeBadRequest)

	if _, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallHangup, CallID: id}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []device{alice, bob["b1"], bob["b2"], bob["b3"]} {
		callStateOf(t, d.live, cloudwire.CallEnded, cloudwire.ReasonHangup)
	}
	_, err = doCall(t, bob["b2"].c, cloudwire.Call{Op: cloudwire.CallHangup, CallID: id})
	serverError(t, err, cloudwire.CodeNotFound)
}

// TestCallRingsOthersAfterDelay: after the delay every online device
// rings, the most recent first; a reject on one ends the call everywhere.
func TestCallRingsOthersAfterDelay(t *testing.T) {
	f := newFixture(t, callOpt(time.Millisecond, time.Hour))
	bob := bobDevices(t, f.node)
	alice := dialDevice(t, f.node, "alice", "a1")
	ack, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]device{"a1": alice, "b1": bob["b1"], "b3": bob["b3"]} {
		first := callStateOf(t, d.live, cloudwire.CallRinging, "")
		second := callStateOf(t, d.live, cloudwire.CallRinging, "")
		if !cmp.Equal(first.Ringing, []string{"b2"}) || len(second.Ringing) != 3 || second.Ringing[0] != "b2" {
			t.Errorf("%s: rang %v then %v", name, first.Ringing, second.Ringing)
		}
	}
	if _, err := doCall(t, bob["b3"].c, cloudwire.Call{Op: cloudwire.CallReject, CallID: ack.MsgID}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []device{alice, bob["b1"], bob["b2"], bob["b3"]} {
		callStateOf(t, d.live, cloudwire.CallEnded, cloudwire.ReasonRejected)
	}
}

// TestCallEnds: timeout, cancel, nobody online, and refused requests.
func TestCallEnds(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		f := newFixture(t, callOpt(time.Hour, time.Millisecond))
		b1 := dialDevice(t, f.node, "bob", "b1")
		alice := dialDevice(t, f.node, "alice", "a1")
		if _, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"}); err != nil {
			t.Fatal(err)
		}
		callStateOf(t, alice.live, cloudwire.CallEnded, cloudwire.ReasonTimeout)
		callStateOf(t, b1.live, cloudwire.CallEnded, cloudwire.ReasonTimeout)
	})
	t.Run("cancel and refusals", func(t *testing.T) {
		f := newFixture(t, callOpt(time.Hour, time.Hour))
		b1 := dialDevice(t, f.node, "bob", "b1")
		alice := dialDevice(t, f.node, "alice", "a1")
		carol := dialDevice(t, f.node, "carol", "c1")
		ack, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		id := ack.MsgID
		if again, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: "bob"}); err != nil || !again.Duplicate {
			t.Errorf("invite resent: %+v, %v", again, err)
		}
		_, err = doCall(t, carol.c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: id})
		serverError(t, err, cloudwire.CodeForbidden)
		_, err = doCall(t, b1.c, cloudwire.Call{Op: cloudwire.CallCancel, CallID: id})
		serverError(t, err, cloudwire.CodeBadRequest)
		_, err = doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: id})
		serverError(t, err, cloudwire.CodeBadRequest)
		_, err = doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "alice"})
		serverError(t, err, cloudwire.CodeBadRequest)
		_, err = doCall(t, b1.c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: msgID(t)})
		serverError(t, err, cloudwire.CodeNotFound)
		if _, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallCancel, CallID: id}); err != nil {
			t.Fatal(err)
		}
		callStateOf(t, b1.live, cloudwire.CallEnded, cloudwire.ReasonCancelled)
		callStateOf(t, alice.live, cloudwire.CallEnded, cloudwire.ReasonCancelled)
	})
	t.Run("nobody online", func(t *testing.T) {
		f := newFixture(t, callOpt(time.Hour, time.Hour))
		b1 := f.dial(t, "bob", "b1", 0)
		collect(b1)
		b1.Close() // bob has been online, and is not now
		// The session's end (and its device going offline) is recorded
		// before the session count drops.
		for deadline := time.Now().Add(waitFor); f.svc.Sessions() != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("session did not end")
			}
		}
		alice := dialDevice(t, f.node, "alice", "a1")
		if _, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"}); err != nil {
			t.Fatal(err)
		}
		callStateOf(t, alice.live, cloudwire.CallEnded, cloudwire.ReasonUnavailable)
	})
}

// TestCallAcrossNodes: the callee's devices are on another node than the
// caller's, so ringing and answering cross NATS both ways.
func TestCallAcrossNodes(t *testing.T) {
	f := newFixture(t, callOpt(time.Hour, time.Hour))
	n2 := startNode(t, f.eng.JS, callOpt(time.Hour, time.Hour))
	bob := bobDevices(t, n2)
	alice := dialDevice(t, f.node, "alice", "a1")
	ack, err := doCall(t, alice.c, cloudwire.Call{Op: cloudwire.CallInvite, To: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	callStateOf(t, bob["b1"].live, cloudwire.CallRinging, "")
	if _, err := doCall(t, bob["b2"].c, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: ack.MsgID}); err != nil {
		t.Fatal(err)
	}
	callStateOf(t, alice.live, cloudwire.CallActive, cloudwire.ReasonAnswered)
	callStateOf(t, bob["b1"].live, cloudwire.CallActive, cloudwire.ReasonAnsweredElsewhere)
}
