package migrate

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
)

// Defaults of DriverConfig.
const (
	DefaultDriverTick = time.Second
	// DefaultMaxPerTick is a second's worth of moves at the store's
	// durable-transition target (50,000 a second): the most one tick
	// batches, whatever the pace, so that a tick stays well inside the
	// driver lease.
	DefaultMaxPerTick = 50_000
)

// UserMover applies one operation to a user's durable record
// (migratestore.Store).
type UserMover interface {
	Transition(ctx context.Context, id string, op Op) (User, error)
}

// UserOp is one operation for one user, as a batch carries it.
type UserOp struct {
	User string
	Op   Op
}

// BatchMover applies many operations at once (migratestore.Store): the
// result has one error per op, nil when it was applied, ErrRepeated when
// the op had been applied before (nothing written). When Users has it,
// the driver makes a tick's moves in one batch instead of one by one.
type BatchMover interface {
	TransitionMany(ctx context.Context, ops []UserOp) []error
}

// AuditedMover applies many operations at once, each with its audit event
// (migratestore.Store): events[i] is in the audit log, durably, before
// ops[i]'s compare-and-set is sent, and only when ops[i] writes, so that
// no committed move is ever without its event; an event whose move never
// landed (a lost compare-and-set, a crash in between) is dropped by the
// log's reader. The result is BatchMover's: nil when the op was applied,
// ErrRepeated when it was a repeat (whose event the move it repeats
// wrote). When Users has it,
// the driver records only the refusals and errors itself.
type AuditedMover interface {
	TransitionManyAudited(ctx context.Context, ops []UserOp, events []AuditEvent) []error
}

// CampaignStore keeps campaigns durably (migratestore.DriverCampaigns).
type CampaignStore interface {
	List(ctx context.Context) ([]Campaign, error)
	// ModifyAudited reads the campaign, applies fn and writes fn's event
	// to the audit log before the record's compare-and-set (which stores
	// the event's sequence in Audit and opID in LastOp), so that no
	// decision lands without its event and an event whose write never
	// landed is dropped by the log's reader. A repeat (the record's LastOp
	// is opID) writes nothing; fn's error writes nothing and is returned.
	ModifyAudited(ctx context.Context, name, opID string, fn func(Campaign) (Campaign, AuditEvent, error)) (Campaign, error)
	// Frozen reports whether the global freeze is on.
	Frozen(ctx context.Context) (bool, error)
}

// Auditor appends decisions to the audit log (migratestore.Audit).
type Auditor interface {
	Record(ctx context.Context, events ...AuditEvent) error
}

// DriverConfig configures a Driver. State, Users, Campaigns and Audit are
// required.
type DriverConfig struct {
	State     *State
	Users     UserMover
	Campaigns CampaignStore
	Audit     Auditor
	// Tick is how often the driver looks at the campaigns; default
	// DefaultDriverTick.
	Tick time.Duration
	// MaxPerTick bounds the moves of one campaign in one tick; default
	// DefaultMaxPerTick. Within it a tick makes what the campaign's pace
	// allows (PerMinute·Tick/1m, at least one); rollbacks, which are not
	// paced, make up to MaxPerTick.
	MaxPerTick int
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger gets the driver's logs, tagged component=campaign-driver.
	Logger *slog.Logger
	// OnTransition, if set, is called after every attempted move with its
	// result (ResultOK, ResultRefused, ResultError, or ResultRepeat for a
	// move an earlier tick or agent had made), for metrics.
	OnTransition func(from, to Phase, result string)
	// OnProgress, if set, is called after each tick of a campaign with its
	// target (the current step's) and actual basis points, and how many
	// users are held back by reason (the survey's HeldBack; not to be
	// kept).
	OnProgress func(campaign string, targetBP, actualBP int, heldBack map[string]int)

	// Leases, if set, makes the driver take the driver lease before every
	// tick and skip the tick when another driver holds it, so that of
	// several agents on one NATS only one moves users. Nil drives
	// unconditionally (one agent, or tests).
	Leases LeaseStore
	// Holder is this driver's identity in the lease; required with Leases.
	Holder string
	// LeaseTTL is how long the lease lasts without renewal; default
	// DefaultLeaseTTL. It must exceed Tick by a good margin.
	LeaseTTL time.Duration
	// OnLease, if set, is called after every attempt to take the lease
	// with the lease as the store has it and whether this driver holds it.
	OnLease func(l Lease, held bool)

	// Measures supplies the guardrails' measurements; nil leaves every
	// guardrail inconclusive (so campaigns with guardrails hold).
	Measures MeasureSource
	// GuardrailEvery is how often a running campaign's guardrails are
	// evaluated; default DefaultGuardrailEvery.
	GuardrailEvery time.Duration
	// OnGuardrail, if set, is called with every evaluation, for metrics.
	OnGuardrail func(campaign string, r GuardrailResult)
	// Prometheus runs the queries of PromQL guardrails; nil leaves them
	// inconclusive (ErrNoPrometheus).
	Prometheus PromQuerier
	// Shadow feeds the backfill and shadow-mismatch gates; nil leaves them
	// inconclusive (users behind such a gate stay in shadow).
	Shadow ShadowSource
}

