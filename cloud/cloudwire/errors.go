package cloudwire

import (
	"errors"
	"fmt"
)

// Errors returned by Decode (wrapped in a *FrameError when the frame's type
// and ref could be read) and by the Validate methods.
var (
	// ErrFrameTooLarge is returned by Decode for input over MaxFrameSize.
	ErrFrameTooLarge = errors.New("cloudwire: frame too large")
	// ErrInvalidUTF8 is returned by Decode for input that is not valid UTF-8.
	ErrInvalidUTF8 = errors.New("cloudwire: frame is not valid UTF-8")
	// ErrMalformedFrame is returned by Decode for input that is not a JSON
	// object with a string "type", or whose members have the wrong JSON types.
	ErrMalformedFrame = errors.New("cloudwire: malformed frame")
	// ErrUnknownFrame is returned by Decode for a frame type it does not know.
	ErrUnknownFrame = errors.New("cloudwire: unknown frame type")
	// ErrInvalidField is returned by Validate (and so by Decode) when a
	// member is missing, too long or out of its allowed set.
	ErrInvalidField = errors.New("cloudwire: invalid field")
	// ErrTextTooLong is returned by Send.Validate for text over MaxTextSize.
	ErrTextTooLong = errors.New("cloudwire: text too long")
)

// Errors returned by TokenPolicy.Verify (token.go defines the reasons
// that wrap ErrBadToken).
var (
	// ErrBadToken is returned for a token that is malformed, carries a bad
	// signature or invalid claims, or is not valid yet.
	ErrBadToken = errors.New("cloudwire: bad token")
	// ErrTokenExpired is returned for a well-signed token past its expiry.
	ErrTokenExpired = errors.New("cloudwire: token expired")
)

// FrameError is returned by Decode when the frame's type (and its ref, for
// requests) could be read but the frame is still refused, so that the
// receiver can answer the request it refers to. It wraps one of the
// sentinel errors above.
type FrameError struct {
	Type string // the frame's "type" member
	Ref  string // the frame's "ref" member, if any
	Err  error
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("%s frame: %v", e.Type, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

// invalid builds an ErrInvalidField error naming the field and the reason.
func invalid(field, why string) error {
	return fmt.Errorf("%w: %s %s", ErrInvalidField, field, why)
}
