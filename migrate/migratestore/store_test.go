package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// testTimeout bounds every test that talks to the engine.
const testTimeout = 30 * time.Second

func testContext(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	tb.Cleanup(cancel)
	return ctx
}

// running is a Store whose Run goroutine feeds st until stop or cleanup.
type running struct {
	*Store
	st   *migrate.State
	stop func()
}

// startStore builds a State and a Store on js, runs it and waits until it is
// Ready. Cleanup stops Run and checks that it returned nil.
func startStore(tb testing.TB, ctx context.Context, js jetstream.JetStream, cfg Config) *running {
	tb.Helper()
	st, err := migrate.NewState()
	if err != nil {
		tb.Fatal(err)
	}
	s, err := New(ctx, js, st, cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					tb.Errorf("Run: %v", err)
				}
			case <-time.After(testTimeout):
				tb.Errorf("Run did not return after cancel")
			}
		})
	}
	tb.Cleanup(stop)
	select {
	case <-s.Ready():
	case err := <-done:
		tb.Fatalf("Run returned before Ready: %v", err)
	case <-ctx.Done():
		tb.Fatalf("store not ready: %v", ctx.Err())
	}
	return &running{Store: s, st: st, stop: stop}
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(tb testing.TB, ctx context.Context, what string, cond func() bool) {
	tb.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			tb.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"full", Config{Bucket: "users-2", Replicas: 3, MaxRetries: 20}, true},
		{"bad bucket", Config{Bucket: "ferry.users"}, false},
		{"negative replicas", Config{Replicas: -1}, false},
		{"too many replicas", Config{Replicas: 7}, false},
		{"negative retries", Config{MaxRetries: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTransitionPersisted(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	clock := &fakeClock{t: t0.Add(123456789 * time.Nanosecond)}
	s := startStore(t, ctx, e.JS, Config{Now: clock.Now})

	got, err := s.Transition(ctx, "alice", migrate.Op{ID: "op-1", To: migrate.PhaseShadow, Reason: "cohort 1"})
	if err != nil {
		t.Fatalf("Transition: %v", err)
	}
	want := migrate.User{
		ID: "alice", Phase: migrate.PhaseShadow, PhaseSince: t0.Add(123 * time.Millisecond),
		Reason: "cohort 1", OpID: "op-1", Revision: got.Revision,
	}
	if got.Revision == 0 {
		t.Errorf("no revision on the returned record")
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Transition (-want +got):\n%s", diff)
	}
	inState, ok := s.st.Get("alice")
	if !ok {
		t.Fatalf("record not in State right after Transition")
	}
	if diff := cmp.Diff(want, inState); diff != "" {
		t.Errorf("State (-want +got):\n%s", diff)
	}
	stored, err := s.Get(ctx, "alice")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if diff := cmp.Diff(want, stored); diff != "" {
		t.Errorf("KV (-want +got):\n%s", diff)
	}

	// The repeated command writes nothing.
	again, err := s.Transition(ctx, "alice", migrate.Op{ID: "op-1", To: migrate.PhaseShadow})
	if err != nil || again.Revision != got.Revision {
		t.Errorf("repeat: revision %d, %v; want %d, nil", again.Revision, err, got.Revision)
	}
}

func TestGetErrors(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	tests := []struct {
		id   string
		want error
	}{
		{"nobody", migrate.ErrNotFound},
		{"a.b", migrate.ErrInvalidUserID},
		{"", migrate.ErrInvalidUserID},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			if _, err := s.Get(ctx, tt.id); !errors.Is(err, tt.want) {
				t.Errorf("Get(%q) = %v, want %v", tt.id, err, tt.want)
			}
		})
	}
	if _, err := s.Transition(ctx, "a>", migrate.Op{To: migrate.PhaseShadow}); !errors.Is(err, migrate.ErrInvalidUserID) {
		t.Errorf("Transition with a bad id: %v", err)
	}
	if _, err := s.SeeDevice(ctx, "alice", migrate.Device{}); !errors.Is(err, migrate.ErrInvalidDevice) {
		t.Errorf("SeeDevice without a device id: %v", err)
	}
}

