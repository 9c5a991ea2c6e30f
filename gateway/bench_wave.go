package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// Sizes of the wave benchmark (issue 9): a population, a campaign step
// moving part of it, and the transaction size of the bare go-memdb floor.
const (
	wavePopulation = 1_000_000
	waveStep       = 100_000
	waveFloorTxn   = 100
	// waveSeedWindow is how many seed publishes are in flight at once.
	waveSeedWindow = 2000
)

// benchWave moves a campaign step with migratestore's TransitionManyAudited
// (one audit event per user, written before its compare-and-set, 256 to a
// batch intent message), as the campaign driver does, against bare go-memdb
// inserting the same number of objects waveFloorTxn to a transaction; then
// plans a campaign over the whole population (migrate.PlanCampaign) against
// a full read of the same snapshot. It mirrors
// migratestore's BenchmarkStepTransitions and migrate's BenchmarkPlan1M.
func benchWave(ctx context.Context, o benchOptions) ([]benchRow, error) {
	population, step := wavePopulation, waveStep
	if o.Smoke {
		population, step = 5_000, 500
	}
	dir, err := os.MkdirTemp("", "ferry-bench-wave-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	eng, err := engine.Start(engine.Config{DataDir: dir, Name: "ferry-bench"})
	if err != nil {
		return nil, fmt.Errorf("start engine: %w", err)
	}
	defer eng.Close()
	st, err := migrate.NewState()
	if err != nil {
		return nil, err
	}
	s, err := migratestore.New(ctx, eng.JS, st, migratestore.Config{Bulk: o.GC.bulkHook()})
	if err != nil {
		return nil, err
	}
	// The step's users are in the bucket; the rest of the population only
	// in the State, as in BenchmarkStepTransitions (the step never touches
	// them).
	ids := make([]string, step)
	for i := range ids {
		ids[i] = fmt.Sprintf("step-%07d", i)
	}
	if err := seedUsers(ctx, eng.JS, ids); err != nil {
		return nil, fmt.Errorf("seed: %w", err)
	}
	now := time.Now().UTC()
	platforms := []string{"android", "ios", "windows", "mac"}
	versions := []string{"4.9.1", "5.0.0", "5.1.2", "5.2.0"}
	batch := make([]migrate.User, 0, 500)
	for i := range population - step {
		u := migrate.NewUser(fmt.Sprintf("pop-%07d", i), now)
		u.Revision = 1
		u.Devices = []migrate.Device{{ID: "d", Platform: platforms[i%4], ClientVersion: versions[(i/4)%4], LastSeen: now.Add(-time.Hour)}}
		if batch = append(batch, u); len(batch) == cap(batch) {
			st.Put(batch...)
			batch = batch[:0]
		}
	}
	st.Put(batch...)

	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = s.Run(runCtx) })
	defer func() { stopRun(); wg.Wait() }()
	select {
	case <-s.Ready():
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if n := st.Snapshot().Len(); n != population {
		return nil, fmt.Errorf("state holds %d users, want %d", n, population)
	}

	// Route lookups all along each step, as the bridge and the cloud make
	// them (State.Get), to show they keep being served (issue 6, point 8).
	lookupID := func(i int) string {
		if i < step {
			return ids[i]
		}
		return fmt.Sprintf("pop-%07d", i-step)
	}
	var stepLookups, stepServed []float64
	round := 0
	transitions := func(ctx context.Context) (float64, error) {
		to := migrate.PhaseReady
		if round%2 == 0 {
			to = migrate.PhaseShadow
		}
		opID := fmt.Sprintf("bench-%d", round)
		round++
		at := time.Now()
		ops := make([]migrate.UserOp, len(ids))
		for i, id := range ids {
			ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: opID, To: to, At: at, Reason: "benchmark step"}}
		}
		start := time.Now()
		// As the driver does: each move's event is written before its
		// compare-and-set (migrate.AuditedMover).
		events := make([]migrate.AuditEvent, len(ids))
		for i, id := range ids {
			events[i] = migrate.AuditEvent{At: at, Kind: migrate.AuditTransition, Actor: migrate.ActorDriver, OpID: opID,
				Campaign: "bench", User: id, To: string(to), Result: migrate.ResultOK}
		}
		look := startLookups(st, population, lookupID)
		errs := s.TransitionManyAudited(ctx, ops, events)
		took := time.Since(start)
		lat, err := look.stop()
		if err != nil {
			return 0, err
		}
		for i, err := range errs {
			if err != nil {
				return 0, fmt.Errorf("op %d: %w", i, err)
			}
		}
		if len(lat) == 0 {
			return 0, errors.New("no route lookup was served during the step")
		}
		stepLookups = append(stepLookups, micros((&latencyLog{xs: lat}).quantile(0.99)))
		stepServed = append(stepServed, float64(len(lat))/took.Seconds())
		return float64(len(ids)) / took.Seconds(), nil
	}
	floor := func(context.Context) (float64, error) { return memdbFloor(step) }
	cs, fs, err := alternate(ctx, o.Runs, transitions, floor)
	if err != nil {
		return nil, fmt.Errorf("step: %w", err)
	}
	// The same lookups with no step running, for as long as a step took.
	var idleLookups []float64
	for _, rate := range cs {
		look := startLookups(st, population, lookupID)
		time.Sleep(time.Duration(float64(step) / rate * float64(time.Second)))
		lat, err := look.stop()
		if err != nil {
			return nil, err
		}
		idleLookups = append(idleLookups, micros((&latencyLog{xs: lat}).quantile(0.99)))
	}

	c := migrate.Campaign{Name: "bench", Salt: "s1", Filter: migrate.Filter{Platforms: []string{"android", "ios", "windows"}},
		Steps: []migrate.Step{
			{TargetBP: 100},
			{TargetBP: 1000, Gates: migrate.Gates{MinVersion: map[string]string{"android": "5.0", "ios": "5.0", "windows": "5.0"}}},
			{TargetBP: 5000},
		}}
	plan := func(context.Context) (float64, error) {
		start := time.Now()
		if p := migrate.PlanCampaign(st.Snapshot(), c, "", now, nil); p.Users != population {
			return 0, fmt.Errorf("plan saw %d users, want %d", p.Users, population)
		}
		return time.Since(start).Seconds(), nil
	}
	scan := func(context.Context) (float64, error) {
		start := time.Now()
		if n := len(st.Snapshot().List("", "", 0)); n != population {
			return 0, fmt.Errorf("list saw %d users, want %d", n, population)
		}
		return time.Since(start).Seconds(), nil
	}
	ps, ss, err := alternate(ctx, o.Runs, plan, scan)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	stopRun()
	wg.Wait()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return nil, fmt.Errorf("store: %w", runErr)
	}
	return []benchRow{
		newRow("wave", "transitions", "TransitionManyAudited, durable", fmt.Sprintf("bare go-memdb, %d objects/txn", waveFloorTxn), "transitions/s", cs, fs,
			&benchTarget{Of: "ratio", Op: ">=", Value: 0.5},
			fmt.Sprintf("a step of %d users out of %d, one edge each run (legacy→shadow, then ready and shadow in turn), compare-and-set per user, one audit event each, written as batch intents of up to 256; engine file store, sync every %s", step, population, engine.DefaultSyncInterval)),
		newRow("wave", "transitions-abs", "TransitionManyAudited, durable", fmt.Sprintf("bare go-memdb, %d objects/txn", waveFloorTxn), "transitions/s", cs, fs,
			&benchTarget{Of: "case", Op: ">=", Value: 50_000}),
		newRow("wave", "lookups", "route lookup p99 during the step", "route lookup p99, no step running", "µs", stepLookups, idleLookups, nil,
			fmt.Sprintf("State.Get of a random user of the %d, %d every millisecond (paced, not a spin) all along each step; %s lookups/s served during the steps (median); a step with none served fails the benchmark", population, waveLookupsPerMs, fmtNum(median(stepServed)))),
		newRow("wave", "plan", "PlanCampaign, 3 steps", "full list of the snapshot", "seconds", ps, ss,
			&benchTarget{Of: "case", Op: "<=", Value: 1},
			fmt.Sprintf("%d users, one device each, platform filter and a version gate", population)),
	}, nil
}

