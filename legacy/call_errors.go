package legacy

import "errors"

var (
	// ErrCallEnded is returned by Call.Accept and Call.Reject when the call
	// is already over on this device or at the caller's (cancelled, timed
	// out, rejected, hung up); Call.State says how it ended.
	ErrCallEnded = errors.New("legacy: call ended")

	// ErrAnsweredElsewhere is returned by Call.Accept and Call.Reject when
	// another device of the callee took the call first.
	ErrAnsweredElsewhere = errors.New("legacy: call answered on another device")

	// ErrTooManyCalls is returned by Device.Call when the device already
	// holds MaxCalls calls that have not ended.
	ErrTooManyCalls = errors.New("legacy: too many calls")
)
