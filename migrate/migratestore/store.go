package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// DeviceSeenResolution is how far a device's LastSeen must advance before
// SeeDevice writes it: devices report activity all the time, and one KV write
// per sign-in would dwarf the migration's own writes. Gates that ask "was the
// device active recently" work in days, so ten minutes loses nothing.
const DeviceSeenResolution = 10 * time.Minute

// timeResolution is the precision of stored times: DESIGN.md has JSON carry
// RFC 3339 with milliseconds, in UTC.
const timeResolution = time.Millisecond

// maxBackoff bounds the jittered pause between compare-and-set attempts.
const maxBackoff = 20 * time.Millisecond

// Store keeps migration records in a JetStream KV bucket and mirrors the
// bucket into a migrate.State. It is safe for concurrent use.
type Store struct {
	kv  jetstream.KeyValue
	js  jetstream.JetStream // TransitionMany publishes to the bucket's stream
	st  *migrate.State
	cfg Config
	log *slog.Logger

	running   atomic.Bool
	ready     chan struct{}
	readyOnce sync.Once
	// corrupt counts the records the watch could not decode.
	corrupt atomic.Uint64
	// local notes the writes TransitionMany puts into st itself, for the
	// watch to skip.
	local localWrites
	// audit is where TransitionManyAudited writes its events.
	audit *Audit
}

// New creates the bucket, or updates its configuration, and returns a Store
// that writes to it and feeds st. Call Run to start feeding st.
func New(ctx context.Context, js jetstream.JetStream, st *migrate.State, cfg Config) (*Store, error) {
	if js == nil || st == nil {
		return nil, errors.New("migratestore: New needs a JetStream and a State")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "Ferry per-user migration records (key: user id, value: JSON of migrate.User)",
		History:     uint8(cfg.History), // #nosec G115 -- Validate keeps it within 1..64
		Replicas:    cfg.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("migratestore: bucket %s: %w", cfg.Bucket, err)
	}
	audit, err := NewAudit(ctx, js, cfg.AuditStream, cfg.Replicas)
	if err != nil {
		return nil, err
	}
	audit.bucket = cfg.Bucket
	return &Store{kv: kv, js: js, st: st, cfg: cfg, log: cfg.Logger, ready: make(chan struct{}), audit: audit}, nil
}

// Ready is closed once Run has put every record that was in the bucket when
// its watch started into the State.
func (s *Store) Ready() <-chan struct{} {
	return s.ready
}

// Get reads the user's record from the bucket (not from the State), or
// returns an error wrapping migrate.ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (migrate.User, error) {
	if err := migrate.CheckUserID(id); err != nil {
		return migrate.User{}, err
	}
	u, found, err := s.load(ctx, id)
	if err != nil {
		return migrate.User{}, err
	}
	if !found {
		return migrate.User{}, fmt.Errorf("migratestore: user %s: %w", id, migrate.ErrNotFound)
	}
	return u, nil
}

// Transition applies op to the user's record with a compare-and-set, creating
// the record (in phase legacy) when the user is new. A zero op.At means now;
// times are stored in UTC to the millisecond. Repeating an operation id that
// already set the user's phase writes nothing and returns the stored record.
// Refusals are *migrate.TransitionError; losing the compare-and-set more than
// MaxRetries times gives migrate.ErrConflict.
//
// The returned record carries its new Revision and is already in the State.
func (s *Store) Transition(ctx context.Context, id string, op migrate.Op) (migrate.User, error) {
	u, _, err := s.transition(ctx, id, op, nil)
	return u, err
}

// TransitionAudited is Transition writing ev, the change's audit event, to
// the audit log as the intent of each compare-and-set it sends, before
// sending it, on the user's chain (see Audit), as TransitionManyAudited does
// for the driver's moves: the admin API's manual changes go through it, so
// that a kill between the two writes can neither lose the event of a change
// that landed nor leave one for a change that did not. The event gets the
// user and the phase the user is moved from. A repeat or a refusal writes
// no event: the caller records a refusal itself.
func (s *Store) TransitionAudited(ctx context.Context, id string, op migrate.Op, ev migrate.AuditEvent) (migrate.User, error) {
	u, _, err := s.transition(ctx, id, op, &ev)
	return u, err
}

