package migrate

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memMover applies operations to a State directly, as the KV store would.
type memMover struct{ st *State }

func (m memMover) Transition(_ context.Context, id string, op Op) (User, error) {
	cur, ok := m.st.Get(id)
	if !ok {
		cur = NewUser(id, op.At)
	}
	next, err := Apply(cur, op)
	if err != nil {
		return User{}, err
	}
	if next.Revision == cur.Revision && op.ID == cur.OpID && ok {
		return cur, nil
	}
	next.Revision = cur.Revision + 1
	m.st.Put(next)
	return next, nil
}

type memCampaigns struct {
	mu     sync.Mutex
	cs     map[string]Campaign
	frozen bool
	audit  Auditor
}

func (m *memCampaigns) List(context.Context) ([]Campaign, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Campaign
	for _, c := range m.cs {
		out = append(out, c.Clone())
	}
	return out, nil
}

// ModifyAudited writes fn's event to audit first, then the record, as
// migratestore.Campaigns does (a repeat writes nothing).
func (m *memCampaigns) ModifyAudited(ctx context.Context, name, opID string, fn func(Campaign) (Campaign, AuditEvent, error)) (Campaign, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.cs[name].Clone()
	if opID != "" && cur.LastOp == opID {
		return cur, nil
	}
	next, ev, err := fn(cur)
	if err != nil {
		return Campaign{}, err
	}
	ev.Campaign, ev.OpID = name, opID
	if err := m.audit.Record(ctx, ev); err != nil {
		return Campaign{}, err
	}
	next.Revision, next.LastOp = cur.Revision+1, opID
	m.cs[name] = next.Clone()
	return next, nil
}

func (m *memCampaigns) Frozen(context.Context) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.frozen, nil
}

func (m *memCampaigns) get(name string) Campaign {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cs[name].Clone()
}

func (m *memCampaigns) edit(name string, fn func(*Campaign)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.cs[name].Clone()
	fn(&c)
	c.Revision++
	m.cs[name] = c
}

func (m *memCampaigns) setFrozen(v bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frozen = v
}

type memAudit struct {
	mu sync.Mutex
	ev []AuditEvent
}

func (a *memAudit) Record(_ context.Context, evs ...AuditEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev = append(a.ev, evs...)
	return nil
}

func (a *memAudit) transitions() []AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []AuditEvent
	for _, e := range a.ev {
		if e.Kind == AuditTransition && e.Result == ResultOK {
			out = append(out, e)
		}
	}
	return out
}

// driverRig is a driver over n legacy users with fake stores.
type driverRig struct {
	st    *State
	cs    *memCampaigns
	audit *memAudit
	d     *Driver
}

func newRig(t *testing.T, n int, c Campaign) *driverRig {
	t.Helper()
	st, err := NewState()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var users []User
	for i := range n {
		users = append(users, User{ID: fmt.Sprintf("u%05d", i), Phase: PhaseLegacy, PhaseSince: now, Revision: 1})
	}
	st.Put(users...)
	if c.State == "" {
		c, err = c.Lifecycle(CmdStart, "test", "salt", now)
		if err != nil {
			t.Fatal(err)
		}
	}
	r := &driverRig{st: st, audit: &memAudit{}}
	r.cs = &memCampaigns{cs: map[string]Campaign{c.Name: c}, audit: r.audit}
	r.d, err = NewDriver(DriverConfig{State: st, Users: memMover{st}, Campaigns: r.cs, Audit: r.audit, Tick: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// run runs the driver for d of bubble time.
func (r *driverRig) run(t *testing.T, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- r.d.Run(ctx) }()
	time.Sleep(d)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// runTwo runs the rig's driver and a second one moving users with mover,
// as a restart or a second agent would, for a minute of bubble time; it
// checks that all n users reached cloud and returns the successful
// transitions audited.
func (r *driverRig) runTwo(t *testing.T, mover UserMover, n int) []AuditEvent {
	t.Helper()
	d2, err := NewDriver(DriverConfig{State: r.st, Users: mover, Campaigns: r.cs, Audit: r.audit, Tick: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	go d2.Run(ctx)
	r.run(t, time.Minute)
	cancel()
	synctest.Wait()
	if got := r.st.Snapshot().Count(PhaseCloud); got != n {
		t.Fatalf("%d in cloud, want %d", got, n)
	}
	return r.audit.transitions()
}

// usersBelow counts the rig's first n users whose bucket under salt is
// below maxBP: those a step of that target covers.
func usersBelow(salt string, n, maxBP int) int {
	k := 0
	for i := range n {
		if Bucket(salt, fmt.Sprintf("u%05d", i)) < maxBP {
			k++
		}
	}
	return k
}

// forward is the order of active phases; the driver may only go up it
// unless rolling back.
var forward = map[string]int{"legacy": 0, "shadow": 1, "ready": 2, "cloud": 3}

func TestDriverPacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 1000, Campaign{Name: "pace", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 120}})
		const minutes = 10
		start := time.Now()
		r.run(t, minutes*time.Minute+time.Millisecond)
		checkPace(t, r.audit.transitions(), start, minutes)
	})
}

