package migrate

import (
	"slices"
	"time"
)

// Device is one of a user's clients as last seen by Ferry, on either network.
type Device struct {
	// ID is the device id (on the overlay, the device's libp2p peer ID).
	ID string `json:"id"`
	// Platform is the client platform as declared by the device.
	Platform string `json:"platform"`
	// ClientVersion is the self-declared client version.
	ClientVersion string `json:"client_version"`
	// LastSeen is when the device was last active, to the store's resolution.
	LastSeen time.Time `json:"last_seen"`
}

// User is one person's migration record. Values of User are plain data: the
// State and the stores hand out copies, so a caller may change one freely.
type User struct {
	// ID is the user id, the same on the overlay and in the cloud.
	ID string `json:"id"`
	// Phase is the current phase.
	Phase Phase `json:"phase"`
	// PhaseSince is when Phase was entered.
	PhaseSince time.Time `json:"phase_since"`
	// Prior is the stable phase a held or failed user returns to; empty in
	// an active phase.
	Prior Phase `json:"prior,omitempty"`
	// Reason says why the phase was set, for operators.
	Reason string `json:"reason,omitempty"`
	// OpID is the id of the operation that set the phase; repeating that
	// operation changes nothing.
	OpID string `json:"op_id,omitempty"`
	// Devices are the user's known devices.
	Devices []Device `json:"devices,omitempty"`
	// Audit is the audit log's sequence of the event written (before the
	// write) for the last audited transition of this record; other writes
	// keep it. The store follows it to tell the transitions that committed
	// from those whose compare-and-set never landed (migratestore's doc).
	Audit uint64 `json:"audit,omitempty"`
	// Revision is the KV revision of the record; set by the store on read.
	Revision uint64 `json:"revision"`
}

// NewUser returns the record of a user Ferry has not seen before: in phase
// legacy since now.
func NewUser(id string, now time.Time) User {
	return User{ID: id, Phase: PhaseLegacy, PhaseSince: now}
}

// Clone returns a deep copy of u that shares no memory with it.
func (u User) Clone() User {
	u.Devices = slices.Clone(u.Devices)
	return u
}

// CloudHome reports whether the user's inbound home is the cloud: phase cloud
// or finalized, or held or failed after leaving one of those. There is never
// a moment with two homes: every other record's home is the overlay.
func (u User) CloudHome() bool {
	switch u.Phase {
	case PhaseCloud, PhaseFinalized:
		return true
	case PhaseHeld, PhaseFailed:
		return u.Prior.cloudHome()
	}
	return false
}

// Device returns the device with the given id, if the user has it.
func (u User) Device(id string) (Device, bool) {
	for _, d := range u.Devices {
		if d.ID == id {
			return d, true
		}
	}
	return Device{}, false
}
