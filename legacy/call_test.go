package legacy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// callDevice is a test device that takes calls: each incoming call lands
// on incoming.
type callDevice struct {
	*Device
	incoming chan *Call
}

// newCallDevice starts and registers a device of user speaking chat up to
// version, taking calls; configure edits its config first.
func newCallDevice(tb testing.TB, auth *Authority, sn peer.AddrInfo, user string, version int, configure ...func(*DeviceConfig)) callDevice {
	tb.Helper()
	in := make(chan *Call, 8)
	configure = append([]func(*DeviceConfig){func(c *DeviceConfig) { c.OnCall = func(call *Call) { in <- call } }}, configure...)
	d, _, _ := newVersionedDevice(tb, auth, sn, user, version, configure...)
	return callDevice{Device: d, incoming: in}
}

// withCallMedia gives a test device a media endpoint.
func withCallMedia(c *DeviceConfig) { c.Media = &MediaConfig{} }

// ring returns the next incoming call of d.
func (d callDevice) ring(tb testing.TB) *Call {
	tb.Helper()
	select {
	case c := <-d.incoming:
		return c
	case <-time.After(testTimeout):
		tb.Fatalf("%s's device %s never rang", d.User(), d.cfg.Host.ID())
		return nil
	}
}

// nextEvent returns c's next event of type typ, skipping others.
func nextEvent(tb testing.TB, c *Call, typ string) CallEvent {
	tb.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case ev := <-c.Events():
			if ev.Type == typ {
				return ev
			}
		case <-timeout:
			tb.Fatalf("call %s: no %s event", c.ID(), typ)
			return CallEvent{}
		}
	}
}

// wantFinal waits for every call to end and checks that each ended in
// want.
func wantFinal(tb testing.TB, want CallState, calls map[string]*Call) {
	tb.Helper()
	for name, c := range calls {
		got, err := c.Wait(testCtx(tb))
		if err != nil || got != want {
			tb.Errorf("%s's call ended %q (%v), want %q", name, got, err, want)
		}
	}
}

// TestCallAnsweredElsewhere: both of bob's devices (chat v2 and v3) ring;
// the phone accepts and gets the call with its media stream, the laptop
// is told it was answered elsewhere and can no longer take it; a hang-up
// ends the call on both ends.
func TestCallAnsweredElsewhere(t *testing.T) {
	auth := newTestAuthority(t)
	_, sn := startSupernode(t, auth, SupernodeConfig{})
	alice := newCallDevice(t, auth, sn, "alice", 3, withCallMedia)
	phone := newCallDevice(t, auth, sn, "bob", 2, withCallMedia)
	laptop := newCallDevice(t, auth, sn, "bob", 3, withCallMedia)
	ctx := testCtx(t)

	call, err := alice.Call(ctx, "bob", legacywire.CallVideo)
	if err != nil || call.State() != CallRinging {
		t.Fatalf("Call = %v, %v; want ringing", call, err)
	}
	onPhone, onLaptop := phone.ring(t), laptop.ring(t)
	for _, c := range []*Call{onPhone, onLaptop} {
		if c.ID() != call.ID() || c.Peer() != "alice" || c.Kind() != legacywire.CallVideo || c.Outgoing() {
			t.Errorf("incoming call = id %s from %s kind %s outgoing %v; want %s from alice, video", c.ID(), c.Peer(), c.Kind(), c.Outgoing(), call.ID())
		}
	}
	rang := map[peer.ID]bool{}
	for range 2 {
		rang[nextEvent(t, call, CallEventRinging).Device] = true
	}
	if !rang[phone.cfg.Host.ID()] || !rang[laptop.cfg.Host.ID()] {
		t.Errorf("ringing events from %v, want both of bob's devices", rang)
	}

	if err := onPhone.Accept(ctx); err != nil {
		t.Fatalf("phone Accept: %v", err)
	}
	if ev := nextEvent(t, call, CallEventConnected); ev.Device != phone.cfg.Host.ID() {
		t.Errorf("connected to %s, want the phone %s", ev.Device, phone.cfg.Host.ID())
	}
	wantFinal(t, CallAnsweredElsewhere, map[string]*Call{"laptop": onLaptop})
	if err := onLaptop.Accept(ctx); !errors.Is(err, ErrAnsweredElsewhere) {
		t.Errorf("laptop Accept after the phone's = %v, want ErrAnsweredElsewhere", err)
	}

	// The caller opened the media stream to the phone; a frame crosses.
	for _, c := range []*Call{call, onPhone} {
		if ev := nextEvent(t, c, CallEventMedia); ev.Err != nil {
			t.Fatalf("media of %s: %v", c.Peer(), ev.Err)
		}
	}
	if err := call.Media().WriteFrame([]byte("hello over media")); err != nil {
		t.Fatalf("media write: %v", err)
	}
	if got, err := onPhone.Media().ReadFrame(nil); err != nil || string(got) != "hello over media" {
		t.Errorf("media read = %q, %v", got, err)
	}

	if err := onPhone.HangUp(ctx); err != nil {
		t.Errorf("phone HangUp: %v", err)
	}
	wantFinal(t, CallEnded, map[string]*Call{"alice": call, "phone": onPhone})
	if err := call.HangUp(ctx); err != nil {
		t.Errorf("HangUp of an ended call: %v", err)
	}
	if got := alice.CallStats(); got[CallEnded] != 1 || len(got) != 1 {
		t.Errorf("alice's CallStats = %v, want one ended", got)
	}
	if got := laptop.CallStats(); got[CallAnsweredElsewhere] != 1 {
		t.Errorf("laptop's CallStats = %v, want one answered elsewhere", got)
	}
}

