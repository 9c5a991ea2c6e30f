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
)

// Backfill results, as label values of gateway_bridge_shadow_backfills_total.
const (
	backfillComplete    = "complete"
	backfillUnsupported = "unsupported"
	backfillNoDevice    = "no_device"
)

// backfiller runs the backfill of users who enter shadow or ready, one user
// at a time, until each is complete.
type backfiller struct {
	s *shadow

	mu      sync.Mutex
	pending map[string]time.Time // user → not before
	wake    chan struct{}
}

func newBackfiller(s *shadow) *backfiller {
	f := &backfiller{s: s, pending: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	s.b.cfg.State.OnChange(func(prev *migrate.User, cur migrate.User) {
		if shadowing(cur) && (prev == nil || !shadowing(*prev)) {
			f.enqueue(cur.ID, time.Time{})
		}
	})
	return f
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
	var errs []error
	for _, t := range targets {
		err := s.backfillFrom(ctx, user, t, since)
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
func (s *shadow) backfillFrom(ctx context.Context, user string, dev peer.AddrInfo, since time.Time) error {
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
			err := s.write(wctx, m, sourceBackfill)
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