func TestIllegalTransitionChangesNothing(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})

	before, err := s.Transition(ctx, "bob", migrate.Op{ID: "a", To: migrate.PhaseShadow})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   string
		op   migrate.Op
	}{
		{"skips a phase", "bob", migrate.Op{ID: "b", To: migrate.PhaseCloud}},
		{"same phase", "bob", migrate.Op{ID: "c", To: migrate.PhaseShadow}},
		{"op id reused", "bob", migrate.Op{ID: "a", To: migrate.PhaseReady}},
		{"new user skips a phase", "carol", migrate.Op{To: migrate.PhaseReady}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Transition(ctx, tt.id, tt.op)
			var te *migrate.TransitionError
			if !errors.As(err, &te) || !errors.Is(err, migrate.ErrIllegalTransition) {
				t.Fatalf("err = %v, want a TransitionError", err)
			}
		})
	}
	after, err := s.Get(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("record changed (-before +after):\n%s", diff)
	}
	if _, err := s.Get(ctx, "carol"); !errors.Is(err, migrate.ErrNotFound) {
		t.Errorf("refused transition of a new user created it: %v", err)
	}
}

func TestRestartKeepsPhase(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	e := enginetest.StartIn(t, dir)
	s := startStore(t, ctx, e.JS, Config{})
	var last migrate.User
	for i, p := range []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud} {
		var err error
		if last, err = s.Transition(ctx, "dave", migrate.Op{ID: fmt.Sprint("op-", i), To: p}); err != nil {
			t.Fatalf("to %s: %v", p, err)
		}
	}
	if _, err := s.SeeDevice(ctx, "erin", migrate.Device{ID: "d1", Platform: "ios"}); err != nil {
		t.Fatal(err)
	}
	s.stop()
	if err := e.Close(); err != nil {
		t.Fatalf("close engine: %v", err)
	}

	e2 := enginetest.StartIn(t, dir)
	s2 := startStore(t, ctx, e2.JS, Config{})
	got, ok := s2.st.Get("dave")
	if !ok {
		t.Fatalf("dave missing after restart")
	}
	if diff := cmp.Diff(last, got); diff != "" {
		t.Errorf("after restart (-before +after):\n%s", diff)
	}
	if c := s2.st.Snapshot().CountByPhase(); c[migrate.PhaseCloud] != 1 || c[migrate.PhaseLegacy] != 1 {
		t.Errorf("counts after restart: %v", c)
	}
}

func TestConcurrentTransitions(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	first, err := s.SeeDevice(ctx, "frank", migrate.Device{ID: "d1"})
	if err != nil {
		t.Fatal(err)
	}

	const writers = 8
	rev := first.Revision
	for step, to := range []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud, migrate.PhaseFinalized} {
		t.Run(string(to), func(t *testing.T) {
			type result struct {
				u   migrate.User
				err error
			}
			results := make([]result, writers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for g := range writers {
				// Even writers repeat one shared operation; odd ones
				// each issue their own.
				opID := fmt.Sprintf("step-%d", step)
				if g%2 == 1 {
					opID = fmt.Sprintf("step-%d-writer-%d", step, g)
				}
				wg.Go(func() {
					<-start
					u, err := s.Transition(ctx, "frank", migrate.Op{ID: opID, To: to})
					results[g] = result{u, err}
				})
			}
			close(start)
			wg.Wait()

			stored, err := s.Get(ctx, "frank")
			if err != nil {
				t.Fatal(err)
			}
			// The bucket holds only frank: one write moves the revision
			// by exactly one.
			if stored.Phase != to || stored.Revision != rev+1 {
				t.Fatalf("stored %s rev %d, want %s rev %d", stored.Phase, stored.Revision, to, rev+1)
			}
			rev = stored.Revision
			winners := 0
			for g, r := range results {
				switch {
				case r.err == nil:
					if r.u.OpID != stored.OpID || r.u.Revision != stored.Revision {
						t.Errorf("writer %d succeeded with op %s rev %d, stored op %s rev %d",
							g, r.u.OpID, r.u.Revision, stored.OpID, stored.Revision)
					}
					winners++
				case errors.Is(r.err, migrate.ErrIllegalTransition):
				default:
					t.Errorf("writer %d: %v", g, r.err)
				}
			}
			// One writer won; when it used the shared op id, the others
			// repeating that operation succeed idempotently.
			wantWinners := 1
			if stored.OpID == fmt.Sprintf("step-%d", step) {
				wantWinners = writers / 2
			}
			if winners != wantWinners {
				t.Errorf("%d writers succeeded, want %d (winning op %s)", winners, wantWinners, stored.OpID)
			}
			if d, _ := stored.Device("d1"); d.ID != "d1" {
				t.Errorf("device lost: %+v", stored.Devices)
			}
		})
	}
}

