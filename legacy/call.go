package legacy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Call timing and bounds.
const (
	// DefaultRingTimeout is DeviceConfig.RingTimeout when zero: how long an
	// outgoing call rings before it ends as CallTimeout on every device.
	DefaultRingTimeout = 30 * time.Second
	// CallRingGrace is how long after the caller's ring timeout a callee's
	// device that heard nothing more (the caller vanished) ends the call
	// as CallTimeout on its own.
	CallRingGrace = 5 * time.Second
	// CallMediaTimeout bounds the caller's media dial after an accept.
	CallMediaTimeout = 30 * time.Second
	// MaxCalls bounds the calls a device holds, ended ones included (they
	// are forgotten first when the table is full): a late frame for a
	// remembered call gets call_ended rather than unknown_call.
	MaxCalls = 256
)

// CallState is where a call stands on one device. Ringing and connected
// are live; every other state is final and the call's Done channel is
// closed.
type CallState string

// Call states.
const (
	// CallRinging: invited, nobody answered yet.
	CallRinging CallState = "ringing"
	// CallConnected: a device of the callee accepted; media may flow.
	CallConnected CallState = "connected"
	// CallEnded: the call was answered, then hung up by either side.
	CallEnded CallState = "ended"
	// CallRejected: a device of the callee declined the call.
	CallRejected CallState = "rejected"
	// CallCancelled: the caller hung up before an answer.
	CallCancelled CallState = "cancelled"
	// CallTimeout: nobody answered within the ring timeout.
	CallTimeout CallState = "timeout"
	// CallAnsweredElsewhere: another device of the callee took the call
	// (the state of the callee's other devices).
	CallAnsweredElsewhere CallState = "answered_elsewhere"
	// CallUnsupported: no device of the callee can take calls (chat v1
	// only, or a peer that does not serve calls, such as a bridge).
	CallUnsupported CallState = "unsupported"
	// CallUnreachable: the callee has no live device, or none could be
	// reached.
	CallUnreachable CallState = "unreachable"
	// CallFailed: signalling with the other device broke (it could not be
	// told, or answered outside the protocol).
	CallFailed CallState = "failed"
)

// CallStates lists every state, live ones first.
var CallStates = []CallState{CallRinging, CallConnected, CallEnded, CallRejected, CallCancelled, CallTimeout,
	CallAnsweredElsewhere, CallUnsupported, CallUnreachable, CallFailed}

// Valid reports whether s is one of the CallStates.
func (s CallState) Valid() bool {
	for _, v := range CallStates {
		if s == v {
			return true
		}
	}
	return false
}

// Final reports whether the call is over in state s.
func (s CallState) Final() bool { return s.Valid() && s != CallRinging && s != CallConnected }

// Call event types (CallEvent.Type).
const (
	// CallEventRinging: a device of the callee rings (outgoing calls, once
	// per device).
	CallEventRinging = "ringing"
	// CallEventConnected: the call was answered (Device names the
	// answering device on outgoing calls).
	CallEventConnected = "connected"
	// CallEventMedia: the media stream is open (Call.Media), or could not
	// be opened (Err).
	CallEventMedia = "media"
	// CallEventEnded: the call reached its final State.
	CallEventEnded = "ended"
)

// CallEvent is one step of a call, in the order this device saw it.
type CallEvent struct {
	Type   string
	Device peer.ID
	State  CallState
	Err    error
}

// Call is one call on one device, outgoing (Device.Call) or incoming
// (DeviceConfig.OnCall). Its methods are safe for concurrent use.
type Call struct {
	d        *Device
	id       string
	peerUser string // the other user
	kind     string
	outgoing bool
	events   chan CallEvent
	done     chan struct{}

	mu      sync.Mutex
	state   CallState
	timer   *time.Timer
	media   *MediaStream
	legs    map[peer.ID]*callLeg // outgoing: the callee's invited devices
	winner  peer.ID              // outgoing: the device that accepted
	caller  peer.ID              // incoming: the caller's device
	pending string               // incoming: the answer frame in flight
}

