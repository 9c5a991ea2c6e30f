package legacy

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidConfig is returned by the Validate methods and by the
	// constructors that call them.
	ErrInvalidConfig = errors.New("legacy: invalid config")

	// ErrRefused is matched (errors.Is) by every *RefusedError: the remote end
	// understood the request and refused it with a code.
	ErrRefused = errors.New("legacy: refused")

	// ErrNoRoute is returned by Device.Send and Device.SendMessage when the
	// directory knows no live device or route for the recipient.
	ErrNoRoute = errors.New("legacy: no route to user")

	// ErrUndeliverable is returned by Device.Send and Device.SendMessage when
	// no target could be reached (every attempt failed in transport).
	ErrUndeliverable = errors.New("legacy: undeliverable")

	// ErrBadRecord is returned by Lookup.Targets when a record carries a peer
	// ID or an address that does not parse.
	ErrBadRecord = errors.New("legacy: bad directory record")

	// ErrProtocol is returned by the clients (Directory, SendChat) when the
	// remote end answers outside the protocol, for example an ack for another
	// message.
	ErrProtocol = errors.New("legacy: protocol violation")

	// ErrRevoked is wrapped in the errors of certificate checks (supernode,
	// chat handlers) when the authority has revoked the certificate.
	ErrRevoked = errors.New("legacy: certificate revoked")

	// ErrNotSupported is returned by the chat v2 senders (Device.SendReceipt,
	// SendTyping, SubscribePresence, PublishPresence) when no device of the
	// recipient speaks chat v2: the feature degrades to nothing, never to a
	// frame a v1 peer cannot parse.
	ErrNotSupported = errors.New("legacy: peer does not speak this chat version")

	// ErrUpgradeRequired is matched (errors.Is) by every
	// *UpgradeRequiredError: the supernode refused the device because its
	// client version is retired. Retrying changes nothing until the user
	// updates, so callers stop registering.
	ErrUpgradeRequired = errors.New("legacy: upgrade required")

	// ErrBadKeyFile is returned by LoadOrCreateAuthority when the key file
	// exists but does not hold a valid seed.
	ErrBadKeyFile = errors.New("legacy: bad authority key file")
)

// RefusedError is a refusal from the remote end: a supernode's DirResponse
// or a device's ChatAck with a refusal code. It matches ErrRefused.
type RefusedError struct {
	// Code is one of the legacywire refusal codes (legacywire.CodeExpired...).
	Code string
	// Message is the remote's human-readable explanation.
	Message string
}

// Error returns the code and the remote's message.
func (e *RefusedError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("legacy: refused: %s", e.Code)
	}
	return fmt.Sprintf("legacy: refused: %s: %s", e.Code, e.Message)
}

// Is makes errors.Is(err, ErrRefused) true for every refusal.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// UpgradeRequiredError is the supernode's refusal with
// legacywire.CodeUpgradeRequired, returned by the Directory (and so by
// Device.Register). It matches ErrUpgradeRequired and ErrRefused.
type UpgradeRequiredError struct {
	// Notice is the human-readable text for the user: the minimum version,
	// where to update and by when, as the operator's policy words it.
	Notice string
}

// Error returns the notice.
func (e *UpgradeRequiredError) Error() string {
	if e.Notice == "" {
		return "legacy: upgrade required"
	}
	return "legacy: upgrade required: " + e.Notice
}

// Is makes errors.Is true for ErrUpgradeRequired and ErrRefused.
func (e *UpgradeRequiredError) Is(target error) bool {
	return target == ErrUpgradeRequired || target == ErrRefused
}