// checkPace checks the transitions moves, made from start for minutes at
// 120 a minute with a one-second tick: close to and at most 120 a minute
// plus one tick's worth of burst (2) in all, and no minute above that.
func checkPace(t *testing.T, moves []AuditEvent, start time.Time, minutes int) {
	t.Helper()
	if max := 120*minutes + 2; len(moves) > max || len(moves) < max-10 {
		t.Errorf("%d transitions in %d minutes, want close to and at most %d", len(moves), minutes, max)
	}
	perMinute := map[int]int{}
	for _, e := range moves {
		perMinute[int(e.At.Sub(start)/time.Minute)]++
	}
	for m, n := range perMinute {
		if n > 122 {
			t.Errorf("minute %d: %d transitions", m, n)
		}
	}
}

func TestDriverWindowsAndFreeze(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The bubble starts at midnight UTC, 2000-01-01.
		c := Campaign{Name: "win", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 600, Windows: []Window{{Start: "01:00", End: "02:00"}}}}
		r := newRig(t, 300, c)
		r.run(t, 30*time.Minute)
		if n := len(r.audit.transitions()); n != 0 {
			t.Fatalf("%d transitions outside the window", n)
		}
		r.cs.setFrozen(true)
		r.run(t, 45*time.Minute) // into the window, but frozen
		if n := len(r.audit.transitions()); n != 0 {
			t.Fatalf("%d transitions during the freeze", n)
		}
		r.cs.setFrozen(false)
		r.run(t, 2*time.Hour)
		moves := r.audit.transitions()
		if len(moves) != 900 {
			t.Errorf("%d transitions, want 900 (300 users × 3 edges)", len(moves))
		}
		for _, e := range moves {
			if h := e.At.UTC().Hour(); h != 1 {
				t.Fatalf("transition at %s, outside 01:00-02:00", e.At.UTC().Format(time.TimeOnly))
			}
		}
		if got := r.st.Snapshot().Count(PhaseCloud); got != 300 {
			t.Errorf("%d in cloud", got)
		}
	})
}

