package migrate

import (
	"fmt"
	"strings"
)

// Phase is where a user stands in the migration. Its values are stable: they
// appear in logs, JSON records and metric labels.
type Phase string

// The phases of DESIGN.md "Migration phases". The first five are the active
// phases a user can stay in; held and failed are parking states that remember
// the phase they left (User.Prior).
const (
	// PhaseLegacy: the overlay is authoritative and the inbound home.
	PhaseLegacy Phase = "legacy"
	// PhaseShadow: still on the overlay, everything is dual-written into the
	// cloud and compared.
	PhaseShadow Phase = "shadow"
	// PhaseReady: gates passed; inbound traffic is buffered during the flip.
	PhaseReady Phase = "ready"
	// PhaseCloud: the cloud is authoritative and the inbound home; the
	// overlay is reverse-mirrored so a rollback loses nothing.
	PhaseCloud Phase = "cloud"
	// PhaseFinalized: cloud only; the user's legacy devices are refused.
	PhaseFinalized Phase = "finalized"
	// PhaseHeld: frozen where the user was (User.Prior).
	PhaseHeld Phase = "held"
	// PhaseFailed: back to the last stable phase (User.Prior) with a reason.
	PhaseFailed Phase = "failed"
)

// phases lists every phase in the canonical order.
var phases = []Phase{PhaseLegacy, PhaseShadow, PhaseReady, PhaseCloud, PhaseFinalized, PhaseHeld, PhaseFailed}

// Phases returns all seven phases in the canonical order: the active phases
// in migration order, then held and failed. The slice is the caller's.
func Phases() []Phase {
	return append([]Phase(nil), phases...)
}

// ParsePhase returns the phase named s (exactly, lower case). An unknown name
// gives an error wrapping ErrInvalidPhase that lists the valid names.
func ParsePhase(s string) (Phase, error) {
	p := Phase(s)
	if !p.Valid() {
		return "", fmt.Errorf("%w %q: want one of %s", ErrInvalidPhase, s, phaseList(phases))
	}
	return p, nil
}

// Valid reports whether p is one of the seven phases.
func (p Phase) Valid() bool {
	switch p {
	case PhaseLegacy, PhaseShadow, PhaseReady, PhaseCloud, PhaseFinalized, PhaseHeld, PhaseFailed:
		return true
	}
	return false
}

// Active reports whether p is a phase a user can stay in (legacy, shadow,
// ready, cloud, finalized), as opposed to held, failed or an invalid value.
func (p Phase) Active() bool {
	switch p {
	case PhaseLegacy, PhaseShadow, PhaseReady, PhaseCloud, PhaseFinalized:
		return true
	}
	return false
}

// cloudHome reports whether an active phase has its inbound home in the cloud.
func (p Phase) cloudHome() bool {
	return p == PhaseCloud || p == PhaseFinalized
}

// String returns the phase's name.
func (p Phase) String() string { return string(p) }

func phaseList(ps []Phase) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

// maxUserIDLen bounds user ids so that they stay short NATS subject tokens.
const maxUserIDLen = 64

// CheckUserID returns an error wrapping ErrInvalidUserID unless id is 1 to 64
// characters of [A-Za-z0-9_-]. Ids are used as NATS subject tokens and KV
// keys, where dots, wildcards and spaces would change the meaning.
//
// The system contact's id (NoticesUser) is refused too, with
// ErrReservedUserID: no record, certificate or token may create that user.
func CheckUserID(id string) error {
	if isReservedUserID(id) {
		return fmt.Errorf("%w: %q is the system contact", ErrReservedUserID, id)
	}
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidUserID)
	}
	if len(id) > maxUserIDLen {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrInvalidUserID, len(id), maxUserIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return fmt.Errorf("%w %q: only letters, digits, '_' and '-' are allowed", ErrInvalidUserID, id)
		}
	}
	return nil
}