// TestCallEndsTheSameEverywhere: reject (by one device, and by both at
// once), cancel before an answer and the ring timeout leave the caller and
// every device of the callee in the same final state.
func TestCallEndsTheSameEverywhere(t *testing.T) {
	auth := newTestAuthority(t)
	_, sn := startSupernode(t, auth, SupernodeConfig{})
	alice := newCallDevice(t, auth, sn, "alice", 2, func(c *DeviceConfig) { c.RingTimeout = 500 * time.Millisecond })
	phone := newCallDevice(t, auth, sn, "bob", 2)
	laptop := newCallDevice(t, auth, sn, "bob", 3)

	for _, tt := range []struct {
		name string
		end  func(t *testing.T, call, onPhone, onLaptop *Call)
		want CallState
	}{
		{"one device rejects", func(t *testing.T, _, onPhone, _ *Call) {
			if err := onPhone.Reject(testCtx(t)); err != nil {
				t.Errorf("Reject: %v", err)
			}
		}, CallRejected},
		{"both devices reject", func(t *testing.T, _, onPhone, onLaptop *Call) {
			var wg sync.WaitGroup
			for _, c := range []*Call{onPhone, onLaptop} {
				wg.Go(func() {
					if err := c.Reject(testCtx(t)); err != nil {
						t.Errorf("Reject: %v", err)
					}
				})
			}
			wg.Wait()
		}, CallRejected},
		{"caller cancels", func(t *testing.T, call, onPhone, _ *Call) {
			if err := call.HangUp(testCtx(t)); err != nil {
				t.Errorf("HangUp: %v", err)
			}
			if _, err := onPhone.Wait(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			if err := onPhone.Accept(testCtx(t)); !errors.Is(err, ErrCallEnded) {
				t.Errorf("Accept after the cancel = %v, want ErrCallEnded", err)
			}
		}, CallCancelled},
		{"nobody answers", func(*testing.T, *Call, *Call, *Call) {}, CallTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			call, err := alice.Call(testCtx(t), "bob", legacywire.CallAudio)
			if err != nil {
				t.Fatalf("Call: %v", err)
			}
			onPhone, onLaptop := phone.ring(t), laptop.ring(t)
			tt.end(t, call, onPhone, onLaptop)
			wantFinal(t, tt.want, map[string]*Call{"alice": call, "phone": onPhone, "laptop": onLaptop})
		})
	}
	want := map[CallState]uint64{CallRejected: 2, CallCancelled: 1, CallTimeout: 1}
	for name, d := range map[string]callDevice{"alice": alice, "phone": phone, "laptop": laptop} {
		got := d.CallStats()
		for s, n := range want {
			if got[s] != n {
				t.Errorf("%s's CallStats = %v, want %v", name, got, want)
				break
			}
		}
	}
}