// TestDriverStepsLoweringAndRollback runs a two-step campaign to completion,
// checks that lowering a target moves nobody back, and that a rollback
// brings the campaign's users back to shadow.
func TestDriverStepsLoweringAndRollback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := Campaign{Name: "ramp", Steps: []Step{
			{TargetBP: 1000, MinSoak: Duration(time.Hour)},
			{TargetBP: 3000, MinSoak: Duration(time.Hour)},
		}, Pace: Pace{PerMinute: 6000}}
		r := newRig(t, 2000, c)
		c = r.cs.get("ramp")
		inStep := func(maxBP int) int { return usersBelow(c.Salt, 2000, maxBP) }
		r.run(t, 30*time.Minute)
		if got, want := r.st.Snapshot().Count(PhaseCloud), inStep(1000); got != want {
			t.Fatalf("after step 0: %d in cloud, want %d", got, want)
		}
		if s := r.cs.get("ramp"); s.Step != 0 || s.StepReached.IsZero() {
			t.Fatalf("step %d reached %v: should be soaking step 0", s.Step, s.StepReached)
		}
		r.run(t, 2*time.Hour) // soak, then step 1 moves its users
		if got, want := r.st.Snapshot().Count(PhaseCloud), inStep(3000); got != want {
			t.Fatalf("after step 1: %d in cloud, want %d", got, want)
		}
		// Lower the target: nobody moves back.
		r.cs.edit("ramp", func(c *Campaign) { c.Steps[1].TargetBP = 1500 })
		r.run(t, 2*time.Hour)
		if got, want := r.st.Snapshot().Count(PhaseCloud), inStep(3000); got != want {
			t.Fatalf("after lowering: %d in cloud, want %d", got, want)
		}
		if s := r.cs.get("ramp"); s.State != CampaignCompleted {
			t.Fatalf("state %s, want completed", s.State)
		}
		for _, e := range r.audit.transitions() {
			if forward[e.To] <= forward[e.From] {
				t.Fatalf("moved back: %+v", e)
			}
		}
		// A user the campaign did not move stays in cloud on rollback.
		outsider := ""
		for i := range 2000 {
			id := fmt.Sprintf("u%05d", i)
			if Bucket(c.Salt, id) >= 3000 {
				outsider = id
				break
			}
		}
		mv := memMover{r.st}
		for _, p := range []Phase{PhaseShadow, PhaseReady, PhaseCloud} {
			if _, err := mv.Transition(t.Context(), outsider, Op{ID: "manual-" + string(p), To: p}); err != nil {
				t.Fatal(err)
			}
		}
		r.cs.edit("ramp", func(c *Campaign) { c.State = CampaignRollingBack })
		r.run(t, time.Minute)
		sn := r.st.Snapshot()
		if got := sn.Count(PhaseCloud); got != 1 {
			t.Errorf("%d in cloud after rollback, want only the outsider", got)
		}
		if got, want := sn.Count(PhaseShadow), inStep(3000); got != want {
			t.Errorf("%d in shadow after rollback, want %d", got, want)
		}
		if s := r.cs.get("ramp"); s.State != CampaignAborted {
			t.Errorf("state %s after rollback, want aborted", s.State)
		}
	})
}

// TestDriverRepeatIsIdempotent runs two drivers on the same campaign, as a
// restart or a second agent would: every user moves once per edge.
func TestDriverRepeatIsIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 200, Campaign{Name: "twice", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 60000}})
		seen := map[string]int{}
		for _, e := range r.runTwo(t, memMover{r.st}, 200) {
			seen[e.OpID]++
		}
		ids := make([]string, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		if len(ids) != 600 {
			t.Errorf("%d distinct operations, want 600", len(ids))
		}
		for _, u := range r.st.Snapshot().List(PhaseCloud, "", 0) {
			if u.Revision != 4 {
				t.Errorf("%s: revision %d, want 4 (three writes)", u.ID, u.Revision)
				break
			}
		}
	})
}

