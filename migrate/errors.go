package migrate

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound is returned by stores (migratestore.Store.Get) when no
	// record exists for a user id.
	ErrNotFound = errors.New("migrate: user not found")

	// ErrConflict is returned by stores (migratestore.Store.Transition and
	// SeeDevice) when their compare-and-set lost to concurrent writers more
	// times than they are configured to retry.
	ErrConflict = errors.New("migrate: too many concurrent updates")

	// ErrInvalidPhase is returned by ParsePhase for an unknown phase name and
	// by Apply when an operation targets one.
	ErrInvalidPhase = errors.New("migrate: invalid phase")

	// ErrInvalidUserID is returned by CheckUserID, and by every store method
	// that takes a user id, for an id that cannot be a KV key and subject
	// token.
	ErrInvalidUserID = errors.New("migrate: invalid user id")

	// ErrReservedUserID is returned by CheckUserID (and so by every caller
	// that checks ids) for the system contact's id, NoticesUser. It matches
	// ErrInvalidUserID too.
	ErrReservedUserID = fmt.Errorf("%w: reserved for the system", ErrInvalidUserID)

	// ErrInvalidDevice is returned by stores (migratestore.Store.SeeDevice,
	// migratestore.Revocations) for a device without a usable id.
	ErrInvalidDevice = errors.New("migrate: invalid device")

	// ErrRepeated is the result a batch mover (BatchMover, AuditedMover)
	// gives an op whose id is the one that already set the user's phase:
	// nothing was written, the move it repeats counted and was audited
	// when it landed. A driver that retries a tick, or takes a campaign
	// over from an agent whose last moves its State has not seen yet,
	// meets these; they are not moves.
	ErrRepeated = errors.New("migrate: operation already applied")

	// ErrIllegalTransition is matched (errors.Is) by every *TransitionError
	// that Apply, and the stores that call it, return.
	ErrIllegalTransition = errors.New("migrate: illegal transition")
)

// TransitionError is returned by Apply, and by the stores that call it, when
// an operation may not move a user from one phase to another. It matches
// ErrIllegalTransition with errors.Is; use errors.As to read the phases.
type TransitionError struct {
	// From is the user's phase when the operation was refused.
	From Phase
	// To is the phase the operation asked for.
	To Phase
	// Reason says why, in words meant for an operator.
	Reason string
}

// Error returns a sentence such as "cannot move user from legacy to cloud:
// not an allowed transition (from legacy: shadow, held, failed)".
func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot move user from %s to %s: %s", e.From, e.To, e.Reason)
}

// Is reports whether target is ErrIllegalTransition, so that callers can branch
// on refusals without errors.As.
func (e *TransitionError) Is(target error) bool {
	return target == ErrIllegalTransition
}