// callLeg is one invited device of an outgoing call.
type callLeg struct {
	delivered   bool // the device has the invite (its ack, or a frame from it)
	ringing     bool
	unsupported bool
	failed      bool
	told        bool // the device was told how the call went for it
}

// ID returns the call's id (a UUIDv7 chosen by the caller's device).
func (c *Call) ID() string { return c.id }

// Peer returns the other user: the callee of an outgoing call, the caller
// of an incoming one.
func (c *Call) Peer() string { return c.peerUser }

// Kind returns the call's media kind (legacywire.CallAudio or CallVideo).
func (c *Call) Kind() string { return c.kind }

// Outgoing reports whether this device placed the call.
func (c *Call) Outgoing() bool { return c.outgoing }

// Events returns the call's events. The channel is buffered for every
// event a call can have, so a reader may come late; it is never closed
// (Done is).
func (c *Call) Events() <-chan CallEvent { return c.events }

// Done is closed when the call reaches a final state.
func (c *Call) Done() <-chan struct{} { return c.done }

// State returns the call's current state.
func (c *Call) State() CallState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Media returns the call's media stream once it is open (after an answer,
// with DeviceConfig.Media set), or nil. The call closes it when it ends.
func (c *Call) Media() *MediaStream {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.media
}

// Wait blocks until the call ends or ctx is done, and returns the state.
func (c *Call) Wait(ctx context.Context) (CallState, error) {
	select {
	case <-c.done:
		return c.State(), nil
	case <-ctx.Done():
		return c.State(), ctx.Err()
	}
}

// Call places a call to user to: it looks the user up and sends an
// invite (media kind legacywire.CallAudio or CallVideo) to every live
// device of theirs, in parallel, and returns once each invite was acked or
// failed. The call then rings until a device accepts (the first accept
// wins; the others get answered-elsewhere), a device rejects, the caller
// hangs up (HangUp) or DeviceConfig.RingTimeout passes; every device ends
// in the same state.
//
// What the callee cannot do is an outcome, not an error: a callee whose
// devices speak chat v1 only (or a peer that serves no calls) gives a call
// already ended as CallUnsupported, one without a live device
// CallUnreachable. Errors are for this device's side: a chat v1 device
// (ErrNotSupported), a bad kind, a failed lookup, ErrTooManyCalls. When
// ctx ends before every invite was answered, the call is cancelled.
func (d *Device) Call(ctx context.Context, to, kind string) (*Call, error) {
	switch {
	case d.cfg.MaxChatVersion == 1:
		return nil, fmt.Errorf("%w: this device speaks chat v1 only", ErrNotSupported)
	case kind != legacywire.CallAudio && kind != legacywire.CallVideo:
		return nil, fmt.Errorf("legacy: unknown call media %q", kind)
	case to == "":
		return nil, errors.New("legacy: call needs a callee")
	}
	targets, err := d.targetsOf(ctx, to)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("call id: %w", err)
	}
	c := d.newCall(id.String(), to, kind, true, len(targets))
	for _, t := range targets {
		c.legs[t.ID] = &callLeg{}
	}
	if !d.calls.add(c) {
		return nil, fmt.Errorf("%w: %d held", ErrTooManyCalls, MaxCalls)
	}
	if len(targets) == 0 {
		c.mu.Lock()
		c.finishLocked(CallUnreachable)
		c.mu.Unlock()
		return c, nil
	}
	ring := d.ringTimeout()
	c.mu.Lock()
	c.timer = time.AfterFunc(ring, func() { c.endRinging(CallTimeout) })
	c.mu.Unlock()
	invite := c.signal("")
	invite.Media, invite.RingMillis = kind, ring.Milliseconds()
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() {
			ack, err := d.sendCall(ctx, t, legacywire.FrameCallInvite, invite)
			c.invited(t.ID, ack, err)
		})
	}
	wg.Wait()
	c.settleInvites(ctx.Err() != nil)
	return c, nil
}