// transition is Transition, writing ev (when not nil) to the audit log as
// the intent of every compare-and-set it sends (see TransitionManyAudited).
// repeated says op had set the user's phase before: nothing was written.
func (s *Store) transition(ctx context.Context, id string, op migrate.Op, ev *migrate.AuditEvent) (u migrate.User, repeated bool, err error) {
	if err := migrate.CheckUserID(id); err != nil {
		return migrate.User{}, false, err
	}
	if op.At.IsZero() {
		op.At = s.cfg.Now()
	}
	op.At = stamp(op.At)
	var intent func(cur migrate.User, next *migrate.User) error
	if ev != nil {
		intent = func(cur migrate.User, next *migrate.User) error {
			seq, err := s.audit.intend(ctx, ev, cur)
			next.Audit = seq
			return err
		}
	}
	u, err = s.update(ctx, id, op.At, func(cur migrate.User) (migrate.User, bool, error) {
		next, err := migrate.Apply(cur, op)
		if err != nil {
			return migrate.User{}, false, err
		}
		repeated = op.ID != "" && op.ID == cur.OpID // the last try's answer counts
		if !repeated && ev != nil && ev.Actor != migrate.ActorDriver {
			// A manual change keyed by the operation of an earlier change
			// of the user (a command retried after another change) would
			// undo what changed since. (The driver's operations are
			// decisions of one tick; one it sends again goes through the
			// state machine as before.)
			stale, err := s.audit.appliedBefore(ctx, cur.Audit, op.ID, id)
			if err != nil {
				return migrate.User{}, false, err
			}
			if stale {
				return migrate.User{}, false, fmt.Errorf("operation %s was applied before the last change (operation %s): %w", op.ID, cur.OpID, migrate.ErrConflict)
			}
		}
		return next, !repeated, nil
	}, intent)
	if err != nil {
		s.log.Debug("transition refused", "user", id, "to", op.To, "op", op.ID, "err", err)
		return migrate.User{}, false, err
	}
	return u, repeated, nil
}

// SeeDevice records that the user's device was active, creating the user (in
// phase legacy) when new. It writes only when the device is new, its platform
// or client version changed, or its LastSeen advanced by more than
// DeviceSeenResolution; otherwise it returns the stored record unchanged. A
// zero d.LastSeen means now. Writes are compare-and-set, as in Transition.
func (s *Store) SeeDevice(ctx context.Context, id string, d migrate.Device) (migrate.User, error) {
	if err := migrate.CheckUserID(id); err != nil {
		return migrate.User{}, err
	}
	if d.ID == "" {
		return migrate.User{}, fmt.Errorf("migratestore: user %s: %w: empty device id", id, migrate.ErrInvalidDevice)
	}
	now := stamp(s.cfg.Now())
	if d.LastSeen.IsZero() {
		d.LastSeen = now
	}
	d.LastSeen = stamp(d.LastSeen)
	return s.update(ctx, id, now, func(cur migrate.User) (migrate.User, bool, error) {
		i := slices.IndexFunc(cur.Devices, func(x migrate.Device) bool { return x.ID == d.ID })
		if i >= 0 {
			old := cur.Devices[i]
			if old.Platform == d.Platform && old.ClientVersion == d.ClientVersion &&
				d.LastSeen.Sub(old.LastSeen) <= DeviceSeenResolution {
				return cur, false, nil
			}
		}
		next := cur.Clone()
		if i < 0 {
			next.Devices = append(next.Devices, d)
			slices.SortFunc(next.Devices, func(a, b migrate.Device) int { return strings.Compare(a.ID, b.ID) })
			return next, true, nil
		}
		nd := d
		if nd.LastSeen.Before(next.Devices[i].LastSeen) {
			nd.LastSeen = next.Devices[i].LastSeen // reports may arrive out of order
		}
		next.Devices[i] = nd
		return next, true, nil
	}, nil)
}

// changeFunc computes the record to write from the current one; write false
// means nothing changes and cur is the answer.
type changeFunc func(cur migrate.User) (next migrate.User, write bool, err error)