// TestCallUnsupported: a callee whose devices speak chat v1 only, or take
// no calls, gives a call that ended as unsupported, never an error; a
// callee with an old and a new device rings on the new one; a callee with
// no live device gives unreachable; a v1 device cannot call.
func TestCallUnsupported(t *testing.T) {
	auth := newTestAuthority(t)
	_, sn := startSupernode(t, auth, SupernodeConfig{})
	alice := newCallDevice(t, auth, sn, "alice", 2)
	carol := newCallDevice(t, auth, sn, "carol", 1)
	newVersionedDevice(t, auth, sn, "dave", 3) // chat v3, but takes no calls
	ctx := testCtx(t)

	for _, callee := range []string{"carol", "dave"} {
		call, err := alice.Call(ctx, callee, legacywire.CallAudio)
		if err != nil {
			t.Fatalf("Call %s: %v", callee, err)
		}
		if got, err := call.Wait(ctx); err != nil || got != CallUnsupported {
			t.Errorf("call to %s ended %q (%v), want %q", callee, got, err, CallUnsupported)
		}
	}
	select {
	case c := <-carol.incoming:
		t.Errorf("the v1 device got call %s", c.ID())
	default:
	}
	// A callee with an old and a new device: the new one rings, the old
	// one is left alone.
	newCallDevice(t, auth, sn, "erin", 1)
	erinNew := newCallDevice(t, auth, sn, "erin", 2)
	mixed, err := alice.Call(ctx, "erin", legacywire.CallAudio)
	if err != nil || mixed.State() != CallRinging {
		t.Fatalf("Call erin = %v, %v; want ringing on her v2 device", mixed, err)
	}
	onErin := erinNew.ring(t)
	if err := mixed.HangUp(ctx); err != nil {
		t.Errorf("HangUp: %v", err)
	}
	wantFinal(t, CallCancelled, map[string]*Call{"alice": mixed, "erin's v2 device": onErin})

	call, err := alice.Call(ctx, "nobody", legacywire.CallAudio)
	if err != nil {
		t.Fatalf("Call nobody: %v", err)
	}
	if got := call.State(); got != CallUnreachable {
		t.Errorf("call to a user without devices = %q, want %q", got, CallUnreachable)
	}
	if _, err := carol.Call(ctx, "alice", legacywire.CallAudio); !errors.Is(err, ErrNotSupported) {
		t.Errorf("a v1 device's Call = %v, want ErrNotSupported", err)
	}
	if _, err := alice.Call(ctx, "carol", "hologram"); err == nil {
		t.Error("Call with an unknown media kind succeeded")
	}
}