// Accept answers an incoming ringing call: the caller's device decides,
// and only the first device of the callee to accept gets the call (the
// caller then opens the media stream, with DeviceConfig.Media set). It
// returns ErrAnsweredElsewhere when another device was first, ErrCallEnded
// when the call is over, and the transport error when the caller's device
// cannot be reached (the call then ends as CallFailed).
func (c *Call) Accept(ctx context.Context) error {
	return c.answer(ctx, legacywire.FrameCallAccept)
}

// Reject declines an incoming ringing call: it ends as CallRejected on
// every device. Errors are as for Accept, except that a caller's device
// that cannot be reached still leaves the call rejected here.
func (c *Call) Reject(ctx context.Context) error {
	return c.answer(ctx, legacywire.FrameCallReject)
}

// HangUp ends the call from this device, whatever its state: an outgoing
// call still ringing is cancelled on every device of the callee; a
// ringing incoming call is rejected (Reject); an answered call is hung up
// on both ends. The call is over here when HangUp returns, even when the
// other device could not be told (the error says so). Hanging up an ended
// call does nothing.
func (c *Call) HangUp(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.state.Final():
		c.mu.Unlock()
		return nil
	case c.state == CallRinging && !c.outgoing:
		c.mu.Unlock()
		return c.Reject(ctx)
	case c.state == CallRinging:
		c.mu.Unlock()
		c.endRinging(CallCancelled)
		return nil
	}
	to := c.caller
	if c.outgoing {
		to = c.winner
	}
	c.finishLocked(CallEnded)
	c.mu.Unlock()
	ack, err := c.d.sendCall(ctx, c.d.peerAddrs(to), legacywire.FrameCallHangUp, c.signal(""))
	if err == nil && !ack.Delivered() && ack.Code != legacywire.CodeCallEnded {
		err = &RefusedError{Code: ack.Code, Message: ack.Error}
	}
	if err != nil {
		return fmt.Errorf("tell %s the call is over: %w", to, err)
	}
	return nil
}

// answer sends an incoming call's accept or reject to the caller's device
// and settles the call from its ack.
func (c *Call) answer(ctx context.Context, typ string) error {
	c.mu.Lock()
	switch {
	case c.outgoing:
		c.mu.Unlock()
		return fmt.Errorf("legacy: %s on an outgoing call", typ)
	case c.state == CallRejected && typ == legacywire.FrameCallReject:
		c.mu.Unlock()
		return nil // another device of the callee rejected it already
	case c.state != CallRinging:
		defer c.mu.Unlock()
		return c.stateErr()
	case c.pending != "":
		c.mu.Unlock()
		return fmt.Errorf("legacy: %s while a %s is in flight", typ, c.pending)
	}
	c.pending = typ
	c.mu.Unlock()

	ack, err := c.d.sendCall(ctx, c.d.peerAddrs(c.caller), typ, c.signal(""))

	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending = ""
	reject := typ == legacywire.FrameCallReject
	switch {
	case c.state.Final():
		// The caller's cancel, answered-elsewhere or hang-up came first.
		if reject && c.state == CallRejected {
			return nil
		}
		return c.stateErr()
	case err != nil:
		if reject {
			c.finishLocked(CallRejected)
		} else {
			c.finishLocked(CallFailed)
		}
		return fmt.Errorf("%s to %s: %w", typ, c.caller, err)
	case ack.Delivered() && reject:
		c.finishLocked(CallRejected)
	case ack.Delivered():
		c.state = CallConnected
		c.stopTimerLocked()
		c.emit(CallEvent{Type: CallEventConnected, Device: c.d.cfg.Host.ID(), State: CallConnected})
	case ack.Code == legacywire.CodeAnsweredElsewhere:
		c.finishLocked(CallAnsweredElsewhere)
		return ErrAnsweredElsewhere
	case ack.Code == legacywire.CodeCallEnded:
		// The caller's call_cancel, with its reason, is on its way; the
		// ring guard settles the call if it never comes.
		return fmt.Errorf("%w at the caller's", ErrCallEnded)
	default:
		c.finishLocked(CallFailed)
		return &RefusedError{Code: ack.Code, Message: ack.Error}
	}
	return nil
}

