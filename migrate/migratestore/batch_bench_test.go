package migratestore

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	memdb "github.com/hashicorp/go-memdb"
	"github.com/nats-io/nats.go/jetstream"
)

// Sizes of BenchmarkStepTransitions (issue 6, point 8).
const (
	benchPopulation = 1_000_000
	benchStep       = 100_000
	// benchFloorTxn is the transaction size of the bare go-memdb floor.
	benchFloorTxn = 100
	// benchLookupsPerMs is the route lookups made each millisecond while
	// the step runs (at most 20,000 a second).
	benchLookupsPerMs = 20
)

// stepProfile, when set, is where BenchmarkStepTransitions writes a CPU
// profile of its steps alone (not of loading the million users):
//
//	go test ./migrate/migratestore/ -run '^$' -bench StepTransitions -benchtime 5x -args -stepprofile /tmp/step.prof
var stepProfile = flag.String("stepprofile", "", "write a CPU profile of BenchmarkStepTransitions' steps to this file")

// startCPUProfile starts a CPU profile into path and returns what stops it.
func startCPUProfile(tb testing.TB, path string) (stop func()) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			tb.Error(err)
		}
	}
}

// BenchmarkStepTransitions moves a step of benchStep users, out of a State of
// benchPopulation, with TransitionManyAudited, one audit event each written
// before its compare-and-set, up to intentChunk to a batch intent (what
// the driver does in a tick whose pace allows the whole step), while
// another goroutine keeps looking users up in the State as route lookups do. Every
// iteration moves the same users one edge (legacy→shadow, then ready and
// shadow in turn). It reports durable transitions per second, the lookups
// served meanwhile, and, measured in the same run, bare go-memdb inserting
// the same number of objects benchFloorTxn to a transaction, with the ratio
// of the two.
//
//	go test ./migrate/migratestore/ -run '^$' -bench StepTransitions -benchtime 3x
func BenchmarkStepTransitions(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := enginetest.Start(b)
	st, err := migrate.NewState()
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(ctx, e.JS, st, Config{})
	if err != nil {
		b.Fatal(err)
	}

	// The step's users are in the bucket; the rest of the population only
	// in the State (the step never touches them, and loading a million
	// records into JetStream would dominate the setup).
	ids := make([]string, benchStep)
	for i := range ids {
		ids[i] = fmt.Sprintf("step-%07d", i)
	}
	seedBucket(b, ctx, e.JS, ids)
	others := make([]migrate.User, 0, benchPopulation-benchStep)
	for i := range benchPopulation - benchStep {
		u := migrate.NewUser(fmt.Sprintf("pop-%07d", i), time.Now())
		u.Revision = 1
		others = append(others, u)
	}
	st.Put(others...)
	others = nil

	runCtx, stopRun := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Run(runCtx); err != nil {
			b.Errorf("Run: %v", err)
		}
	})
	defer wg.Wait()
	defer stopRun()
	select {
	case <-s.Ready():
	case <-ctx.Done():
		b.Fatal(ctx.Err())
	}
	if n := st.Snapshot().Len(); n != benchPopulation {
		b.Fatalf("State holds %d users, want %d", n, benchPopulation)
	}

	floor := memdbFloor(b, benchStep)

	// Route lookups, all along.
	var lookups atomic.Int64
	lookCtx, stopLook := context.WithCancel(ctx)
	var lwg sync.WaitGroup
	lwg.Go(func() {
		// Paced like a busy gateway's routing (benchLookupsPerMs each
		// millisecond), not a spin that would take a core from the step.
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for lookCtx.Err() == nil {
			select {
			case <-tick.C:
			case <-lookCtx.Done():
				return
			}
			for range benchLookupsPerMs {
				i := rand.IntN(benchPopulation)
				var id string
				if i < benchStep {
					id = ids[i]
				} else {
					id = fmt.Sprintf("pop-%07d", i-benchStep)
				}
				if _, ok := st.Get(id); !ok {
					b.Errorf("lookup %s: not found", id)
					return
				}
			}
			lookups.Add(benchLookupsPerMs)
		}
	})

	cpu0 := processCPU(b)
	if *stepProfile != "" {
		stop := startCPUProfile(b, *stepProfile)
		defer stop()
	}
	var moved int
	var busy time.Duration
	_, skipped0 := s.local.stats()
	round := 0
	for b.Loop() {
		to := migrate.PhaseReady
		if round%2 == 0 {
			to = migrate.PhaseShadow
		}
		opID := fmt.Sprintf("bench-%d", round)
		round++
		ops := make([]migrate.UserOp, len(ids))
		events := make([]migrate.AuditEvent, len(ids))
		now := time.Now()
		for i, id := range ids {
			ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: opID, To: to, At: now, Reason: "benchmark step"}}
		}
		for i, id := range ids {
			events[i] = migrate.AuditEvent{At: now, Kind: migrate.AuditTransition, Actor: migrate.ActorDriver, OpID: opID,
				Campaign: "bench", User: id, To: string(to), Result: migrate.ResultOK}
		}
		start := time.Now()
		l0 := lookups.Load()
		errs := s.TransitionManyAudited(ctx, ops, events)
		for i, err := range errs {
			if err != nil {
				b.Fatalf("op %d: %v", i, err)
			}
		}
		busy += time.Since(start)
		moved += len(ids)
		if lookups.Load() == l0 {
			b.Errorf("no route lookup was served during the step")
		}
	}
	cpu := processCPU(b) - cpu0
	stopLook()
	lwg.Wait()

	rate := float64(moved) / busy.Seconds()
	b.ReportMetric(rate, "transitions/s")
	b.ReportMetric(floor, "memdb-objs/s")
	b.ReportMetric(rate/floor, "ratio-vs-memdb")
	b.ReportMetric(float64(lookups.Load())/busy.Seconds(), "lookups/s")
	// CPU time of the whole process (store, embedded server, watch, GC)
	// per transition: less sensitive than the rate to other load on a
	// shared machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(moved), "cpu-µs/transition")
	// The share of written records the watch recognised as already in the
	// State (TransitionMany put them there) instead of applying them again.
	_, skipped := s.local.stats()
	b.ReportMetric(float64(skipped-skipped0)/float64(moved), "watch-skipped-share")
}