// DefaultGuardrailEvery is how often guardrails are evaluated by default.
const DefaultGuardrailEvery = time.Minute

// Driver runs started campaigns: each tick it moves users of the current
// step one edge closer to the target (legacy→shadow→ready→cloud), at most the
// pace allows and only inside a change window, and never while the global
// freeze is on. It moves nobody back except when the campaign is rolling
// back. Its operation ids are derived from campaign, step, user and phase,
// so a move repeated after a restart changes nothing.
//
// Pacing is a token bucket per campaign: PerMinute tokens a minute, holding
// at most one tick's worth (at least one), so that over any interval of L
// the driver makes at most PerMinute·L/1m + max(1, PerMinute·Tick/1m) moves.
// Only moves that land count: one that is refused, already made or failed
// gives its token back to a candidate tried after it in the same tick.
// Rollbacks are not paced and ignore windows and the freeze: they are the
// way out of trouble.
type Driver struct {
	cfg DriverConfig
	log *slog.Logger

	mu     sync.Mutex
	tokens map[string]*bucket
	lease  Lease
	// evals holds the last guardrail evaluation of each campaign.
	evals map[string]guardrailEval
}

type guardrailEval struct {
	at      time.Time
	outcome GuardrailOutcome
	results []GuardrailResult
	// event is the evaluation's audit event; a fail whose pause or
	// rollback did not land is acted on again from it.
	event AuditEvent
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewDriver returns a Driver; call Run.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	if cfg.State == nil || cfg.Users == nil || cfg.Campaigns == nil || cfg.Audit == nil {
		return nil, errors.New("migrate: NewDriver needs State, Users, Campaigns and Audit")
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultDriverTick
	}
	if cfg.MaxPerTick <= 0 {
		cfg.MaxPerTick = DefaultMaxPerTick
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Leases != nil && cfg.Holder == "" {
		return nil, errors.New("migrate: NewDriver with Leases needs a Holder")
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.GuardrailEvery <= 0 {
		cfg.GuardrailEvery = DefaultGuardrailEvery
	}
	return &Driver{cfg: cfg, log: cfg.Logger.With("component", "campaign-driver"), tokens: map[string]*bucket{}, evals: map[string]guardrailEval{}}, nil
}

// Run ticks until ctx ends, then releases the lease (if it held it) and
// returns nil. A failing tick is logged and retried at the next one.
func (d *Driver) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if d.cfg.Leases != nil {
				// A fresh deadline: ctx is done, and the others should not
				// wait a whole TTL for a driver that stopped cleanly.
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				defer cancel()
				if err := d.cfg.Leases.Release(rctx, d.cfg.Holder); err != nil {
					d.log.Warn("release driver lease", "err", err)
				}
			}
			return nil
		case <-t.C:
		}
		if err := d.Tick(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("campaign tick", "err", err)
		}
	}
}