// TestCallImpersonation: a peer with a valid certificate of its own
// cannot ring, accept, cancel or open media as another user, nor take
// part in a call it is not in; a stolen certificate is refused at the
// hello. The real call is unharmed.
func TestCallImpersonation(t *testing.T) {
	auth := newTestAuthority(t)
	_, sn := startSupernode(t, auth, SupernodeConfig{})
	alice := newCallDevice(t, auth, sn, "alice", 2, withCallMedia)
	bob := newCallDevice(t, auth, sn, "bob", 2, withCallMedia)
	ctx := testCtx(t)
	call, err := alice.Call(ctx, "bob", legacywire.CallAudio)
	if err != nil {
		t.Fatalf("Call: %v", err)
	}
	onBob := bob.ring(t)

	mallory := newTestHost(t)
	malloryCert := certify(t, auth, mallory, "mallory", legacywire.CapChat1, legacywire.CapChat2)
	send := func(cert legacywire.Certificate, to *Device, typ string, sig legacywire.CallSignal) legacywire.ChatAck {
		t.Helper()
		sig.CallID, sig.At = call.ID(), nowMilli()
		if typ == legacywire.FrameCallInvite {
			sig.Media, sig.RingMillis = legacywire.CallAudio, 1000
		}
		if typ == legacywire.FrameCallCancel {
			sig.Reason = legacywire.CallReasonCancelled
		}
		ack, _, err := SendChatFrame(ctx, mallory, cert, addrInfoOf(to.cfg.Host), 0, legacywire.ChatFrame{Type: typ, ID: "f-" + typ, Call: &sig})
		if err != nil {
			t.Fatalf("send %s: %v", typ, err)
		}
		return ack
	}
	for _, tt := range []struct {
		name string
		cert legacywire.Certificate
		to   *Device
		typ  string
		sig  legacywire.CallSignal
		code string
	}{
		{"accept as bob", malloryCert, alice.Device, legacywire.FrameCallAccept, legacywire.CallSignal{From: "bob", To: "alice"}, legacywire.CodeNotYourFrame},
		{"accept as herself", malloryCert, alice.Device, legacywire.FrameCallAccept, legacywire.CallSignal{From: "mallory", To: "alice"}, legacywire.CodeUnknownCall},
		{"reject as herself", malloryCert, alice.Device, legacywire.FrameCallReject, legacywire.CallSignal{From: "mallory", To: "alice"}, legacywire.CodeUnknownCall},
		{"ring as alice", malloryCert, bob.Device, legacywire.FrameCallInvite, legacywire.CallSignal{From: "alice", To: "bob"}, legacywire.CodeNotYourFrame},
		{"cancel as alice", malloryCert, bob.Device, legacywire.FrameCallCancel, legacywire.CallSignal{From: "alice", To: "bob"}, legacywire.CodeNotYourFrame},
		{"cancel as herself", malloryCert, bob.Device, legacywire.FrameCallCancel, legacywire.CallSignal{From: "mallory", To: "bob"}, legacywire.CodeUnknownCall},
		{"answered elsewhere as herself", malloryCert, bob.Device, legacywire.FrameCallAnsweredElsewhere, legacywire.CallSignal{From: "mallory", To: "bob"}, legacywire.CodeUnknownCall},
		{"invite reusing the call id", malloryCert, bob.Device, legacywire.FrameCallInvite, legacywire.CallSignal{From: "mallory", To: "bob"}, legacywire.CodeUnknownCall},
		{"bob's stolen certificate", bob.cfg.Cert, alice.Device, legacywire.FrameCallAccept, legacywire.CallSignal{From: "bob", To: "alice"}, legacywire.CodePeerMismatch},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if ack := send(tt.cert, tt.to, tt.typ, tt.sig); ack.Delivered() || ack.Code != tt.code {
				t.Errorf("ack = %+v, want refused with %s", ack, tt.code)
			}
		})
	}
	for name, c := range map[string]*Call{"alice": call, "bob": onBob} {
		if got := c.State(); got != CallRinging {
			t.Errorf("%s's call is %q after the attempts, want ringing", name, got)
		}
	}

	// Mallory cannot open the call's media at bob's device either.
	m, err := NewMedia(mallory, MediaConfig{Cert: &malloryCert})
	if err != nil {
		t.Fatal(err)
	}
	if err := onBob.Accept(ctx); err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if ms, err := m.Dial(ctx, addrInfoOf(bob.cfg.Host), call.ID()); !errors.Is(err, ErrRefused) {
		if ms != nil {
			_ = ms.Close()
		}
		t.Errorf("mallory's media dial = %v, want a refusal", err)
	}
	if ev := nextEvent(t, onBob, CallEventMedia); ev.Err != nil || onBob.Media().RemotePeer() != alice.cfg.Host.ID() {
		t.Errorf("bob's media: %v, from %v; want alice's device", ev.Err, onBob.Media())
	}
	if err := call.HangUp(ctx); err != nil {
		t.Errorf("HangUp: %v", err)
	}
	wantFinal(t, CallEnded, map[string]*Call{"alice": call, "bob": onBob})
}

// BenchmarkCallSetup measures a whole call without media (invite, ringing,
// accept, connected, hang-up) between two devices on loopback, next to its
// floor in the same run: one chat message through the same directory and
// chat stack (Device.Send). Compare the two ns/op as a ratio.
func BenchmarkCallSetup(b *testing.B) {
	auth := newTestAuthority(b)
	_, sn := startSupernode(b, auth, SupernodeConfig{})
	alice := newCallDevice(b, auth, sn, "alice", 2)
	bob := newCallDevice(b, auth, sn, "bob", 2, func(c *DeviceConfig) {
		c.OnCall = func(call *Call) { go func() { _ = call.Accept(context.Background()) }() }
		c.OnMessage = nil // the test inbox holds only 100 messages
	})
	ctx := context.Background()
	b.Run("call", func(b *testing.B) {
		for b.Loop() {
			call, err := alice.Call(ctx, "bob", legacywire.CallAudio)
			if err != nil {
				b.Fatal(err)
			}
			nextEvent(b, call, CallEventConnected)
			if err := call.HangUp(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor_message", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := alice.Send(ctx, "bob", "floor"); err != nil {
				b.Fatal(err)
			}
		}
	})
	if got := bob.CallStats()[CallEnded]; got == 0 {
		b.Errorf("bob's device counted no ended calls")
	}
}
