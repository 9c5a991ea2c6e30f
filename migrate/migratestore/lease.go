package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// driverLeaseKey holds the campaign driver's lease in the campaign bucket.
const driverLeaseKey = "control.driver_lease"

// Leases keeps the campaign driver's lease in the campaign bucket. Acquire
// and Release are compare-and-sets on the key's revision: of two drivers
// racing for a free or expired lease, exactly one wins.
type Leases struct {
	kv jetstream.KeyValue
}

var _ migrate.LeaseStore = (*Leases)(nil)

// Leases returns the lease store that shares the campaign bucket.
func (s *Campaigns) Leases() *Leases { return &Leases{kv: s.kv} }

// Get returns the current lease (a zero Lease when none was ever taken).
func (l *Leases) Get(ctx context.Context) (migrate.Lease, error) {
	e, err := l.kv.Get(ctx, driverLeaseKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return migrate.Lease{}, nil
	}
	if err != nil {
		return migrate.Lease{}, fmt.Errorf("migratestore: read driver lease: %w", err)
	}
	return decodeLease(e)
}

// Acquire implements migrate.LeaseStore.
func (l *Leases) Acquire(ctx context.Context, holder string, now time.Time, ttl time.Duration) (migrate.Lease, error) {
	if holder == "" || ttl <= 0 {
		return migrate.Lease{}, errors.New("migratestore: Acquire needs a holder and a positive TTL")
	}
	cur, err := l.Get(ctx)
	if err != nil {
		return migrate.Lease{}, err
	}
	if cur.HeldAt(now) && cur.Holder != holder {
		return cur, fmt.Errorf("migratestore: driver lease: %s until %s: %w", cur.Holder, cur.Expires.Format(time.RFC3339), migrate.ErrLeaseHeld)
	}
	next := migrate.Lease{Holder: holder, Acquired: now.UTC(), Expires: now.Add(ttl).UTC()}
	if cur.Holder == holder && cur.HeldAt(now) {
		next.Acquired = cur.Acquired // a renewal
	}
	data, err := json.Marshal(next)
	if err != nil {
		return migrate.Lease{}, err
	}
	var rev uint64
	if cur.Revision == 0 {
		rev, err = l.kv.Create(ctx, driverLeaseKey, data)
	} else {
		rev, err = l.kv.Update(ctx, driverLeaseKey, data, cur.Revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// Another driver wrote first: report what it wrote.
		won, gerr := l.Get(ctx)
		if gerr != nil {
			return migrate.Lease{}, gerr
		}
		return won, fmt.Errorf("migratestore: driver lease taken by %s: %w", won.Holder, migrate.ErrLeaseHeld)
	}
	if err != nil {
		return migrate.Lease{}, fmt.Errorf("migratestore: write driver lease: %w", err)
	}
	next.Revision = rev
	return next, nil
}

// Release implements migrate.LeaseStore: it expires holder's lease now. A
// lease held by someone else is left alone.
func (l *Leases) Release(ctx context.Context, holder string) error {
	cur, err := l.Get(ctx)
	if err != nil || cur.Holder != holder {
		return err
	}
	cur.Expires = cur.Acquired // in the past for everyone
	data, err := json.Marshal(cur)
	if err != nil {
		return err
	}
	if _, err := l.kv.Update(ctx, driverLeaseKey, data, cur.Revision); err != nil &&
		!errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("migratestore: release driver lease: %w", err)
	}
	return nil
}

func decodeLease(e jetstream.KeyValueEntry) (migrate.Lease, error) {
	var l migrate.Lease
	if err := json.Unmarshal(e.Value(), &l); err != nil {
		return migrate.Lease{}, fmt.Errorf("migratestore: decode driver lease: %w", err)
	}
	l.Revision = e.Revision()
	return l, nil
}
