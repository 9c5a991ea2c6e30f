package legacy

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// This file is the receiving side of call signalling: the frames a device
// takes (onCallFrame), the caller's decisions (first accept wins), the
// callee's state, the table of calls, and the media hand-off.

// onCallFrame takes one call frame addressed to this device's user. The
// chat handler has checked the sender's certificate and that the frame
// speaks for the certificate's user; here the frame must also come from a
// device that is part of the call: the caller's device for cancel,
// answered-elsewhere and the caller's hang-up, an invited device of the
// callee for ringing, accept, reject and the callee's hang-up.
func (d *Device) onCallFrame(from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	sig := *f.Call
	if sig.To != d.User() {
		return refusedAck(f.ID, legacywire.CodeWrongRecipient, fmt.Sprintf("this device serves %q, not %q", d.User(), sig.To))
	}
	pid, err := peer.Decode(from.PeerID)
	if err != nil {
		return refusedAck(f.ID, legacywire.CodeBadCertificate, "certificate peer id does not parse")
	}
	if f.Type == legacywire.FrameCallInvite {
		return d.onInvite(pid, f)
	}
	c := d.calls.get(sig.CallID)
	if c == nil {
		return refusedAck(f.ID, legacywire.CodeUnknownCall, "no call "+sig.CallID+" here")
	}
	if c.outgoing {
		return c.onCalleeFrame(pid, f)
	}
	return c.onCallerFrame(pid, f)
}

// onInvite takes an invite: a new incoming call rings (OnCall), a repeat
// of one already held is acked again.
func (d *Device) onInvite(from peer.ID, f legacywire.ChatFrame) legacywire.ChatAck {
	sig := *f.Call
	if c := d.calls.get(sig.CallID); c != nil {
		if !c.outgoing && c.caller == from && c.peerUser == sig.From {
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
		}
		return refusedAck(f.ID, legacywire.CodeUnknownCall, "call id "+sig.CallID+" is taken")
	}
	if d.cfg.OnCall == nil {
		return refusedAck(f.ID, legacywire.CodeUnsupported, "this device takes no calls")
	}
	c := d.newCall(sig.CallID, sig.From, sig.Media, false, 0)
	c.caller = from
	if !d.calls.add(c) {
		return refusedAck(f.ID, legacywire.CodeUnavailable, "too many calls")
	}
	// The ring guard: a caller that vanished never cancels.
	guard := time.Duration(sig.RingMillis)*time.Millisecond + CallRingGrace
	c.mu.Lock()
	c.timer = time.AfterFunc(guard, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == CallRinging && c.pending == "" {
			c.finishLocked(CallTimeout)
		}
	})
	c.mu.Unlock()
	d.cfg.OnCall(c)
	if c.State() == CallRinging {
		c.tell([]peer.ID{from}, legacywire.FrameCallRinging, "")
	}
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

// onCalleeFrame takes, on an outgoing call, a frame from a device of the
// callee and decides: the first accept wins.
func (c *Call) onCalleeFrame(from peer.ID, f legacywire.ChatFrame) legacywire.ChatAck {
	ok := legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
	c.mu.Lock()
	defer c.mu.Unlock()
	leg := c.legs[from]
	if leg == nil || f.Call.From != c.peerUser {
		return refusedAck(f.ID, legacywire.CodeUnknownCall, "this device was not invited to call "+c.id)
	}
	leg.delivered = true
	lost := func() legacywire.ChatAck {
		if c.winner != "" && c.winner != from {
			return refusedAck(f.ID, legacywire.CodeAnsweredElsewhere, "another device of "+c.peerUser+" accepted the call")
		}
		return refusedAck(f.ID, legacywire.CodeCallEnded, "the call is "+string(c.state))
	}
	switch f.Type {
	case legacywire.FrameCallRinging:
		if !leg.ringing && c.state == CallRinging {
			leg.ringing = true
			c.emit(CallEvent{Type: CallEventRinging, Device: from, State: CallRinging})
		}
		return ok
	case legacywire.FrameCallAccept:
		switch {
		case c.state == CallRinging:
			c.state, c.winner, leg.told = CallConnected, from, true
			c.stopTimerLocked()
			c.emit(CallEvent{Type: CallEventConnected, Device: from, State: CallConnected})
			c.tell(c.untoldLocked(), legacywire.FrameCallAnsweredElsewhere, "")
			c.dialMediaLocked(from)
			return ok
		case c.winner == from && !c.state.Final():
			return ok // a repeat
		}
		return lost()
	case legacywire.FrameCallReject:
		switch {
		case c.state == CallRinging:
			leg.told = true
			c.endRingingLocked(CallRejected)
			return ok
		case c.state == CallRejected:
			return ok // another device rejected too
		}
		return lost()
	case legacywire.FrameCallHangUp:
		switch {
		case c.winner != from:
			return lost()
		case c.state == CallConnected:
			c.finishLocked(CallEnded)
			return ok
		case c.state == CallEnded:
			return ok
		}
		return lost()
	}
	return refusedAck(f.ID, legacywire.CodeUnknownCall, f.Type+" comes from the caller, not the callee")
}

