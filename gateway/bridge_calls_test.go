package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// callPhone is a legacy device that takes calls and hands each incoming
// one to the test.
type callPhone struct {
	*versionedPhone
	incoming chan *legacy.Call
}

func newCallPhone(t *testing.T, ta *testAgent, user string, maxVersion int, ring time.Duration) *callPhone {
	t.Helper()
	p := &callPhone{incoming: make(chan *legacy.Call, 8)}
	p.versionedPhone = newVersionedPhoneWith(t, ta, user, maxVersion, func(c *legacy.DeviceConfig) {
		c.RingTimeout = ring
		c.OnCall = func(call *legacy.Call) {
			select {
			case p.incoming <- call:
			default:
			}
		}
	})
	return p
}

// nextCall waits for an incoming call from user.
func (p *callPhone) nextCall(t *testing.T, from string) *legacy.Call {
	t.Helper()
	return nextIncomingCall(t, p.incoming, from)
}

// nextIncomingCall waits for a call from user on a phone's incoming calls.
func nextIncomingCall(t *testing.T, incoming <-chan *legacy.Call, from string) *legacy.Call {
	t.Helper()
	select {
	case c := <-incoming:
		if c.Peer() != from {
			t.Fatalf("incoming call from %s, want %s", c.Peer(), from)
		}
		return c
	case <-time.After(within):
		t.Fatalf("no call from %s rang the legacy device", from)
		return nil
	}
}

// waitCallState waits until c ends in want (or, for CallConnected, gets
// there).
func waitCallState(t *testing.T, c *legacy.Call, want legacy.CallState) {
	t.Helper()
	deadline := time.After(within)
	for c.State() != want {
		select {
		case <-c.Events():
		case <-deadline:
			t.Fatalf("legacy call is %s, want %s", c.State(), want)
		}
	}
}

// nextCallState waits for a state of call id on d that match accepts.
func (d *cloudDevice) nextCallState(t *testing.T, id, what string, match func(cloudwire.CallState) bool) cloudwire.CallState {
	t.Helper()
	var got cloudwire.CallState
	d.nextLive(t, what, func(f cloudwire.Frame) bool {
		cs, ok := f.(cloudwire.CallState)
		if ok && cs.CallID == id && match(cs) {
			got = cs
			return true
		}
		return false
	})
	return got
}

func ended(reason string) func(cloudwire.CallState) bool {
	return func(cs cloudwire.CallState) bool { return cs.State == cloudwire.CallEnded && cs.Reason == reason }
}

// cloudCall has d place a call to user and returns its id.
func cloudCall(ctx context.Context, t *testing.T, d *cloudDevice, to string) string {
	t.Helper()
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := d.c.Call(ctx, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: to, Media: legacywire.CallAudio}); err != nil {
		t.Fatalf("call %s: %v", to, err)
	}
	return id
}

func cloudCallOp(ctx context.Context, t *testing.T, d *cloudDevice, id, op string) {
	t.Helper()
	if _, err := d.c.Call(ctx, cloudwire.Call{Op: op, CallID: id}); err != nil {
		t.Fatalf("%s call %s: %v", op, id, err)
	}
}

