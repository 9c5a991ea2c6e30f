package migrate

import (
	"fmt"
	"strings"
	"time"
)

// Op is one command to move a user to another phase.
type Op struct {
	// ID identifies the operation; repeating an operation with the same ID
	// changes nothing. Empty means no idempotency.
	ID string
	// To is the phase asked for.
	To Phase
	// Reason is recorded on the user, for operators.
	Reason string
	// BreakGlass allows the emergency edges (finalized→cloud, and leaving
	// held or failed when no prior phase was recorded).
	BreakGlass bool
	// At is when the operation takes effect; it becomes User.PhaseSince.
	At time.Time
}

// rule is the condition attached to an edge of the transition table.
type rule uint8

const (
	// free edges need nothing more.
	free rule = iota + 1
	// breakGlass edges need Op.BreakGlass.
	breakGlass
	// toPrior edges lead out of held or failed and are open only toward
	// the user's Prior phase.
	toPrior
)

// table is the transition table of DESIGN.md "Migration phases": table[from][to]
// is the rule of the edge, absent when there is none. Staying in the same
// phase is never an edge.
var table = map[Phase]map[Phase]rule{
	PhaseLegacy:    {PhaseShadow: free, PhaseHeld: free, PhaseFailed: free},
	PhaseShadow:    {PhaseLegacy: free, PhaseReady: free, PhaseHeld: free, PhaseFailed: free},
	PhaseReady:     {PhaseCloud: free, PhaseShadow: free, PhaseHeld: free, PhaseFailed: free},
	PhaseCloud:     {PhaseShadow: free, PhaseFinalized: free, PhaseHeld: free, PhaseFailed: free},
	PhaseFinalized: {PhaseCloud: breakGlass, PhaseHeld: free, PhaseFailed: free},
	PhaseHeld: {
		PhaseLegacy: toPrior, PhaseShadow: toPrior, PhaseReady: toPrior,
		PhaseCloud: toPrior, PhaseFinalized: toPrior, PhaseFailed: free,
	},
	PhaseFailed: {
		PhaseLegacy: toPrior, PhaseShadow: toPrior, PhaseReady: toPrior,
		PhaseCloud: toPrior, PhaseFinalized: toPrior,
	},
}

// Allowed reports whether the transition table has an edge from one phase to
// another. Some edges carry a condition that only Apply can check: leaving
// finalized for cloud needs a break-glass operation, and a held or failed user
// may return only to its prior phase.
func Allowed(from, to Phase) bool {
	return table[from][to] != 0
}

// Apply returns the record u would become under op, or the reason it may not.
// It is pure: u is not changed, and the result shares no memory with it.
//
// An op.To that is not a phase gives an error wrapping ErrInvalidPhase. Every
// refusal is a *TransitionError. An operation whose ID is the one that set
// u's phase is a repeat: Apply returns u unchanged when it asked for the
// phase u is in, and refuses it otherwise. Entering held or failed records
// the phase left as Prior (held→failed keeps it); entering an active phase
// clears it. Revision is left to the store.
func Apply(u User, op Op) (User, error) {
	if !op.To.Valid() {
		return User{}, fmt.Errorf("%w %q: want one of %s", ErrInvalidPhase, op.To, phaseList(phases))
	}
	if op.ID != "" && op.ID == u.OpID {
		if u.Phase == op.To {
			return u.Clone(), nil
		}
		return User{}, refuse(u, op.To, fmt.Sprintf("operation id %q already used to move the user to %s", op.ID, u.Phase))
	}
	if u.Phase == op.To {
		return User{}, refuse(u, op.To, "already in that phase "+choices(u))
	}
	switch table[u.Phase][op.To] {
	case free:
	case breakGlass:
		if !op.BreakGlass {
			return User{}, refuse(u, op.To, "only a break-glass operation may take this edge "+choices(u))
		}
	case toPrior:
		switch {
		case u.Prior.Active():
			if op.To != u.Prior {
				return User{}, refuse(u, op.To, fmt.Sprintf("a %s user returns only to its prior phase %s %s", u.Phase, u.Prior, choices(u)))
			}
		case !op.BreakGlass:
			return User{}, refuse(u, op.To, "no prior phase is recorded; only a break-glass operation may choose one "+choices(u))
		}
	default:
		return User{}, refuse(u, op.To, "not an allowed transition "+choices(u))
	}

	next := u.Clone()
	switch {
	case op.To.Active():
		next.Prior = ""
	case u.Phase.Active():
		next.Prior = u.Phase
	}
	next.Phase = op.To
	next.PhaseSince = op.At
	next.Reason = op.Reason
	next.OpID = op.ID
	return next, nil
}

func refuse(u User, to Phase, reason string) *TransitionError {
	return &TransitionError{From: u.Phase, To: to, Reason: reason}
}

// choices describes, in parentheses, where u may go from its phase, for an
// operator reading a refusal.
func choices(u User) string {
	var out []string
	for _, to := range phases {
		switch table[u.Phase][to] {
		case free:
			out = append(out, string(to))
		case breakGlass:
			out = append(out, string(to)+" with break-glass")
		case toPrior:
			if to == u.Prior {
				out = append(out, string(to))
			}
		}
	}
	if len(out) == 0 {
		return fmt.Sprintf("(from %s: nowhere)", u.Phase)
	}
	return fmt.Sprintf("(from %s: %s)", u.Phase, strings.Join(out, ", "))
}
