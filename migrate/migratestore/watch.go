package migratestore

import (
	"bytes"
	"context"
	"fmt"
	"sync"
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
// State.Remove, except the records TransitionMany puts into the State
// itself, which it recognises and skips (see localWrites). Ready is
// closed once the current values are in. Run returns
// nil when ctx is done, an error when the watch cannot start, and
// ErrWatchEnded when the watch stops by itself.
func (s *Store) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer s.running.Store(false)
	s.local.start()
	defer s.local.stop()

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
	var value []byte
	if e.Operation() == jetstream.KeyValuePut {
		value = e.Value()
	}
	if s.local.handled(e.Key(), e.Revision(), value) {
		return // TransitionMany puts this very record into the State
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

// maxLocalWrites bounds the writes noted for the watch; beyond it writes
// are not noted, and the watch applies them as it applies foreign ones.
const maxLocalWrites = 1 << 18

// localWrites is how the watch recognises the records this Store's
// TransitionMany writes and puts into the State itself, so that it skips
// them instead of decoding and applying each a second time (that was about a
// third of a batch's CPU).
//
// A write is noted when it is published, before the watch can meet it: the
// key, the revision it replaces and the bytes published. While the write is
// in flight, the watch recognises it as the first revision of the key after
// that one carrying exactly those bytes, and marks it seen at that revision;
// once acknowledged, the note holds its revision and the watch recognises
// it by revision. Either way the batch puts the record into the State: at
// the acknowledged revision, or, if the publish then failed or was
// abandoned, at the revision the watch saw (same bytes, same record). A
// note goes when the watch meets its revision (or the batch settles a write
// the watch has already met), so the set holds only writes in flight or not
// yet met. Anything not noted is applied by the watch as usual; State.Put
// ignores a revision it already holds.
type localWrites struct {
	mu      sync.Mutex
	running bool
	seen    uint64 // the highest revision the watch has handled
	writes  map[string]*localWrite
	skipped uint64 // records the watch skipped, for tests and benchmarks
}

// localWrite is one noted write of TransitionMany.
type localWrite struct {
	after uint64 // the revision the write replaces (its compare-and-set)
	data  []byte // what was published
	acked uint64 // its revision once acknowledged, while the watch has not met it
	met   uint64 // the revision at which the watch met it in flight
}

// start begins noting writes for a watch that starts now.
func (l *localWrites) start() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running, l.seen, l.writes = true, 0, make(map[string]*localWrite)
}

// stop forgets every note: no watch will meet them.
func (l *localWrites) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.running, l.writes = false, nil
}

// publishing notes a write of data to key over revision after, about to be
// published. It returns nil when no watch runs or too many are noted.
func (l *localWrites) publishing(key string, after uint64, data []byte) *localWrite {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.running || len(l.writes) >= maxLocalWrites {
		return nil
	}
	w := &localWrite{after: after, data: data}
	l.writes[key] = w
	return w
}

// acked records that w landed at revision; the caller puts the record into
// the State.
func (l *localWrites) acked(key string, w *localWrite, revision uint64) {
	if w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.writes[key] != w {
		return // stopped, or replaced by a later write of the key
	}
	if w.met != 0 || l.seen >= revision {
		delete(l.writes, key) // the watch has been past it
		return
	}
	w.acked = revision
}

// failed drops the note of a write that failed or was abandoned, and
// returns the revision at which the watch met (and skipped) it, or 0: the
// caller must then put the record into the State at that revision.
func (l *localWrites) failed(key string, w *localWrite) uint64 {
	if w == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.writes[key] == w {
		delete(l.writes, key)
	}
	return w.met
}

// handled tells the notes that the watch met key at revision (value is nil
// for a delete or a purge) and reports whether that is a noted write, which
// the watch then skips.
func (l *localWrites) handled(key string, revision uint64, value []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = max(l.seen, revision)
	w := l.writes[key]
	switch {
	case w == nil:
		return false
	case w.acked != 0:
		if revision < w.acked {
			return false
		}
		delete(l.writes, key)
		if revision > w.acked {
			return false // a later write superseded it before the watch came
		}
	case w.met != 0 || revision <= w.after || value == nil || !bytes.Equal(value, w.data):
		return false
	default:
		w.met = revision
	}
	l.skipped++
	return true
}

// stats returns how many writes are noted and how many the watch skipped.
func (l *localWrites) stats() (noted int, skipped uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.writes), l.skipped
}