func TestConcurrentNoLostUpdate(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{MaxRetries: 64})

	const writers = 6
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for g := range writers {
		wg.Go(func() {
			if _, err := s.SeeDevice(ctx, "gina", migrate.Device{ID: fmt.Sprint("dev-", g), Platform: "android"}); err != nil {
				errs <- err
			}
		})
	}
	wg.Go(func() {
		if _, err := s.Transition(ctx, "gina", migrate.Op{ID: "x", To: migrate.PhaseShadow}); err != nil {
			errs <- err
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	got, err := s.Get(ctx, "gina")
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != migrate.PhaseShadow || len(got.Devices) != writers {
		t.Errorf("lost an update: phase %s, %d devices: %+v", got.Phase, len(got.Devices), got.Devices)
	}
	waitFor(t, ctx, "State to catch up", func() bool {
		u, _ := s.st.Get("gina")
		return u.Revision == got.Revision
	})
}

// racingKV loses every compare-and-set: before each Update it rewrites the
// key's current value, as a faster agent would.
type racingKV struct {
	jetstream.KeyValue
	updates int
}

func (r *racingKV) Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error) {
	r.updates++
	cur, err := r.KeyValue.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if _, err := r.KeyValue.Put(ctx, key, cur.Value()); err != nil {
		return 0, err
	}
	return r.KeyValue.Update(ctx, key, value, revision)
}

func TestConflictAfterMaxRetries(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{MaxRetries: 3})
	if _, err := s.Transition(ctx, "hank", migrate.Op{To: migrate.PhaseShadow}); err != nil {
		t.Fatal(err)
	}
	r := &racingKV{KeyValue: s.kv}
	s.kv = r
	_, err := s.Transition(ctx, "hank", migrate.Op{To: migrate.PhaseReady})
	if !errors.Is(err, migrate.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if r.updates != 3 {
		t.Errorf("%d attempts, want 3", r.updates)
	}
}

func TestSeeDevice(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	clock := &fakeClock{t: t0}
	s := startStore(t, ctx, e.JS, Config{Now: clock.Now})

	base := migrate.Device{ID: "d1", Platform: "android", ClientVersion: "5.1.0"}
	tests := []struct {
		name      string
		advance   time.Duration
		dev       migrate.Device
		wantWrite bool
		wantSeen  time.Time
	}{
		{"new user and device", 0, base, true, t0},
		{"same again", 0, base, false, t0},
		{"five minutes later", 5 * time.Minute, base, false, t0},
		{"ten minutes after the stored time", 5 * time.Minute, base, false, t0},
		{"just over ten minutes", time.Second, base, true, t0.Add(10*time.Minute + time.Second)},
		{"new version", 0, migrate.Device{ID: "d1", Platform: "android", ClientVersion: "5.2.0"}, true, t0.Add(10*time.Minute + time.Second)},
		{"new platform", 0, migrate.Device{ID: "d1", Platform: "ios", ClientVersion: "5.2.0"}, true, t0.Add(10*time.Minute + time.Second)},
		{"late report keeps the newer time", 0, migrate.Device{ID: "d1", Platform: "ios", ClientVersion: "5.3.0", LastSeen: t0}, true, t0.Add(10*time.Minute + time.Second)},
		{"second device", 0, migrate.Device{ID: "d0", Platform: "web"}, true, t0.Add(10*time.Minute + time.Second)},
	}
	var rev uint64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Advance(tt.advance)
			u, err := s.SeeDevice(ctx, "ivan", tt.dev)
			if err != nil {
				t.Fatal(err)
			}
			if wrote := u.Revision != rev; wrote != tt.wantWrite {
				t.Errorf("revision %d -> %d: wrote=%v, want %v", rev, u.Revision, wrote, tt.wantWrite)
			}
			rev = u.Revision
			d, ok := u.Device(tt.dev.ID)
			if !ok {
				t.Fatalf("device missing: %+v", u.Devices)
			}
			if !d.LastSeen.Equal(tt.wantSeen) || d.Platform != tt.dev.Platform || d.ClientVersion != tt.dev.ClientVersion {
				t.Errorf("device %+v, want %+v seen %v", d, tt.dev, tt.wantSeen)
			}
			stored, err := s.Get(ctx, "ivan")
			if err != nil || stored.Revision != rev {
				t.Errorf("KV revision %d (%v), want %d", stored.Revision, err, rev)
			}
		})
	}
	u, _ := s.Get(ctx, "ivan")
	if u.Phase != migrate.PhaseLegacy || len(u.Devices) != 2 || u.Devices[0].ID != "d0" {
		t.Errorf("final record %+v", u)
	}
}