// seedBucket writes a legacy record for each id to the store's bucket.
func seedBucket(tb testing.TB, ctx context.Context, js jetstream.JetStream, ids []string) {
	tb.Helper()
	futures := make([]jetstream.PubAckFuture, 0, batchWindow)
	wait := func() {
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				tb.Fatal(err)
			case <-ctx.Done():
				tb.Fatal(ctx.Err())
			}
		}
		futures = futures[:0]
	}
	now := time.Now()
	for _, id := range ids {
		if len(futures) == batchWindow {
			wait()
		}
		data, err := json.Marshal(migrate.NewUser(id, now))
		if err != nil {
			tb.Fatal(err)
		}
		f, err := js.PublishAsync("$KV."+DefaultBucket+"."+id, data)
		if err != nil {
			tb.Fatal(err)
		}
		futures = append(futures, f)
	}
	wait()
}

// floorObject is what the bare go-memdb floor stores: an id and a phase,
// indexed like the State's users.
type floorObject struct {
	ID, Phase string
}

// memdbFloor returns how many objects a second bare go-memdb inserts, n of
// them benchFloorTxn to a transaction: what no store built on it can beat.
func memdbFloor(tb testing.TB, n int) float64 {
	tb.Helper()
	db, err := memdb.NewMemDB(&memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		"objs": {Name: "objs", Indexes: map[string]*memdb.IndexSchema{
			"id":    {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
			"phase": {Name: "phase", Indexer: &memdb.StringFieldIndex{Field: "Phase"}},
		}},
	}})
	if err != nil {
		tb.Fatal(err)
	}
	objs := make([]floorObject, n)
	for i := range objs {
		objs[i] = floorObject{ID: fmt.Sprintf("step-%07d", i), Phase: string(migrate.PhaseShadow)}
	}
	start := time.Now()
	for i := 0; i < n; i += benchFloorTxn {
		txn := db.Txn(true)
		for j := i; j < min(i+benchFloorTxn, n); j++ {
			if err := txn.Insert("objs", &objs[j]); err != nil {
				tb.Fatal(err)
			}
		}
		txn.Commit()
	}
	return float64(n) / time.Since(start).Seconds()
}

// processCPU is the user and system CPU time the process has used so far.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
