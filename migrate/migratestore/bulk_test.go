package migratestore

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// TestTransitionManyCallsBulk: Config.Bulk brackets each TransitionMany,
// ended once the writes are done, and only TransitionMany.
func TestTransitionManyCallsBulk(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	var started, ended, movedInside atomic.Int64
	var s *running
	s = startStore(t, ctx, e.JS, Config{Bulk: func() func() {
		started.Add(1)
		return func() {
			movedInside.Store(int64(s.st.Snapshot().Count(migrate.PhaseReady)))
			ended.Add(1)
		}
	}})
	const n = 50
	ops := make([]migrate.UserOp, n)
	for i := range n {
		id := fmt.Sprintf("u%03d", i)
		if _, err := s.Transition(ctx, id, migrate.Op{ID: "seed", To: migrate.PhaseShadow}); err != nil {
			t.Fatal(err)
		}
		ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: "go", To: migrate.PhaseReady}}
	}
	if started.Load() != 0 {
		t.Fatalf("Transition called Bulk %d times; only TransitionMany should", started.Load())
	}
	for i, err := range s.TransitionMany(ctx, ops) {
		if err != nil {
			t.Fatalf("op %d: %v", i, err)
		}
	}
	if started.Load() != 1 || ended.Load() != 1 {
		t.Fatalf("Bulk started %d and ended %d times for one TransitionMany, want 1 and 1", started.Load(), ended.Load())
	}
	if got := movedInside.Load(); got != n {
		t.Errorf("%d users in ready when Bulk ended, want all %d (it ends after the writes)", got, n)
	}
}
