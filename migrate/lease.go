package migrate

import (
	"context"
	"errors"
	"time"
)

// DefaultLeaseTTL is how long a driver lease lasts without renewal. The
// holder renews it at every tick (DefaultDriverTick), so a holder that dies
// is replaced within one TTL plus one tick of the others.
const DefaultLeaseTTL = 15 * time.Second

// ErrLeaseHeld is returned by lease stores (migratestore.Leases.Acquire)
// when another holder's lease has not expired; the error's Lease says who.
var ErrLeaseHeld = errors.New("migrate: lease held by another driver")

// Lease says which driver may move users: with several agents on one NATS,
// exactly one holds it at a time (DESIGN.md "Durable and safe").
type Lease struct {
	// Holder identifies the agent's driver (host, process and a random
	// suffix), as shown in the admin status.
	Holder string `json:"holder"`
	// Acquired is when Holder took the lease (renewals keep it).
	Acquired time.Time `json:"acquired"`
	// Expires is when the lease lapses unless renewed, by the holder's
	// clock. Agents' clocks must agree to well within the TTL.
	Expires time.Time `json:"expires"`
	// Revision is the store's revision, set on read.
	Revision uint64 `json:"revision"`
}

// HeldAt reports whether the lease is held at now.
func (l Lease) HeldAt(now time.Time) bool { return l.Holder != "" && now.Before(l.Expires) }

// LeaseStore keeps the driver lease durably (migratestore.Leases). Every
// write is a compare-and-set, so two drivers never both win.
type LeaseStore interface {
	// Acquire takes the lease for holder until now+ttl when it is free,
	// expired, or already holder's (a renewal). Otherwise it returns the
	// current lease and an error wrapping ErrLeaseHeld.
	Acquire(ctx context.Context, holder string, now time.Time, ttl time.Duration) (Lease, error)
	// Release gives the lease up if holder holds it, so that another
	// driver takes over at its next tick instead of after the TTL.
	Release(ctx context.Context, holder string) error
}