func TestSecondStoreSeesWrites(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	a := startStore(t, ctx, e.JS, Config{Bucket: "shared"})
	b := startStore(t, ctx, e.JS, Config{Bucket: "shared"})

	changed := make(chan migrate.User, 16)
	b.st.OnChange(func(_ *migrate.User, cur migrate.User) { changed <- cur })
	removed := make(chan string, 1)
	b.st.OnRemove(func(prev migrate.User) { removed <- prev.ID })

	want, err := a.Transition(ctx, "judy", migrate.Op{ID: "o1", To: migrate.PhaseShadow})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-changed:
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("b saw (-want +got):\n%s", diff)
		}
	case <-ctx.Done():
		t.Fatal("b never saw a's write")
	}

	// A deletion reaches b's State too.
	if err := a.kv.Delete(ctx, "judy"); err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-removed:
		if id != "judy" {
			t.Errorf("removed %s", id)
		}
	case <-ctx.Done():
		t.Fatal("b never saw the delete")
	}
	if n := b.st.Snapshot().Len(); n != 0 {
		t.Errorf("b holds %d users after the delete", n)
	}

	// b can create the user again after the delete.
	if _, err := b.Transition(ctx, "judy", migrate.Op{To: migrate.PhaseShadow}); err != nil {
		t.Fatalf("recreate: %v", err)
	}
	waitFor(t, ctx, "a to see b's write", func() bool {
		u, ok := a.st.Get("judy")
		return ok && u.Phase == migrate.PhaseShadow && u.OpID == ""
	})
}