// onCallerFrame takes, on an incoming call, a frame from the caller's
// device.
func (c *Call) onCallerFrame(from peer.ID, f legacywire.ChatFrame) legacywire.ChatAck {
	ok := legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
	c.mu.Lock()
	defer c.mu.Unlock()
	if from != c.caller || f.Call.From != c.peerUser {
		return refusedAck(f.ID, legacywire.CodeUnknownCall, "this device did not place call "+c.id)
	}
	if c.state.Final() {
		return ok // the call is over here already; nothing to change
	}
	switch f.Type {
	case legacywire.FrameCallCancel:
		if c.state == CallRinging {
			c.finishLocked(reasonState(f.Call.Reason))
			return ok
		}
	case legacywire.FrameCallAnsweredElsewhere:
		if c.state == CallRinging {
			c.finishLocked(CallAnsweredElsewhere)
			return ok
		}
	case legacywire.FrameCallHangUp:
		switch {
		case c.state == CallConnected || c.pending == legacywire.FrameCallAccept:
			c.finishLocked(CallEnded)
		default:
			c.finishLocked(CallCancelled)
		}
		return ok
	default:
		return refusedAck(f.ID, legacywire.CodeUnknownCall, f.Type+" comes from the callee, not the caller")
	}
	return refusedAck(f.ID, legacywire.CodeCallEnded, "the call is "+string(c.state)+" here")
}

// reasonState maps a call_cancel's reason to the call's final state.
func reasonState(reason string) CallState {
	switch reason {
	case legacywire.CallReasonRejected:
		return CallRejected
	case legacywire.CallReasonTimeout:
		return CallTimeout
	}
	return CallCancelled
}

// invited records the answer to one invite. A device whose invite
// arrived after the call moved on (answered, cancelled...) is told at once.
func (c *Call) invited(p peer.ID, ack legacywire.ChatAck, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	leg := c.legs[p]
	switch {
	case err == nil && ack.Delivered():
		leg.delivered = true
	case errors.Is(err, ErrNotSupported) || (err == nil && ack.Code == legacywire.CodeUnsupported):
		leg.unsupported = true
		c.d.log.Debug("callee device takes no calls", "call", c.id, "peer", p, "err", err)
	default:
		leg.failed = true
		c.d.log.Debug("call invite failed", "call", c.id, "peer", p, "code", ack.Code, "err", err)
	}
	if leg.delivered && !leg.told && c.state != CallRinging && c.winner != p {
		leg.told = true
		typ, reason := c.noticeLocked()
		c.tell([]peer.ID{p}, typ, reason)
	}
}

// settleInvites ends a call whose invites all failed (unsupported when a
// device of the callee cannot take calls, unreachable otherwise), and
// cancels it when the caller's context ended during the invites.
func (c *Call) settleInvites(cancelled bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != CallRinging {
		return
	}
	live, unsupported := false, false
	for _, l := range c.legs {
		live = live || l.delivered
		unsupported = unsupported || l.unsupported
	}
	switch {
	case !live && unsupported:
		c.finishLocked(CallUnsupported)
	case !live:
		c.finishLocked(CallUnreachable)
	case cancelled:
		c.endRingingLocked(CallCancelled)
	}
}

// endRinging ends an outgoing call that still rings (cancel, timeout) and
// tells every invited device.
func (c *Call) endRinging(state CallState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state == CallRinging {
		c.endRingingLocked(state)
	}
}

// endRingingLocked ends the ringing outgoing call in state and sends a
// call_cancel with the matching reason to every invited device not yet
// told. c.mu is held.
func (c *Call) endRingingLocked(state CallState) {
	c.finishLocked(state)
	typ, reason := c.noticeLocked()
	c.tell(c.untoldLocked(), typ, reason)
}

