package migrate

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memLeases is a LeaseStore for one holder: every Acquire succeeds.
type memLeases struct {
	mu sync.Mutex
	l  Lease
}

func (m *memLeases) Acquire(_ context.Context, holder string, now time.Time, ttl time.Duration) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.l.Holder != holder {
		m.l.Acquired = now
	}
	m.l.Holder, m.l.Expires = holder, now.Add(ttl)
	m.l.Revision++
	return m.l, nil
}

func (m *memLeases) Release(context.Context, string) error { return nil }

// stuckMover blocks every transition until its context ends, like a store
// that has stopped answering mid-step, and records when that was.
type stuckMover struct {
	mu    sync.Mutex
	ended []time.Time
}

func (m *stuckMover) Transition(ctx context.Context, id string, op Op) (User, error) {
	<-ctx.Done()
	m.mu.Lock()
	m.ended = append(m.ended, time.Now())
	m.mu.Unlock()
	return User{}, ctx.Err()
}

// TestDriverTickEndsBeforeLease: a tick whose moves take longer than the
// lease it renewed is cut short before the lease lapses (a fifth of the TTL
// before), so a driver taking the lease over never moves users beside it.
func TestDriverTickEndsBeforeLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 50, Campaign{Name: "slow", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 6000}})
		mover := &stuckMover{}
		const ttl = 15 * time.Second
		d, err := NewDriver(DriverConfig{State: r.st, Users: mover, Campaigns: r.cs, Audit: r.audit, Tick: time.Second,
			Leases: &memLeases{}, Holder: "a", LeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		// The first tick fills the pace's bucket; the second moves.
		if err := d.Tick(t.Context()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		start := time.Now()
		err = d.Tick(t.Context())
		if err == nil {
			t.Fatal("a tick whose moves never ended returned no error")
		}
		expires := d.Lease().Expires
		if !expires.Equal(start.Add(ttl)) {
			t.Fatalf("lease expires %v after the tick started, want %v", expires.Sub(start), ttl)
		}
		if len(mover.ended) == 0 {
			t.Fatal("the mover was never called")
		}
		for _, at := range mover.ended {
			if !at.Before(expires) || at.After(expires.Add(-ttl/5)) {
				t.Errorf("a move was cut short %v after the tick started; want at the lease's expiry less a fifth of the TTL (%v)",
					at.Sub(start), ttl-ttl/5)
			}
		}
		if end := time.Now(); !end.Before(expires) {
			t.Errorf("the tick ended %v after it started, not before the lease lapsed (%v)", end.Sub(start), ttl)
		}
	})
}