// update runs the compare-and-set loop shared by every change: read, change,
// write at the read revision, and start over when another writer got there
// first. intent, when not nil, runs before each write (after the change),
// and may set fields of the record to write; its error ends the loop.
func (s *Store) update(ctx context.Context, id string, now time.Time, change changeFunc, intent func(cur migrate.User, next *migrate.User) error) (migrate.User, error) {
	for attempt := range s.cfg.MaxRetries {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return migrate.User{}, fmt.Errorf("migratestore: user %s: %w", id, err)
			}
		}
		cur, found, err := s.load(ctx, id)
		if err != nil {
			return migrate.User{}, err
		}
		if known, ok := s.st.Get(id); ok && found && cur.Revision < known.Revision {
			// A KV get is a direct get, which a replica may answer before
			// it has a write this agent made (or saw through its watch):
			// deciding on it could refuse a change the newer record
			// allows. Read again.
			s.log.Debug("stale read", "user", id, "read", cur.Revision, "known", known.Revision, "attempt", attempt+1)
			continue
		}
		if !found {
			cur = migrate.NewUser(id, now)
		}
		next, write, err := change(cur)
		if err != nil {
			return migrate.User{}, fmt.Errorf("migratestore: user %s: %w", id, err)
		}
		if !write {
			return cur, nil
		}
		if intent != nil {
			if err := intent(cur, &next); err != nil {
				return migrate.User{}, fmt.Errorf("migratestore: user %s: %w", id, err)
			}
		}
		next.Revision = 0 // the KV entry carries the revision
		data, err := json.Marshal(next)
		if err != nil {
			return migrate.User{}, fmt.Errorf("migratestore: encode user %s: %w", id, err)
		}
		var rev uint64
		if found {
			rev, err = s.kv.Update(ctx, id, data, cur.Revision)
		} else {
			rev, err = s.kv.Create(ctx, id, data)
		}
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			s.log.Debug("compare-and-set lost", "user", id, "attempt", attempt+1)
			continue
		}
		if err != nil {
			return migrate.User{}, fmt.Errorf("migratestore: write user %s: %w", id, err)
		}
		next.Revision = rev
		s.st.Put(next)
		if next.Phase != cur.Phase {
			s.log.Info("user phase changed", "user", id, "from", cur.Phase, "to", next.Phase,
				"op", next.OpID, "reason", next.Reason, "revision", rev)
		}
		return next.Clone(), nil
	}
	return migrate.User{}, fmt.Errorf("migratestore: user %s: %d attempts: %w", id, s.cfg.MaxRetries, migrate.ErrConflict)
}

// load reads the user's record from the bucket; found is false when there is
// none (never written, or deleted).
func (s *Store) load(ctx context.Context, id string) (u migrate.User, found bool, err error) {
	return loadFrom(ctx, s.kv, id)
}

// loadFrom reads the user's record from kv, as Store.load does.
func loadFrom(ctx context.Context, kv jetstream.KeyValue, id string) (u migrate.User, found bool, err error) {
	e, err := kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return migrate.User{}, false, nil
	}
	if err != nil {
		return migrate.User{}, false, fmt.Errorf("migratestore: read user %s: %w", id, err)
	}
	u, err = decode(e.Key(), e.Value(), e.Revision())
	if err != nil {
		return migrate.User{}, false, err
	}
	return u, true, nil
}

// decode turns a KV entry into a record, refusing one that State would not
// accept.
func decode(key string, value []byte, revision uint64) (migrate.User, error) {
	var u migrate.User
	if err := json.Unmarshal(value, &u); err != nil {
		return migrate.User{}, fmt.Errorf("migratestore: decode user %s: %w", key, err)
	}
	if u.ID != key {
		return migrate.User{}, fmt.Errorf("migratestore: decode user %s: record names user %q", key, u.ID)
	}
	if err := migrate.CheckUserID(u.ID); err != nil {
		return migrate.User{}, fmt.Errorf("migratestore: decode user %s: %w", key, err)
	}
	if !u.Phase.Valid() {
		return migrate.User{}, fmt.Errorf("migratestore: decode user %s: %w %q", key, migrate.ErrInvalidPhase, u.Phase)
	}
	u.Revision = revision
	return u, nil
}

// stamp brings a time to the stored resolution, so that what a writer returns
// equals what a reader decodes.
func stamp(t time.Time) time.Time {
	return t.UTC().Truncate(timeResolution)
}

// pause waits a jittered moment before another compare-and-set attempt, so
// that writers that collided do not collide again in step.
func pause(ctx context.Context, attempt int) error {
	d := min(time.Duration(attempt)*2*time.Millisecond, maxBackoff)
	t := time.NewTimer(rand.N(d) + time.Millisecond/2)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