// Lease returns the driver lease as this driver last saw it (zero without
// Leases).
func (d *Driver) Lease() Lease {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lease
}

// Guardrails returns the campaign's last guardrail evaluation by this
// driver, and when it was made (nothing when this driver never evaluated
// them, for example because another agent holds the lease).
func (d *Driver) Guardrails(campaign string) ([]GuardrailResult, time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e := d.evals[campaign]
	return e.results, e.at
}

// holdLease takes or renews the lease; false means another driver holds it
// and this tick must do nothing.
func (d *Driver) holdLease(ctx context.Context) (bool, error) {
	if d.cfg.Leases == nil {
		return true, nil
	}
	now := d.cfg.Now()
	l, err := d.cfg.Leases.Acquire(ctx, d.cfg.Holder, now, d.cfg.LeaseTTL)
	held := err == nil
	if err != nil && !errors.Is(err, ErrLeaseHeld) {
		return false, fmt.Errorf("driver lease: %w", err)
	}
	d.mu.Lock()
	prev := d.lease
	d.lease = l
	if !held {
		d.evals = map[string]guardrailEval{} // the holder evaluates; ours are stale
	}
	d.mu.Unlock()
	if held && (prev.Holder != d.cfg.Holder || !prev.HeldAt(now)) {
		d.log.Info("driver lease taken", "holder", d.cfg.Holder, "expires", l.Expires)
	}
	if d.cfg.OnLease != nil {
		d.cfg.OnLease(l, held)
	}
	return held, nil
}

// leaseLeft is how long a tick may work under the lease it holds: until
// its expiry, by this driver's clock, less a fifth of the TTL for the
// agents' clocks to disagree by (they must agree to well within the TTL:
// Lease.Expires).
func (d *Driver) leaseLeft() time.Duration {
	d.mu.Lock()
	expires := d.lease.Expires
	d.mu.Unlock()
	return expires.Sub(d.cfg.Now()) - d.cfg.LeaseTTL/5
}