// noticeLocked is what an invited device that did not answer is told once
// the outgoing call moved on. c.mu is held.
func (c *Call) noticeLocked() (typ, reason string) {
	switch {
	case c.winner != "":
		return legacywire.FrameCallAnsweredElsewhere, ""
	case c.state == CallRejected:
		return legacywire.FrameCallCancel, legacywire.CallReasonRejected
	case c.state == CallTimeout:
		return legacywire.FrameCallCancel, legacywire.CallReasonTimeout
	}
	return legacywire.FrameCallCancel, legacywire.CallReasonCancelled
}

// untoldLocked marks every invited device that has the invite and was not
// told yet as told, and returns them. c.mu is held.
func (c *Call) untoldLocked() []peer.ID {
	var out []peer.ID
	for p, l := range c.legs {
		if l.delivered && !l.told {
			l.told = true
			out = append(out, p)
		}
	}
	return out
}

// dialMediaLocked has the caller open the media stream to the device that
// accepted, in the background, when the device has a media endpoint.
// c.mu is held.
func (c *Call) dialMediaLocked(to peer.ID) {
	m := c.d.media
	if m == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), CallMediaTimeout)
		defer cancel()
		ms, err := m.Dial(ctx, c.d.peerAddrs(to), c.id)
		c.attachMedia(ms, err)
	}()
}

// attachMedia gives the call its media stream (or reports the failed
// dial). A stream for a call that is no longer connected is closed.
func (c *Call) attachMedia(ms *MediaStream, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.d.log.Info("call media not opened", "call", c.id, "err", err)
		c.emit(CallEvent{Type: CallEventMedia, State: c.state, Err: err})
		return
	}
	if c.media != nil || !c.mediaAllowedLocked() {
		_ = ms.Close()
		return
	}
	c.media = ms
	c.emit(CallEvent{Type: CallEventMedia, Device: ms.RemotePeer(), State: c.state})
}

// mediaAllowedLocked reports whether the call takes a media stream: it is
// connected, or this callee's accept is in flight (the caller may dial
// before the accept's ack is back here). c.mu is held.
func (c *Call) mediaAllowedLocked() bool {
	return c.state == CallConnected || (c.state == CallRinging && c.pending == legacywire.FrameCallAccept)
}

// acceptMedia is the device's MediaConfig.Accept: only the caller's
// device of a call this device answered may open its media.
func (d *Device) acceptMedia(from legacywire.Certificate, call string) bool {
	c := d.calls.get(call)
	if c == nil || c.outgoing {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return from.PeerID == c.caller.String() && from.User == c.peerUser && c.mediaAllowedLocked()
}

// onMediaStream is the device's MediaConfig.OnStream.
func (d *Device) onMediaStream(ms *MediaStream) {
	c := d.calls.get(ms.Call())
	if c == nil {
		_ = ms.Close()
		return
	}
	c.attachMedia(ms, nil)
}

// callTable holds a device's calls by id (at most MaxCalls, ended ones
// dropped first) and counts them by outcome.
type callTable struct {
	mu       sync.Mutex
	calls    map[string]*Call
	outcomes map[CallState]uint64
}

func newCallTable() *callTable {
	return &callTable{calls: make(map[string]*Call), outcomes: make(map[CallState]uint64)}
}

func (t *callTable) get(id string) *Call {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.calls[id]
}

// add inserts c unless its id is taken or the table is full of live
// calls.
func (t *callTable) add(c *Call) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, taken := t.calls[c.id]; taken {
		return false
	}
	if len(t.calls) >= MaxCalls {
		for id, o := range t.calls {
			select {
			case <-o.done:
				delete(t.calls, id)
			default:
			}
		}
	}
	if len(t.calls) >= MaxCalls {
		return false
	}
	t.calls[c.id] = c
	return true
}

func (t *callTable) count(s CallState) {
	t.mu.Lock()
	t.outcomes[s]++
	t.mu.Unlock()
}

// CallStats returns how many of this device's calls, outgoing and
// incoming, ended in each final state. A simulator or bridge adds them up
// into its own metrics; the device keeps no global state.
func (d *Device) CallStats() map[CallState]uint64 {
	d.calls.mu.Lock()
	defer d.calls.mu.Unlock()
	out := make(map[CallState]uint64, len(d.calls.outcomes))
	for s, n := range d.calls.outcomes {
		out[s] = n
	}
	return out
}
