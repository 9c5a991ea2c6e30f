package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// Backfill bounds: the bridge asks a shadow user's device for at most
// BackfillMaxMessages messages of at most BackfillMaxAge, in pages of
// backfillPage.
const (
	BackfillMaxMessages = 1000
	BackfillMaxAge      = 30 * 24 * time.Hour
	backfillPage        = 50
	// backfillRetry is how long a user whose backfill could not finish
	// (no live device, none that serves history, an error) waits before
	// the next attempt.
	backfillRetry = 30 * time.Second
	// deltaMargin reaches back before the last backfill, for messages
	// whose device clock ran behind the bridge's.
	deltaMargin = time.Minute
	// deltaAttempts bounds the tries of one final delta (a device that
	// stays unreachable); what it could not write stays counted missing.
	deltaAttempts = 5
)

// Backfill results, as label values of gateway_bridge_shadow_backfills_total.
const (
	backfillComplete    = "complete"
	backfillUnsupported = "unsupported"
	backfillNoDevice    = "no_device"
)

// backfiller runs the backfill of users who enter shadow or ready, one user
// at a time, until each is complete.
//
// It also runs the final delta (see delta): as a user enters ready, and
// as they flip from ready to the cloud. A flip's delta runs beside the
// flip hold, which waits for it for at most flipDeltaWait.
type backfiller struct {
	s *shadow

	mu      sync.Mutex
	pending map[string]time.Time // user → not before
	deltas  map[string]*deltaDue // users with a final delta due
	wake    chan struct{}
}

func newBackfiller(s *shadow) *backfiller {
	f := &backfiller{s: s, pending: map[string]time.Time{}, deltas: map[string]*deltaDue{}, wake: make(chan struct{}, 1)}
	s.b.cfg.State.OnChange(func(prev *migrate.User, cur migrate.User) {
		switch {
		case shadowing(cur) && (prev == nil || !shadowing(*prev)):
			f.enqueue(cur.ID, time.Time{})
		case prev == nil:
		case prev.Phase == migrate.PhaseShadow && cur.Phase == migrate.PhaseReady,
			shadowing(*prev) && cur.CloudHome():
			f.enqueueDelta(cur.ID)
		}
	})
	return f
}

// deltaDue is a user's final delta waiting or running: attempts made,
// and whether it was asked for again meanwhile (a flip while the delta of
// ready runs), which takes one more run.
type deltaDue struct {
	attempts int
	again    bool
}

// enqueueDelta schedules user's final delta now.
func (f *backfiller) enqueueDelta(user string) {
	f.mu.Lock()
	if d, ok := f.deltas[user]; ok {
		d.again, d.attempts = true, 0
	} else {
		f.deltas[user] = &deltaDue{}
	}
	f.mu.Unlock()
	f.enqueue(user, time.Time{})
}

// due reports whether user's final delta is waiting or running.
func (f *backfiller) due(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.deltas[user]
	return ok
}

// takeDelta reports whether user's turn is a final delta, and counts the
// attempt.
func (f *backfiller) takeDelta(user string) (attempt int, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.deltas[user]
	if !ok {
		return 0, false
	}
	d.attempts++
	d.again = false
	return d.attempts, true
}

// deltaDone ends user's final delta run, and reports whether it was asked
// for again meanwhile (it stays due).
func (f *backfiller) deltaDone(user string) (again bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d, ok := f.deltas[user]; ok && d.again {
		return true
	}
	delete(f.deltas, user)
	return false
}

func (f *backfiller) enqueue(user string, notBefore time.Time) {
	f.mu.Lock()
	if at, ok := f.pending[user]; !ok || notBefore.Before(at) {
		f.pending[user] = notBefore
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// next takes a user whose time has come, or returns how long to wait.
func (f *backfiller) next(now time.Time) (string, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wait := time.Duration(-1)
	for user, at := range f.pending {
		if !at.After(now) {
			delete(f.pending, user)
			return user, 0
		}
		if d := at.Sub(now); wait < 0 || d < wait {
			wait = d
		}
	}
	return "", wait
}

func (f *backfiller) run(ctx context.Context) error {
	b := f.s.b
	for _, u := range b.cfg.State.Snapshot().List("", "", 0) {
		if st, _ := f.s.stats.get(u.ID); shadowing(u) && !st.BackfillDone {
			f.enqueue(u.ID, time.Time{})
		}
	}
	for {
		user, wait := f.next(b.now())
		if user == "" {
			var timer <-chan time.Time
			if wait >= 0 {
				timer = time.After(wait)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-f.wake:
			case <-timer:
			}
			continue
		}
		if attempt, ok := f.takeDelta(user); ok {
			err := f.s.delta(ctx, user)
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil || attempt >= deltaAttempts:
				if err != nil {
					b.log.Warn("final delta not complete; given up", "user", user, "err", err)
				}
				if f.deltaDone(user) {
					f.enqueue(user, time.Time{})
				}
			default:
				b.log.Info("final delta not complete; retrying later", "user", user, "err", err)
				f.enqueue(user, b.now().Add(backfillRetry))
			}
			continue
		}
		if u, ok := b.cfg.State.Get(user); !ok || !shadowing(u) {
			continue
		}
		if st, _ := f.s.stats.get(user); st.BackfillDone {
			continue
		}
		if err := f.s.backfill(ctx, user); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.log.Info("backfill not complete; retrying later", "user", user, "err", err)
			f.enqueue(user, b.now().Add(backfillRetry))
		}
	}
}