// seedUsers writes a legacy record for each id to the store's bucket,
// waveSeedWindow publishes at a time.
func seedUsers(ctx context.Context, js jetstream.JetStream, ids []string) error {
	futures := make([]jetstream.PubAckFuture, 0, waveSeedWindow)
	wait := func() error {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		futures = futures[:0]
		return nil
	}
	now := time.Now()
	for _, id := range ids {
		if len(futures) == cap(futures) {
			if err := wait(); err != nil {
				return err
			}
		}
		data, err := json.Marshal(migrate.NewUser(id, now))
		if err != nil {
			return err
		}
		f, err := js.PublishAsync("$KV."+migratestore.DefaultBucket+"."+id, data)
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	return wait()
}

// waveObject is what the bare go-memdb floor stores: an id and a phase,
// indexed like the State's users.
type waveObject struct {
	ID, Phase string
}

// waveFloorPasses is how many times memdbFloor inserts the n objects into
// a fresh go-memdb after a warm-up pass; it returns the median. One pass
// lasts a fraction of a second, so a single pass swung with whatever else
// the machine (or the garbage collector) did at that moment.
const waveFloorPasses = 5

// memdbFloor returns how many objects a second bare go-memdb inserts, n of
// them waveFloorTxn to a transaction: what no store built on it can beat.
// It is the median of waveFloorPasses passes after a warm-up one.
func memdbFloor(n int) (float64, error) {
	rates := make([]float64, 0, waveFloorPasses)
	for pass := range waveFloorPasses + 1 {
		r, err := memdbFloorPass(n)
		if err != nil {
			return 0, err
		}
		if pass > 0 {
			rates = append(rates, r)
		}
	}
	slices.Sort(rates)
	return rates[len(rates)/2], nil
}

// memdbFloorPass is one pass of memdbFloor.
func memdbFloorPass(n int) (float64, error) {
	db, err := memdb.NewMemDB(&memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		"objs": {Name: "objs", Indexes: map[string]*memdb.IndexSchema{
			"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"phase": {Name: "phase", Indexer: &memdb.StringFieldIndex{Field: "Phase"}},
		}},
	}})
	if err != nil {
		return 0, err
	}
	objs := make([]waveObject, n)
	for i := range objs {
		objs[i] = waveObject{ID: fmt.Sprintf("step-%07d", i), Phase: string(migrate.PhaseShadow)}
	}
	start := time.Now()
	for i := 0; i < n; i += waveFloorTxn {
		txn := db.Txn(true)
		for j := i; j < min(i+waveFloorTxn, n); j++ {
			if err := txn.Insert("objs", &objs[j]); err != nil {
				txn.Abort()
				return 0, err
			}
		}
		txn.Commit()
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// waveLookupsPerMs is how many route lookups lookups makes each
// millisecond: a busy gateway's routing (20,000 a second), paced so that it
// does not take a core from the step it runs alongside.
const waveLookupsPerMs = 20

// lookups looks random users up in a State, waveLookupsPerMs each
// millisecond, timing each lookup, until stop.
type lookups struct {
	done chan struct{}
	quit chan struct{}
	lat  []time.Duration
	err  error
}

// startLookups starts looking up users id(0) to id(n-1) in st.
func startLookups(st *migrate.State, n int, id func(int) string) *lookups {
	l := &lookups{done: make(chan struct{}), quit: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-l.quit:
				return
			}
			for range waveLookupsPerMs {
				u := id(rand.IntN(n))
				t := time.Now()
				_, ok := st.Get(u)
				l.lat = append(l.lat, time.Since(t))
				if !ok {
					l.err = fmt.Errorf("route lookup of %s: not found", u)
					return
				}
			}
		}
	}()
	return l
}

// stop ends the lookups and returns their latencies.
func (l *lookups) stop() ([]time.Duration, error) {
	close(l.quit)
	<-l.done
	return l.lat, l.err
}
