package migratestore

import (
	"context"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// watchBatch caps how many records Run puts into the State at once; it
// matches the State's transaction size, so a cold start loads the bucket in
// a few hundred transactions rather than one per user.
const watchBatch = 500

// stopDrainTimeout bounds how long Run keeps draining the watch after
// stopping it, so that the client's delivery goroutine is never left blocked.
const stopDrainTimeout = 2 * time.Second

// Run watches the whole bucket, first its current values and then every
// change, and mirrors it into the State: puts become State.Put and deletes
// State.Remove. Ready is closed once the current values are in. Run returns
// nil when ctx is done, an error when the watch cannot start, and
// ErrWatchEnded when the watch stops by itself.
func (s *Store) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)

	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("migratestore: watch bucket %s: %w", s.cfg.Bucket, err)
	}
	defer s.stopWatch(w)
	s.log.Info("watching bucket", "bucket", s.cfg.Bucket)

	f := feeder{s: s}
	updates := w.Updates()
	for {
		select {
		case <-ctx.Done():
			f.flush()
			return nil
		case e, ok := <-updates:
			if !ok {
				f.flush()
				return f.ended(ctx)
			}
			f.add(e)
		}
		// Take whatever else is already waiting, up to a batch, before
		// writing to the State.
	more:
		for len(f.batch) < watchBatch {
			select {
			case e, ok := <-updates:
				if !ok {
					f.flush()
					return f.ended(ctx)
				}
				f.add(e)
			default:
				break more
			}
		}
		f.flush()
	}
}

// stopWatch stops w and drains what it still delivers, for a bounded time.
func (s *Store) stopWatch(w jetstream.KeyWatcher) {
	if err := w.Stop(); err != nil {
		s.log.Debug("stop watch", "err", err)
	}
	t := time.NewTimer(stopDrainTimeout)
	defer t.Stop()
	for {
		select {
		case _, ok := <-w.Updates():
			if !ok {
				return
			}
		case <-t.C:
			return
		}
	}
}

// feeder accumulates watched records into batches for State.Put, keeping the
// order of puts, deletes and the end of the initial values.
type feeder struct {
	s      *Store
	batch  []migrate.User
	loaded int
}

func (f *feeder) add(e jetstream.KeyValueEntry) {
	s := f.s
	if e == nil { // all initial values delivered
		f.flush()
		s.readyOnce.Do(func() {
			s.log.Info("bucket loaded", "bucket", s.cfg.Bucket, "users", f.loaded)
			close(s.ready)
		})
		return
	}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		u, err := decode(e.Key(), e.Value(), e.Revision())
		if err != nil {
			s.corrupt.Add(1)
			s.log.Warn("undecodable record: the user is shown held until a valid record replaces it",
				"key", e.Key(), "revision", e.Revision(), "err", err)
			f.flush() // the held stand-in is built from the State as it is now
			var ok bool
			if u, ok = s.corruptStandIn(e.Key(), e.Revision()); !ok {
				return
			}
		}
		f.batch = append(f.batch, u)
	case jetstream.KeyValueDelete, jetstream.KeyValuePurge:
		f.flush()
		s.st.Remove(e.Key())
	}
}

// ReasonCorruptRecord is the Reason of the held record the State shows for a
// user whose stored record cannot be decoded.
const ReasonCorruptRecord = "corrupt record"

// CorruptRecords is how many records the watch could not decode since the
// Store was made (the agent exports it as a counter).
func (s *Store) CorruptRecords() uint64 { return s.corrupt.Load() }

// corruptStandIn is what the State shows for key when its record at revision
// cannot be decoded: the last good record held, so that ops see the user in
// held with reason ReasonCorruptRecord and the driver moves nobody on stale
// data, while routing keeps the inbound home it had (Prior). ok is false
// when the key cannot be a user id.
func (s *Store) corruptStandIn(key string, revision uint64) (migrate.User, bool) {
	if migrate.CheckUserID(key) != nil {
		return migrate.User{}, false
	}
	u, ok := s.st.Get(key)
	if !ok {
		u = migrate.User{ID: key, PhaseSince: s.cfg.Now().UTC()}
	}
	if u.Phase != migrate.PhaseHeld && u.Phase != migrate.PhaseFailed {
		u.Prior = u.Phase // held or failed already keep the stable phase
	}
	u.Phase = migrate.PhaseHeld
	u.Reason = ReasonCorruptRecord
	u.OpID = ""
	u.Revision = revision
	return u, true
}

// ended is Run's result when the watch's channel closes: the watch also
// closes when its context ends, which is a normal stop.
func (f *feeder) ended(ctx context.Context) error {
	if ctx.Err() != nil {
		return nil
	}
	return ErrWatchEnded
}

func (f *feeder) flush() {
	if len(f.batch) == 0 {
		return
	}
	f.s.st.Put(f.batch...)
	f.loaded += len(f.batch)
	clear(f.batch)
	f.batch = f.batch[:0]
}
