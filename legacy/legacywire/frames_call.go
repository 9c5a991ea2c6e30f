package legacywire

import "time"

// Call signalling frame types (ChatFrame.Type), part of chat v2 and v3 (a
// chat v1 stream has no typed frames, so a v1 device is never offered one).
// Every one carries a CallSignal and is acked like any other frame.
//
// The caller's device drives the call: it sends an invite to every live
// device of the callee, and each of those answers it (ringing, then accept
// or reject). The caller's device decides: the first accept wins (its ack
// is delivered; a later one is refused with CodeAnsweredElsewhere), and the
// caller then tells every other invited device that the call was answered
// elsewhere, or, when the call ends before anyone answered, cancels it on
// every device with the reason (cancelled, rejected, timeout).
const (
	// FrameCallInvite: caller's device → each device of the callee. It
	// carries the media kind and the caller's ring timeout.
	FrameCallInvite = "call_invite"
	// FrameCallRinging: a callee's device → the caller's device: the
	// invite rings there.
	FrameCallRinging = "call_ringing"
	// FrameCallAccept: a callee's device → the caller's device. A delivered
	// ack means this device has the call; a refusal with
	// CodeAnsweredElsewhere or CodeCallEnded means it does not.
	FrameCallAccept = "call_accept"
	// FrameCallReject: a callee's device → the caller's device: the callee
	// declines; the call ends as rejected on every device.
	FrameCallReject = "call_reject"
	// FrameCallCancel: the caller's device → each callee's device still
	// ringing: the call ends before an answer, for CallSignal.Reason
	// (CallReasonCancelled, CallReasonRejected, CallReasonTimeout).
	FrameCallCancel = "call_cancel"
	// FrameCallAnsweredElsewhere: the caller's device → each callee's
	// device that did not win: another device of the callee took the call.
	FrameCallAnsweredElsewhere = "call_answered_elsewhere"
	// FrameCallHangUp: either device of an answered call → the other: the
	// call is over.
	FrameCallHangUp = "call_hangup"
)

// Call media kinds (CallSignal.Media).
const (
	CallAudio = "audio"
	CallVideo = "video"
)

// Reasons a call_cancel gives (CallSignal.Reason).
const (
	// CallReasonCancelled: the caller hung up before an answer.
	CallReasonCancelled = "cancelled"
	// CallReasonRejected: a device of the callee declined the call.
	CallReasonRejected = "rejected"
	// CallReasonTimeout: nobody answered within the caller's ring timeout.
	CallReasonTimeout = "timeout"
)

// MaxCallRing bounds CallSignal.RingMillis: ten minutes.
const MaxCallRing = 10 * time.Minute

// CallSignal is the payload of every call frame. CallID is a UUIDv7
// assigned by the caller's device; From is the user the sending device
// speaks for (the caller on invite, cancel, answered-elsewhere; the callee
// on ringing, accept, reject; either on hang-up) and To the other user.
// Media is set on invites; RingMillis, on invites, is how long the caller
// lets the call ring (a callee's device that hears nothing more ends the
// call as timed out a little after it); Reason is set on cancels.
type CallSignal struct {
	CallID     string    `json:"call_id"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Media      string    `json:"media,omitempty"`
	RingMillis int64     `json:"ring_ms,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	At         time.Time `json:"at"`
}

// IsCallFrame reports whether frames of type typ are call signalling.
func IsCallFrame(typ string) bool {
	switch typ {
	case FrameCallInvite, FrameCallRinging, FrameCallAccept, FrameCallReject,
		FrameCallCancel, FrameCallAnsweredElsewhere, FrameCallHangUp:
		return true
	}
	return false
}

// validCallFrame reports whether a call frame's payload is usable: an ID,
// a call ID, both users, a known media kind and a ring time within
// (0, MaxCallRing] on invites, a known reason on cancels. The caller
// checked that exactly the Call payload is set.
func validCallFrame(f ChatFrame) bool {
	c := f.Call
	if c == nil || f.ID == "" || c.CallID == "" || c.From == "" || c.To == "" {
		return false
	}
	switch f.Type {
	case FrameCallInvite:
		return (c.Media == CallAudio || c.Media == CallVideo) &&
			c.RingMillis > 0 && c.RingMillis <= MaxCallRing.Milliseconds()
	case FrameCallCancel:
		return c.Reason == CallReasonCancelled || c.Reason == CallReasonRejected || c.Reason == CallReasonTimeout
	}
	return IsCallFrame(f.Type)
}
