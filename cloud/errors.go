package cloud

import (
	"errors"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Errors the service's storage layer returns; the session maps them to
// error-frame codes at the edge (see errorCode).
var (
	// errForbidden: the session may not do this (ActFor refusal, receipt of
	// someone else's message, As on a user session).
	errForbidden = errors.New("forbidden")
	// errNotFound: a receipt names a message the service does not know.
	errNotFound = errors.New("message not found")
	// errConflict: a message id is already used by another sender.
	errConflict = errors.New("message id used by another sender")
	// errBadRequest: a request is well-formed but inconsistent (Conv does
	// not match the participants, a bridge send without As).
	errBadRequest = errors.New("bad request")
)

// Errors returned to users of Service and Client.
var (
	// ErrShutdown is returned by Service.Run after Shutdown, and is the
	// reason sessions opened during shutdown are refused.
	ErrShutdown = errors.New("cloud: service shut down")
	// ErrClientClosed is returned by Client methods after Close, and by
	// Client.Err when Close ended the connection.
	ErrClientClosed = errors.New("cloud: client closed")
	// ErrProtocol is returned by Dial and Client.Err when the server sent
	// something the client cannot understand.
	ErrProtocol = errors.New("cloud: protocol error")
	// ErrUpgradeRequired is matched (errors.Is) by *UpgradeRequiredError,
	// which Dial and Client.Err return when the service closed with
	// cloudwire.CloseUpgradeRequired: reconnecting with this client
	// version is refused the same way, so callers must not retry.
	ErrUpgradeRequired = errors.New("cloud: upgrade required")
	// ErrUnknownMessage is returned by BridgeLive.PostUndeliverable for
	// a message the service does not know, or a recipient it was not
	// sent to: no retry changes that.
	ErrUnknownMessage = errors.New("cloud: unknown message or recipient")
)

// ServerError is an error frame the server answered a request with.
type ServerError struct {
	Code    string // one of the cloudwire.Code* constants
	Message string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("cloud: server refused: %s: %s", e.Code, e.Message)
}

// CloseError says how the server closed the connection.
type CloseError struct {
	Code int    // WebSocket close code (cloudwire.Close*)
	Text string // the raw close reason
	// Reason is Text parsed as JSON when the server sent a
	// cloudwire.CloseReason (RetryMS on going away).
	Reason cloudwire.CloseReason
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("cloud: connection closed: %d %s", e.Code, e.Text)
}

// UpgradeRequiredError is a close with cloudwire.CloseUpgradeRequired: the
// client version policy refused this client. It matches ErrUpgradeRequired,
// and unwraps to the *CloseError.
type UpgradeRequiredError struct {
	// Reason is the parsed close reason (minimum version, update URL,
	// deadline, notice); a reason that is not JSON is in Reason.Notice.
	Reason cloudwire.UpgradeRequired
	Close  *CloseError
}

func (e *UpgradeRequiredError) Error() string {
	msg := "cloud: upgrade required"
	if e.Reason.Minimum != "" {
		msg += " (minimum " + e.Reason.Minimum + ")"
	}
	if e.Reason.Notice != "" {
		msg += ": " + e.Reason.Notice
	}
	return msg
}

// Is makes errors.Is(err, ErrUpgradeRequired) true.
func (e *UpgradeRequiredError) Is(target error) bool { return target == ErrUpgradeRequired }

// Unwrap returns the close, so errors.As finds the *CloseError too.
func (e *UpgradeRequiredError) Unwrap() error { return e.Close }

// DialError is a handshake the server refused with an HTTP status, before
// the upgrade (401 bad token, 403 origin or role, 503 shutting down or
// too many handshakes in flight).
type DialError struct {
	StatusCode int
	Body       string
	// RetryAfter is the server's Retry-After (on 503); 0 when it sent none.
	RetryAfter time.Duration
}

func (e *DialError) Error() string {
	return fmt.Sprintf("cloud: handshake refused: HTTP %d: %s", e.StatusCode, e.Body)
}