func TestRunLoadsExistingBucket(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	writer := startStore(t, ctx, e.JS, Config{})
	const n = 1200 // more than one State batch
	for i := range n {
		if _, err := writer.SeeDevice(ctx, fmt.Sprintf("user-%04d", i), migrate.Device{ID: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := writer.kv.Put(ctx, "garbage", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	reader := startStore(t, ctx, e.JS, Config{})
	// The undecodable record is not skipped: it shows as a held user
	// (TestCorruptRecordHeld), so that ops see it.
	if got := reader.st.Snapshot().Len(); got != n+1 {
		t.Errorf("after Ready the State holds %d users, want %d and the corrupt one", got, n)
	}
	if got := reader.CorruptRecords(); got != 1 {
		t.Errorf("CorruptRecords = %d, want 1", got)
	}
	if err := reader.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestCorruptRecordHeld(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	for _, id := range []string{"kate", "liam"} {
		for _, to := range []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud} {
			if _, err := s.Transition(ctx, id, migrate.Op{To: to, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.Transition(ctx, "liam", migrate.Op{To: migrate.PhaseHeld, Reason: "ops"}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"kate", "liam", "mona"} {
		if _, err := s.kv.Put(ctx, id, []byte(`{"id":"`+id+`","phase":"nowhere"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		id    string
		prior migrate.Phase
		home  bool
	}{
		{"kate", migrate.PhaseCloud, true}, // frozen where it was: still a cloud home
		{"liam", migrate.PhaseCloud, true}, // already held: keeps its prior
		{"mona", "", false},                // never seen: held, no prior
	} {
		waitFor(t, ctx, tc.id+" held as corrupt", func() bool {
			u, ok := s.st.Get(tc.id)
			return ok && u.Reason == ReasonCorruptRecord
		})
		u, _ := s.st.Get(tc.id)
		if u.Phase != migrate.PhaseHeld || u.Prior != tc.prior || u.CloudHome() != tc.home {
			t.Errorf("%s: phase %s prior %q cloud home %v, want held prior %q cloud home %v", tc.id, u.Phase, u.Prior, u.CloudHome(), tc.prior, tc.home)
		}
	}
	if got := s.CorruptRecords(); got != 3 {
		t.Errorf("CorruptRecords = %d, want 3", got)
	}
	// A valid record written over the corrupt one replaces the stand-in.
	good, _ := json.Marshal(migrate.User{ID: "kate", Phase: migrate.PhaseShadow})
	if _, err := s.kv.Put(ctx, "kate", good); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "kate's valid record", func() bool {
		u, ok := s.st.Get("kate")
		return ok && u.Phase == migrate.PhaseShadow && u.Reason == ""
	})
}

// staleKV answers the first stale Gets of its key with the entry it was
// given, as a JetStream replica that has not yet applied the latest write
// answers a direct get.
type staleKV struct {
	jetstream.KeyValue
	entry jetstream.KeyValueEntry
	stale atomic.Int32
}

func (k *staleKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	if key == k.entry.Key() && k.stale.Add(-1) >= 0 {
		return k.entry, nil
	}
	return k.KeyValue.Get(ctx, key)
}

// TestTransitionReadsPastAStaleReplica: a user this agent moved to ready
// is moved on to the cloud although the bucket's first two answers still
// show the record before that move (a lagging replica's direct get): the
// store sees that its State knows a newer revision and reads again,
// instead of refusing ready→cloud as if the user were still in shadow.
func TestTransitionReadsPastAStaleReplica(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s := startStore(t, ctx, e.JS, Config{})
	if _, err := s.Transition(ctx, "dave", migrate.Op{ID: "s", To: migrate.PhaseShadow}); err != nil {
		t.Fatal(err)
	}
	old, err := s.kv.Get(ctx, "dave")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, "dave", migrate.Op{ID: "r", To: migrate.PhaseReady}); err != nil {
		t.Fatal(err)
	}
	kv := &staleKV{KeyValue: s.kv, entry: old}
	kv.stale.Store(2)
	s.kv = kv
	u, err := s.Transition(ctx, "dave", migrate.Op{ID: "c", To: migrate.PhaseCloud})
	if err != nil || u.Phase != migrate.PhaseCloud {
		t.Fatalf("ready→cloud past a stale read: %+v, %v", u, err)
	}
	if n := kv.stale.Load(); n >= 0 {
		t.Fatalf("%d stale answers left unused: the test did not exercise the stale read", n+1)
	}
}