// Backfill reads user's recent history from one of the user's legacy
// devices that serves it (chat v2 and later), writes what the cloud lacks
// and compares what it has, and marks the user's backfill complete. It runs
// on its own for every user who enters shadow or ready; calling it runs it
// again now. A device that holds an altered copy of a message already
// compared counts one more sample of that message.
func (b *Bridge) Backfill(ctx context.Context, user string) error {
	return b.shadow.backfill(ctx, user)
}

func (s *shadow) backfill(ctx context.Context, user string) error {
	return s.readHistory(ctx, user, sourceBackfill)
}

// delta is the final delta: what the mirror missed since the last
// backfill (a copy that failed: the cloud unreachable, the bridge
// restarting), written as the user enters ready and again as they flip
// to the cloud. It reads the user's device history from a little before
// the last backfill and writes each message that no source has written
// (the shadow bucket's compare marks, by message id), in the device's
// order, acting for its sender; the cloud takes a message once by id, so
// a delta run twice, or by two bridges, writes nothing twice. A message
// the flipped user sent is left out (the bridge no longer acts for them)
// and stays counted missing. A hole in the middle of a conversation is
// filled at its end: the cloud's sequence decides the order.
func (s *shadow) delta(ctx context.Context, user string) error {
	u, ok := s.b.cfg.State.Get(user)
	if !ok || !(shadowing(u) || u.CloudHome()) || u.Phase == migrate.PhaseFinalized {
		return nil
	}
	return s.readHistory(ctx, user, sourceDelta)
}

// readHistory reads user's history from one of their devices and writes it as
// source (sourceBackfill: all of it, and marks the backfill complete;
// sourceDelta: from a little before the last backfill, what is missing).
func (s *shadow) readHistory(ctx context.Context, user, source string) error {
	b := s.b
	look, err := b.dir.Lookup(ctx, user)
	if err != nil {
		s.m.backfills.WithLabelValues(resultError).Inc()
		return err
	}
	targets, err := legacy.Lookup{Devices: look.Devices}.Targets()
	if err != nil || len(targets) == 0 {
		s.m.backfills.WithLabelValues(backfillNoDevice).Inc()
		return fmt.Errorf("no live device of %s to backfill from (%v)", user, err)
	}
	since := b.now().Add(-BackfillMaxAge)
	if st, ok := s.stats.get(user); ok && source == sourceDelta && st.BackfillAt.After(since) {
		since = st.BackfillAt.Add(-deltaMargin)
	}
	var errs []error
	for _, t := range targets {
		err := s.backfillFrom(ctx, user, t, since, source)
		if err == nil {
			s.m.backfills.WithLabelValues(backfillComplete).Inc()
			s.stats.update(user, func(st *ShadowStats) {
				st.BackfillDone, st.BackfillAt = true, b.now().UTC()
			})
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, err)
	}
	err = errors.Join(errs...)
	if errors.Is(err, legacy.ErrNotSupported) {
		s.m.backfills.WithLabelValues(backfillUnsupported).Inc()
	} else {
		s.m.backfills.WithLabelValues(resultError).Inc()
	}
	return err
}

// backfillFrom pages through one device's history of user.
func (s *shadow) backfillFrom(ctx context.Context, user string, dev peer.AddrInfo, since time.Time, source string) error {
	b := s.b
	after := ""
	for n := 0; n < BackfillMaxMessages; {
		req := legacywire.HistoryRequest{User: user, After: after, Since: since, Limit: min(backfillPage, BackfillMaxMessages-n)}
		pctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
		page, err := legacy.FetchHistory(pctx, b.cfg.Host, b.cert, dev, req)
		cancel()
		if err != nil {
			return err
		}
		for _, m := range page.Msgs {
			if m.From != user && m.To != user {
				continue // not the user's: a device serves only its own
			}
			wctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
			err := s.write(wctx, m, source)
			cancel()
			if err != nil && !errors.Is(err, errCloudHome) {
				return fmt.Errorf("backfill %s: %w", m.ID, err)
			}
			after = m.ID
			n++
		}
		if !page.More || len(page.Msgs) == 0 {
			return nil
		}
	}
	return nil
}