// TestBridgeCalls: calls ring across the boundary in both directions and
// every end of a call ends in the same state: a cloud caller rings a
// legacy callee's devices (answered, with answered-elsewhere on the
// other device; rejected; cancelled), a chat v1 callee ends the cloud
// call as unavailable at once; a legacy caller rings the cloud callee's
// most recently active device first (answered, with answered-elsewhere on
// the other cloud device; rejected; cancelled).
func TestBridgeCalls(t *testing.T) {
	cfg := agentPorts(t)
	cfg.CloudRingDelay = 300 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	setPhases(t, ta.admin(), "cid", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	liaA := newCallPhone(t, ta, "lia", 2, 20*time.Second)
	liaB := newCallPhone(t, ta, "lia", 3, 20*time.Second)
	newCallPhone(t, ta, "leo", 1, 20*time.Second) // leo has a chat v1 device only
	liaA.waitRoute(t, "cid", ta.a.brHost)
	// The laptop is the device used last (it connects last and places the
	// first calls): a call to cid rings it first, the phone after the delay.
	phone := dialCloud(t, ta, "cid", "cid-phone", 0)
	laptop := dialCloud(t, ta, "cid", "cid-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("cloud caller, legacy callee answers", func(t *testing.T) {
		id := cloudCall(ctx, t, laptop, "lia")
		laptop.nextCallState(t, id, "the call ringing the bridge", func(cs cloudwire.CallState) bool {
			return cs.State == cloudwire.CallRinging && slices.Equal(cs.Ringing, []string{cloud.BridgeCallDevice})
		})
		a, b := liaA.nextCall(t, "cid"), liaB.nextCall(t, "cid")
		if err := a.Accept(ctx); err != nil {
			t.Fatalf("accept: %v", err)
		}
		laptop.nextCallState(t, id, "the answered call", func(cs cloudwire.CallState) bool {
			return cs.State == cloudwire.CallActive && cs.Reason == cloudwire.ReasonAnswered
		})
		waitCallState(t, b, legacy.CallAnsweredElsewhere)
		cloudCallOp(ctx, t, laptop, id, cloudwire.CallHangup)
		waitCallState(t, a, legacy.CallEnded)
	})

	t.Run("cloud caller, legacy callee rejects", func(t *testing.T) {
		id := cloudCall(ctx, t, laptop, "lia")
		a, b := liaA.nextCall(t, "cid"), liaB.nextCall(t, "cid")
		if err := b.Reject(ctx); err != nil {
			t.Fatalf("reject: %v", err)
		}
		laptop.nextCallState(t, id, "the rejected call", ended(cloudwire.ReasonRejected))
		waitCallState(t, a, legacy.CallRejected)
	})

	t.Run("cloud caller cancels", func(t *testing.T) {
		id := cloudCall(ctx, t, laptop, "lia")
		a, b := liaA.nextCall(t, "cid"), liaB.nextCall(t, "cid")
		cloudCallOp(ctx, t, laptop, id, cloudwire.CallCancel)
		laptop.nextCallState(t, id, "the cancelled call", ended(cloudwire.ReasonCancelled))
		waitCallState(t, a, legacy.CallCancelled)
		waitCallState(t, b, legacy.CallCancelled)
	})

	t.Run("cloud caller, chat v1 callee", func(t *testing.T) {
		id := cloudCall(ctx, t, laptop, "leo")
		laptop.nextCallState(t, id, "the call ended as unavailable", ended(cloudwire.ReasonUnavailable))
	})

	t.Run("legacy caller, cloud callee answers", func(t *testing.T) {
		c, err := liaA.dev.Call(ctx, "cid", legacywire.CallAudio)
		if err != nil {
			t.Fatal(err)
		}
		laptop.nextCallState(t, c.ID(), "the laptop ringing alone", func(cs cloudwire.CallState) bool {
			return cs.State == cloudwire.CallRinging && slices.Equal(cs.Ringing, []string{"cid-laptop"})
		})
		phone.nextCallState(t, c.ID(), "every device ringing", func(cs cloudwire.CallState) bool {
			return cs.State == cloudwire.CallRinging && len(cs.Ringing) == 2
		})
		cloudCallOp(ctx, t, laptop, c.ID(), cloudwire.CallAnswer)
		phone.nextCallState(t, c.ID(), "answered elsewhere", func(cs cloudwire.CallState) bool {
			return cs.State == cloudwire.CallActive && cs.Reason == cloudwire.ReasonAnsweredElsewhere
		})
		waitCallState(t, c, legacy.CallConnected)
		if err := c.HangUp(ctx); err != nil {
			t.Fatalf("hang up: %v", err)
		}
		laptop.nextCallState(t, c.ID(), "the hung-up call", ended(cloudwire.ReasonHangup))
	})

	t.Run("legacy caller, cloud callee rejects", func(t *testing.T) {
		c, err := liaA.dev.Call(ctx, "cid", legacywire.CallAudio)
		if err != nil {
			t.Fatal(err)
		}
		laptop.nextCallState(t, c.ID(), "the ringing call", func(cs cloudwire.CallState) bool { return cs.State == cloudwire.CallRinging })
		cloudCallOp(ctx, t, laptop, c.ID(), cloudwire.CallReject)
		waitCallState(t, c, legacy.CallRejected)
		phone.nextCallState(t, c.ID(), "the rejected call", ended(cloudwire.ReasonRejected))
	})

	t.Run("legacy caller cancels", func(t *testing.T) {
		c, err := liaA.dev.Call(ctx, "cid", legacywire.CallAudio)
		if err != nil {
			t.Fatal(err)
		}
		laptop.nextCallState(t, c.ID(), "the ringing call", func(cs cloudwire.CallState) bool { return cs.State == cloudwire.CallRinging })
		if err := c.HangUp(ctx); err != nil {
			t.Fatal(err)
		}
		laptop.nextCallState(t, c.ID(), "the cancelled call", ended(cloudwire.ReasonCancelled))
		phone.nextCallState(t, c.ID(), "the cancelled call", ended(cloudwire.ReasonCancelled))
	})

	t.Run("legacy caller, cloud callee offline", func(t *testing.T) {
		setPhases(t, ta.admin(), "cay", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
		liaA.waitRoute(t, "cay", ta.a.brHost)
		c, err := liaA.dev.Call(ctx, "cay", legacywire.CallAudio)
		if err != nil {
			t.Fatal(err)
		}
		waitCallState(t, c, legacy.CallRejected)
	})

	t.Run("legacy caller's ring times out", func(t *testing.T) {
		lou := newCallPhone(t, ta, "lou", 2, 500*time.Millisecond)
		lou.waitRoute(t, "cid", ta.a.brHost)
		c, err := lou.dev.Call(ctx, "cid", legacywire.CallAudio)
		if err != nil {
			t.Fatal(err)
		}
		waitCallState(t, c, legacy.CallTimeout)
		laptop.nextCallState(t, c.ID(), "the timed-out call", ended(cloudwire.ReasonTimeout))
	})

	for series, min := range map[string]float64{
		`gateway_bridge_call_setups_total{callee_home="legacy",result="ok"}`:              3,
		`gateway_bridge_call_setups_total{callee_home="legacy",result="unsupported"}`:     1,
		`gateway_bridge_call_setups_total{callee_home="cloud",result="ok"}`:               3,
		`gateway_bridge_items_total{direction="legacy_to_cloud",kind="call",result="ok"}`: 3,
	} {
		if v := seriesValue(t, ta, series); v < min {
			t.Errorf("%s = %v, want at least %v", series, v, min)
		}
	}
}