// TestDriverStepRollback rolls back only the last step of a two-step
// campaign: the users step 1 moved return to shadow, step 0's stay in cloud,
// the campaign pauses at step 1, and resuming runs the step again.
func TestDriverStepRollback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := Campaign{Name: "steps", Steps: []Step{
			{TargetBP: 1000, MinSoak: Duration(time.Hour)},
			{TargetBP: 3000, MinSoak: Duration(time.Hour)},
		}, Pace: Pace{PerMinute: 6000}}
		r := newRig(t, 2000, c)
		c = r.cs.get("steps")
		inStep := func(maxBP int) int { return usersBelow(c.Salt, 2000, maxBP) }
		r.run(t, 90*time.Minute) // step 0 moves and soaks, step 1 moves
		if s := r.cs.get("steps"); s.Step != 1 || s.StepReached.IsZero() {
			t.Fatalf("step %d reached %v: should be soaking step 1", s.Step, s.StepReached)
		}
		if got, want := r.st.Snapshot().Count(PhaseCloud), inStep(3000); got != want {
			t.Fatalf("before the rollback: %d in cloud, want %d", got, want)
		}
		r.cs.edit("steps", func(c *Campaign) {
			next, err := c.Lifecycle(CmdRollbackStep, "test", "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			next.Revision = c.Revision
			*c = next
		})
		before := len(r.audit.transitions())
		r.run(t, time.Minute)
		sn := r.st.Snapshot()
		if got, want := sn.Count(PhaseCloud), inStep(1000); got != want {
			t.Errorf("after the step rollback: %d in cloud, want step 0's %d", got, want)
		}
		if got, want := sn.Count(PhaseShadow), inStep(3000)-inStep(1000); got != want {
			t.Errorf("after the step rollback: %d in shadow, want step 1's %d", got, want)
		}
		back := r.audit.transitions()[before:]
		if len(back) != inStep(3000)-inStep(1000) {
			t.Errorf("%d moves audited by the step rollback, want %d", len(back), inStep(3000)-inStep(1000))
		}
		for _, e := range back {
			if e.To != string(PhaseShadow) || e.OpID != c.RollbackStepOpID(1, e.User) || Bucket(c.Salt, e.User) < 1000 {
				t.Fatalf("step rollback move %+v", e)
			}
		}
		s := r.cs.get("steps")
		if s.State != CampaignPaused || s.Step != 1 || s.RollbackStep != nil || !s.StepReached.IsZero() {
			t.Fatalf("after the step rollback: %s at step %d (rollback step %v, reached %v), want paused at step 1", s.State, s.Step, s.RollbackStep, s.StepReached)
		}
		// A second run of the rolled-back campaign moves nobody.
		r.run(t, time.Minute)
		if n := len(r.audit.transitions()); n != before+len(back) {
			t.Errorf("%d more moves while paused", n-before-len(back))
		}
		r.cs.edit("steps", func(c *Campaign) {
			next, err := c.Lifecycle(CmdResume, "test", "", time.Now())
			if err != nil {
				t.Fatal(err)
			}
			next.Revision = c.Revision
			*c = next
		})
		r.run(t, 30*time.Minute)
		if got, want := r.st.Snapshot().Count(PhaseCloud), inStep(3000); got != want {
			t.Errorf("after resuming: %d in cloud, want %d", got, want)
		}
	})
}

// TestDriverTickCap checks that a tick's cap follows the campaign's pace (a
// tick's worth of PerMinute, at least one) up to MaxPerTick, instead of a
// fixed number that throttled fast campaigns.
func TestDriverTickCap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		perMinute int
		tick      time.Duration
		max       int
		want      int
	}{
		{"default pace", 0, time.Second, 0, DefaultPerMinute / 60},
		{"slow pace is at least one", 1, time.Second, 0, 1},
		{"fraction rounds up", 90, time.Second, 0, 2},
		{"longer tick", 6000, 5 * time.Second, 0, 500},
		{"fast pace beyond the old fixed 500", 120_000, time.Second, 0, 2000},
		{"bounded by the default", 60_000_000, time.Second, 0, DefaultMaxPerTick},
		{"bounded by MaxPerTick", 120_000, time.Second, 300, 300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := NewState()
			if err != nil {
				t.Fatal(err)
			}
			d, err := NewDriver(DriverConfig{State: st, Users: memMover{st}, Campaigns: &memCampaigns{}, Audit: &memAudit{}, Tick: tc.tick, MaxPerTick: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			c := Campaign{Pace: Pace{PerMinute: tc.perMinute}}
			if got := d.tickCap(&c); got != tc.want {
				t.Errorf("tickCap = %d, want %d", got, tc.want)
			}
		})
	}
}

// TestDriverFastPace runs a campaign paced at 2,000 moves a second: a tick
// makes a whole tick's worth, four times the old fixed cap of 500, and never
// more.
func TestDriverFastPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const perSecond = 2000
		r := newRig(t, 5000, Campaign{Name: "fast", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: perSecond * 60}})
		r.run(t, 4*time.Second+time.Millisecond)
		perTick := map[time.Time]int{}
		for _, e := range r.audit.transitions() {
			perTick[e.At]++
		}
		most := 0
		for _, n := range perTick {
			most = max(most, n)
		}
		if most != perSecond {
			t.Errorf("the busiest tick made %d moves, want %d (ticks: %v)", most, perSecond, perTick)
		}
	})
}