// stateErr is the error for answering a call in a state that takes no
// answer. c.mu is held.
func (c *Call) stateErr() error {
	if c.state == CallAnsweredElsewhere {
		return ErrAnsweredElsewhere
	}
	return fmt.Errorf("%w: %s", ErrCallEnded, c.state)
}

// newCall makes a call of this device with room for every event it can
// have (one ringing per invited device, connected, media, ended).
func (d *Device) newCall(id, peerUser, kind string, outgoing bool, legs int) *Call {
	c := &Call{d: d, id: id, peerUser: peerUser, kind: kind, outgoing: outgoing, state: CallRinging,
		events: make(chan CallEvent, legs+4), done: make(chan struct{})}
	if outgoing {
		c.legs = make(map[peer.ID]*callLeg, legs)
	}
	return c
}

// signal returns the call's signal from this device's user to the other.
func (c *Call) signal(reason string) legacywire.CallSignal {
	return legacywire.CallSignal{CallID: c.id, From: c.d.User(), To: c.peerUser, Reason: reason, At: nowMilli()}
}

// emit queues ev; the channel has room for every event of the call.
func (c *Call) emit(ev CallEvent) {
	select {
	case c.events <- ev:
	default:
		c.d.log.Error("call event dropped", "call", c.id, "type", ev.Type)
	}
}

func (c *Call) stopTimerLocked() {
	if c.timer != nil {
		c.timer.Stop()
	}
}

// finishLocked ends the call in state: it stops the timer, closes the
// media stream and Done, emits the ended event and counts the outcome.
// c.mu is held.
func (c *Call) finishLocked(state CallState) {
	if c.state.Final() {
		return
	}
	c.state = state
	c.stopTimerLocked()
	if c.media != nil {
		_ = c.media.Close()
	}
	close(c.done)
	c.emit(CallEvent{Type: CallEventEnded, State: state})
	c.d.calls.count(state)
	c.d.log.Debug("call ended", "call", c.id, "outgoing", c.outgoing, "state", state)
}

// sendCall sends one call frame to a device and returns its ack.
func (d *Device) sendCall(ctx context.Context, to peer.AddrInfo, typ string, sig legacywire.CallSignal) (legacywire.ChatAck, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return legacywire.ChatAck{}, fmt.Errorf("frame id: %w", err)
	}
	ack, _, err := SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, to, d.cfg.MaxChatVersion, legacywire.ChatFrame{Type: typ, ID: id.String(), Call: &sig})
	return ack, err
}

// tell sends typ (with reason) to each device in the background, each send
// bounded by ChatRoundTripTimeout. Failures are logged: the devices' own
// ring guard ends their call if the frame never arrives.
func (c *Call) tell(to []peer.ID, typ, reason string) {
	sig := c.signal(reason)
	for _, p := range to {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), ChatRoundTripTimeout)
			defer cancel()
			ack, err := c.d.sendCall(ctx, c.d.peerAddrs(p), typ, sig)
			if err == nil && !ack.Delivered() {
				err = &RefusedError{Code: ack.Code, Message: ack.Error}
			}
			if err != nil {
				c.d.log.Debug("call signal not taken", "call", c.id, "type", typ, "peer", p, "err", err)
			}
		}()
	}
}

func (d *Device) ringTimeout() time.Duration {
	switch r := d.cfg.RingTimeout; {
	case r <= 0:
		return DefaultRingTimeout
	case r > legacywire.MaxCallRing:
		return legacywire.MaxCallRing
	default:
		return r
	}
}