// Tick takes or renews the driver lease, then looks at every campaign once;
// it does nothing while another driver holds the lease.
func (d *Driver) Tick(ctx context.Context) error {
	held, err := d.holdLease(ctx)
	if err != nil || !held {
		return err
	}
	if d.cfg.Leases != nil {
		// The tick's work ends before the lease it renewed can lapse, so
		// that a driver taking the lease over never moves users beside
		// this one, however long a step takes: what is still in flight
		// then is abandoned, and op ids make the next tick's retry safe.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.leaseLeft())
		defer cancel()
	}
	cs, err := d.cfg.Campaigns.List(ctx)
	if err != nil {
		return err
	}
	frozen, err := d.cfg.Campaigns.Frozen(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cs {
		switch c.State {
		case CampaignRunning:
			if err := d.advance(ctx, c, frozen); err != nil {
				errs = append(errs, fmt.Errorf("campaign %s: %w", c.Name, err))
			}
		case CampaignRollingBack:
			if err := d.rollback(ctx, c); err != nil {
				errs = append(errs, fmt.Errorf("campaign %s rollback: %w", c.Name, err))
			}
		default:
			d.mu.Lock()
			delete(d.tokens, c.Name) // a resumed campaign starts with an empty bucket
			delete(d.evals, c.Name)  // and has its guardrails judged afresh
			d.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// take refills the campaign's token bucket at now and takes up to want
// tokens, returning how many it got.
func (d *Driver) take(c *Campaign, now time.Time, want int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	rate := float64(c.PerMinute()) / float64(time.Minute)
	capacity := max(1, rate*float64(d.cfg.Tick))
	b := d.tokens[c.Name]
	if b == nil {
		b = &bucket{last: now}
		d.tokens[c.Name] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(capacity, b.tokens+rate*float64(el))
	}
	b.last = now
	n := min(want, int(b.tokens))
	b.tokens -= float64(n)
	return n
}

// tickCap is how many moves of c one tick may make: a tick's worth of its
// pace (the most its token bucket holds, at least one), at most MaxPerTick.
// A fixed cap would either throttle a fast campaign below its pace or make
// a slow one survey far more moves than it may take.
func (d *Driver) tickCap(c *Campaign) int {
	perTick := math.Ceil(float64(c.PerMinute()) * float64(d.cfg.Tick) / float64(time.Minute))
	return int(max(1, min(perTick, float64(d.cfg.MaxPerTick))))
}

// giveBack returns tokens taken for moves that did not happen (the bucket
// then holds what it held before they were taken).
func (d *Driver) giveBack(c *Campaign, n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if b := d.tokens[c.Name]; b != nil {
		b.tokens += float64(n)
	}
}

// Survey is a campaign's progress as seen in one snapshot.
type Survey struct {
	// Eligible users of the whole campaign, and how many of them are at
	// the target phase.
	Eligible, Done int
	// Pending is the number of users of the steps up to the current one
	// that can still move.
	Pending int
	// HeldBack counts the users of those steps that will not move.
	HeldBack map[string]int
	// Waiting counts those of HeldBack held by an inconclusive gate: they
	// may move once the evidence is in, so the last step does not complete
	// while any is left (exempt them to let it complete).
	Waiting int
	// Moves are the first moves to make, at most the limit asked for.
	Moves []Move
}

// ActualBP is the share of eligible users at the target, in basis points.
func (s Survey) ActualBP() int {
	if s.Eligible == 0 {
		return 0
	}
	return int(int64(s.Done) * BasisPoints / int64(s.Eligible))
}

// Move is one edge the driver takes for one user.
type Move struct {
	User     string
	From, To Phase
	Step     int
}

// SurveyCampaign reads c's progress from sn at now and picks up to limit
// moves for the users of steps 0 to c.Step; src feeds the shadow gates.
func SurveyCampaign(sn *Snapshot, c *Campaign, now time.Time, limit int, src ShadowSource) Survey {
	s := Survey{HeldBack: map[string]int{}}
	sn.each(func(u *User) {
		pl := c.Place(u, now)
		if !pl.Eligible {
			return
		}
		s.Eligible++
		if c.reached(u.Phase) {
			s.Done++
		}
		if pl.Step < 0 || pl.Step > c.Step {
			return
		}
		v := c.Judge(u, pl, now, src)
		switch {
		case v.Done:
		case v.HeldBack != "":
			s.HeldBack[v.HeldBack]++
			if strings.HasSuffix(v.HeldBack, inconclusiveSuffix) {
				s.Waiting++
			}
		case v.Next != "":
			s.Pending++
			if len(s.Moves) < limit {
				s.Moves = append(s.Moves, Move{User: u.ID, From: u.Phase, To: v.Next, Step: c.Step})
			}
		}
	})
	return s
}

func (d *Driver) advance(ctx context.Context, c Campaign, frozen bool) error {
	now := d.cfg.Now()
	sv := SurveyCampaign(d.cfg.State.Snapshot(), &c, now, 2*d.tickCap(&c), d.cfg.Shadow)
	defer func() {
		if d.cfg.OnProgress != nil {
			d.cfg.OnProgress(c.Name, c.Steps[c.Step].TargetBP, sv.ActualBP(), sv.HeldBack)
		}
	}()
	outcome, stopped, err := d.guard(ctx, c, now)
	if err != nil || stopped {
		return err
	}
	if frozen || !c.InWindow(now) {
		return nil
	}
	if sv.Pending == 0 {
		if outcome != GuardrailPass {
			return nil // inconclusive holds the campaign at this step
		}
		return d.stepDone(ctx, c, sv, now)
	}
	// Every move of a tick is of the current step: its events share the
	// maps (nothing changes them once built).
	values := map[string]float64{"actual_bp": float64(sv.ActualBP()), "pending": float64(sv.Pending)}
	thresholds := map[string]float64{"target_bp": float64(c.Steps[c.Step].TargetBP), "per_minute": float64(c.PerMinute())}
	// The pace counts users moved. A move that does not land (refused
	// because the user changed since the snapshot, already made by
	// whoever counted it, failed) gives its token back, and the next
	// round tries the survey's next candidates with it; the survey holds
	// twice a tick's worth, and no candidate is tried twice in a tick.
	for candidates := sv.Moves; len(candidates) > 0 && ctx.Err() == nil; {
		n := d.take(&c, now, len(candidates))
		if n == 0 {
			return nil
		}
		moves := candidates[:n]
		candidates = candidates[n:]
		unmoved, err := d.makeMoves(ctx, c, now, moves, values, thresholds)
		if err != nil || unmoved == 0 {
			return err
		}
	}
	return ctx.Err()
}

// makeMoves makes moves (all of c's current step) at now, audits their
// outcomes, gives back the tokens of those that did not land and returns
// how many those were.
func (d *Driver) makeMoves(ctx context.Context, c Campaign, now time.Time, moves []Move, values, thresholds map[string]float64) (unmoved int, err error) {
	ops := make([]UserOp, len(moves))
	for i, m := range moves {
		ops[i] = UserOp{User: m.User, Op: Op{ID: c.OpID(m.Step, m.User, m.To), To: m.To, At: now,
			Reason: fmt.Sprintf("campaign %s step %d (target %d bp)", c.Name, m.Step, c.Steps[m.Step].TargetBP)}}
	}
	events := moveEvents(now, c, moves, ops, func(ev *AuditEvent, m Move) {
		ev.Values, ev.Thresholds = values, thresholds
	})
	results, audited := d.apply(ctx, ops, events)
	for _, r := range results {
		if r != nil {
			unmoved++
		}
	}
	d.giveBack(&c, unmoved)
	return unmoved, d.recordResults(ctx, c, moves, events, results, audited)
}

// auditGrace bounds the audit write of moves that landed after ctx ended.
const auditGrace = 5 * time.Second

// moveEvents builds the audit event of each move as if it succeeded
// (ops[i] makes moves[i]), decorated by decorate when non-nil.
func moveEvents(now time.Time, c Campaign, moves []Move, ops []UserOp, decorate func(*AuditEvent, Move)) []AuditEvent {
	events := make([]AuditEvent, len(moves))
	for i, m := range moves {
		op := ops[i].Op
		events[i] = AuditEvent{At: now, Kind: AuditTransition, Actor: ActorDriver, OpID: op.ID, Campaign: c.Name, Step: m.Step,
			User: m.User, From: string(m.From), To: string(m.To), Reason: op.Reason, Result: ResultOK}
		if decorate != nil {
			decorate(&events[i], m)
		}
	}
	return events
}

// recordResults reports the outcome of each move (results[i] is the error
// of moves[i], events[i] its event) and audits it: every outcome, or, when
// the mover audited the moves that landed itself (audited), only the
// refusals and errors. The events are audited even once ctx has ended
// (within auditGrace); then ctx's error is returned.
func (d *Driver) recordResults(ctx context.Context, c Campaign, moves []Move, events []AuditEvent, results []error, audited bool) error {
	record := events[:0:0]
	var errs []error
	for i, m := range moves {
		err := results[i]
		result := ResultOK
		switch {
		case err == nil:
		case errors.Is(err, ErrRepeated):
			// Moved by an earlier tick (or the agent this one took the
			// campaign over from), which counted and audited it.
			if d.cfg.OnTransition != nil {
				d.cfg.OnTransition(m.From, m.To, ResultRepeat)
			}
			continue
		case errors.Is(err, ErrIllegalTransition):
			result = ResultRefused // the user changed since the snapshot
		default:
			result = ResultError
			errs = append(errs, err)
		}
		if d.cfg.OnTransition != nil {
			d.cfg.OnTransition(m.From, m.To, result)
		}
		if err == nil && audited {
			continue // in the log before its compare-and-set
		}
		ev := events[i]
		ev.Result = result
		if err != nil {
			ev.Reason = err.Error()
		}
		record = append(record, ev)
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditGrace)
		defer cancel()
		if err := d.cfg.Audit.Record(actx, record...); err != nil {
			d.log.Warn("audit of moves after the context ended", "campaign", c.Name, "err", err)
		}
		return ctxErr
	}
	if err := d.cfg.Audit.Record(ctx, record...); err != nil {
		errs = append(errs, fmt.Errorf("audit: %w", err))
	}
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Errorf("and %d more errors", len(errs)-3))
	}
	return errors.Join(errs...)
}

// stepDone records that the current step has nobody left to move, and moves
// on to the next step (or completes the campaign) once it soaked.
func (d *Driver) stepDone(ctx context.Context, c Campaign, sv Survey, now time.Time) error {
	next := c.Clone()
	ev := AuditEvent{At: now, Kind: AuditCampaign, Actor: ActorDriver, Campaign: c.Name, Step: c.Step, Result: ResultOK,
		Values:     map[string]float64{"actual_bp": float64(sv.ActualBP()), "soaked_s": now.Sub(c.StepReached).Seconds()},
		Thresholds: map[string]float64{"target_bp": float64(c.Steps[c.Step].TargetBP), "min_soak_s": time.Duration(c.Steps[c.Step].MinSoak).Seconds()}}
	switch {
	case c.StepReached.IsZero():
		next.StepReached = now
		next.Updated = now
		ev.From, ev.To, ev.Reason = "moving", "soaking", fmt.Sprintf("step %d reached its target; soaking", c.Step)
		ev.Values["soaked_s"] = 0
	case now.Sub(c.StepReached) < time.Duration(c.Steps[c.Step].MinSoak):
		return nil
	case c.Step+1 == len(c.Steps) && sv.Waiting > 0:
		return nil // users wait on inconclusive gates: not complete yet
	case c.Step+1 < len(c.Steps):
		next.Step++
		next.StepSince, next.StepReached, next.Updated = now, time.Time{}, now
		ev.From, ev.To = fmt.Sprintf("step %d", c.Step), fmt.Sprintf("step %d", next.Step)
		ev.Reason = fmt.Sprintf("step %d soaked; starting step %d (target %d bp)", c.Step, next.Step, c.Steps[next.Step].TargetBP)
	default:
		var err error
		if next, err = c.Lifecycle(CmdComplete, "every step reached its target and soaked", "", now); err != nil {
			return err
		}
		ev.From, ev.To, ev.Reason = string(c.State), string(next.State), next.Reason
	}
	if err := d.decide(ctx, c, "step-"+ev.To, next, ev); err != nil {
		return err // another writer changed the campaign: look again next tick
	}
	d.log.Info("campaign step", "campaign", c.Name, "step", c.Step, "from", ev.From, "to", ev.To)
	return nil
}

// decide writes next, the driver's decision on c, with its event ev,
// audit-first (CampaignStore.ModifyAudited), and only if the campaign is
// still at the revision the decision was taken on: otherwise it returns an
// error wrapping ErrConflict and the next tick judges afresh. The
// operation id is derived from the campaign, its step, the decision's kind
// and that revision, so a tick retried after a crash or a lost reply
// writes the decision, and its event, at most once.
func (d *Driver) decide(ctx context.Context, c Campaign, kind string, next Campaign, ev AuditEvent) error {
	opID := DecisionOpID(c, kind)
	_, err := d.cfg.Campaigns.ModifyAudited(ctx, c.Name, opID, func(cur Campaign) (Campaign, AuditEvent, error) {
		if cur.Revision != c.Revision {
			return Campaign{}, AuditEvent{}, fmt.Errorf("campaign %s changed since revision %d: %w", c.Name, c.Revision, ErrConflict)
		}
		return next, ev, nil
	})
	return err
}

// DecisionOpID is the operation id of the driver's decision of kind
// (step-soaking, step-N, completed, guardrail-pause, …) on c as read at
// c.Revision.
func DecisionOpID(c Campaign, kind string) string {
	return fmt.Sprintf("driver.%s.step%d.%s.r%d", c.Name, c.Step, strings.ReplaceAll(kind, " ", ""), c.Revision)
}

// rollback moves the users the campaign moved to ready or cloud back to
// shadow, then marks the campaign aborted. A step rollback (RollbackStep)
// moves only the users whose phase that step set, then pauses the campaign.
func (d *Driver) rollback(ctx context.Context, c Campaign) error {
	now := d.cfg.Now()
	sn := d.cfg.State.Snapshot()
	moved, opID := c.MovedBy, c.RollbackOpID
	done, doneReason, reason := CmdRolledBack, "rollback finished", "rollback of campaign "+c.Name
	if c.RollbackStep != nil {
		step := *c.RollbackStep
		moved = func(u *User) bool { return c.MovedByStep(u, step) }
		opID = func(user string) string { return c.RollbackStepOpID(step, user) }
		done, doneReason = CmdStepRolledBack, fmt.Sprintf("rollback of step %d finished; paused at the step", step)
		reason = fmt.Sprintf("rollback of step %d of campaign %s", step, c.Name)
	}
	var moves []Move
	for _, p := range []Phase{PhaseCloud, PhaseReady} {
		sn.eachInPhase(p, func(u *User) bool {
			if moved(u) {
				moves = append(moves, Move{User: u.ID, From: p, To: PhaseShadow, Step: c.Step})
			}
			return len(moves) < d.cfg.MaxPerTick
		})
	}
	if len(moves) == 0 {
		next, err := c.Lifecycle(done, doneReason, "", now)
		if err != nil {
			return err
		}
		return d.decide(ctx, c, string(done), next, AuditEvent{At: now, Kind: AuditCampaign, Actor: ActorDriver, Campaign: c.Name, Step: c.Step,
			From: string(c.State), To: string(next.State), Reason: next.Reason, Result: ResultOK})
	}
	ops := make([]UserOp, len(moves))
	for i, m := range moves {
		ops[i] = UserOp{User: m.User, Op: Op{ID: opID(m.User), To: PhaseShadow, At: now, Reason: reason}}
	}
	events := moveEvents(now, c, moves, ops, nil)
	results, audited := d.apply(ctx, ops, events)
	return d.recordResults(ctx, c, moves, events, results, audited)
}

// apply makes the moves (events[i] is the audit event of ops[i]): with
// their events when Users is an AuditedMover (audited is then true), else
// in one batch when it is a BatchMover, else one by one; it returns one
// error per op. Once ctx ends, the ops not yet tried fail with its error.
func (d *Driver) apply(ctx context.Context, ops []UserOp, events []AuditEvent) (results []error, audited bool) {
	if am, ok := d.cfg.Users.(AuditedMover); ok {
		return am.TransitionManyAudited(ctx, ops, events), true
	}
	if bm, ok := d.cfg.Users.(BatchMover); ok && len(ops) > 1 {
		return bm.TransitionMany(ctx, ops), false
	}
	errs := make([]error, len(ops))
	for i, uo := range ops {
		if err := ctx.Err(); err != nil {
			errs[i] = err
			continue
		}
		_, errs[i] = d.cfg.Users.Transition(ctx, uo.User, uo.Op)
	}
	return errs, false
}

// NewSalt returns a random cohort salt for a campaign that starts without
// one.
func NewSalt() string {
	b := make([]byte, 8)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b)
}