// auditedMover is memMover as an AuditedMover: like the store, it writes an
// op's event only when the op writes, and one op at a time (the store's
// compare-and-set lets only one of two drivers' writes land).
type auditedMover struct {
	memMover
	audit *memAudit
	mu    *sync.Mutex
}

func (m auditedMover) TransitionManyAudited(ctx context.Context, ops []UserOp, events []AuditEvent) []error {
	m.mu.Lock()
	defer m.mu.Unlock()
	errs := make([]error, len(ops))
	for i, uo := range ops {
		before, _ := m.st.Get(uo.User)
		after, err := m.Transition(ctx, uo.User, uo.Op)
		errs[i] = err
		if err == nil && after.Revision != before.Revision {
			ev := events[i]
			ev.From = string(before.Phase)
			m.audit.Record(ctx, ev)
		}
	}
	return errs
}

// TestDriverAuditedMoverAuditsOnce runs two drivers on one campaign with a
// mover that audits the moves it writes: the driver records no event of its
// own for a move that succeeded, so each move is audited exactly once, with
// the values and thresholds that drove it, even when the other driver
// repeats it.
func TestDriverAuditedMoverAuditsOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 200, Campaign{Name: "once", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 60000}})
		mover := auditedMover{memMover{r.st}, r.audit, &sync.Mutex{}}
		var err error
		if r.d, err = NewDriver(DriverConfig{State: r.st, Users: mover, Campaigns: r.cs, Audit: r.audit, Tick: time.Second}); err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, e := range r.runTwo(t, mover, 200) {
			seen[e.OpID]++
			if e.Values == nil || e.Thresholds == nil {
				t.Errorf("event %s without values or thresholds", e.OpID)
			}
		}
		if len(seen) != 600 {
			t.Errorf("%d distinct operations audited, want 600", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("operation %s audited %d times, want once", id, n)
			}
		}
	})
}

// refusingMover refuses the first attempt of every user whose number is
// even, as the store does when the user changed since the driver's
// snapshot (its revision bumped, its phase kept); a later attempt goes
// through.
type refusingMover struct {
	memMover
	mu      sync.Mutex
	refused map[string]bool
}

func (m *refusingMover) Transition(ctx context.Context, id string, op Op) (User, error) {
	var n int
	fmt.Sscanf(id, "u%05d", &n)
	m.mu.Lock()
	first := n%2 == 0 && !m.refused[id]
	if first {
		m.refused[id] = true
	}
	m.mu.Unlock()
	if first {
		cur, _ := m.st.Get(id)
		cur.Revision++
		m.st.Put(cur)
		return User{}, &TransitionError{From: cur.Phase, To: op.To, Reason: "changed since the snapshot"}
	}
	return m.memMover.Transition(ctx, id, op)
}

// TestDriverPaceCountsLandedMoves: a refused move gives its token to the
// next candidate, so a campaign whose moves are often refused still moves
// its pace, and never more.
func TestDriverPaceCountsLandedMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, 1000, Campaign{Name: "pace", Steps: []Step{{TargetBP: BasisPoints}}, Pace: Pace{PerMinute: 120}})
		m := &refusingMover{memMover: memMover{r.st}, refused: map[string]bool{}}
		d, err := NewDriver(DriverConfig{State: r.st, Users: m, Campaigns: r.cs, Audit: r.audit, Tick: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		r.d = d
		const minutes = 10
		start := time.Now()
		r.run(t, minutes*time.Minute+time.Millisecond)
		m.mu.Lock()
		refused := len(m.refused)
		m.mu.Unlock()
		if refused < 100 {
			t.Fatalf("only %d moves refused: the test did not test", refused)
		}
		checkPace(t, r.audit.transitions(), start, minutes)
		refusals := 0
		for _, e := range r.audit.ev {
			if e.Kind == AuditTransition && e.Result == ResultRefused {
				refusals++
			}
		}
		if refusals != refused {
			t.Errorf("%d refusals audited, the mover refused %d", refusals, refused)
		}
	})
}
