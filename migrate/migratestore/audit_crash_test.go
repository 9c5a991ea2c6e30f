package migratestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"
)

// checkHistory is the bucket history the audit tests compare the log with.
const checkHistory = jetstream.KeyValueMaxHistory

// auditedRound moves every one of ids to phase to with
// TransitionManyAudited, op id opID, campaign campaign, and fails on any
// error but a repeat (a round made again after a restart).
func auditedRound(tb testing.TB, ctx context.Context, s *Store, ids []string, to migrate.Phase, campaign, opID string) {
	tb.Helper()
	ops := make([]migrate.UserOp, len(ids))
	events := make([]migrate.AuditEvent, len(ids))
	for i, id := range ids {
		ops[i] = migrate.UserOp{User: id, Op: migrate.Op{ID: opID, To: to, Reason: "audit test"}}
		events[i] = migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: migrate.ActorDriver, OpID: opID,
			Campaign: campaign, Step: 0, User: id, To: string(to), Result: migrate.ResultOK}
	}
	for i, err := range s.TransitionManyAudited(ctx, ops, events) {
		if err != nil && !errors.Is(err, migrate.ErrRepeated) {
			tb.Fatalf("op %d (%s): %v", i, ids[i], err)
		}
	}
}

// checkAuditMatchesHistory compares the audit log of campaign, as Query
// answers it, with every write of ids the bucket kept (each is a
// transition): each write has exactly one event with its op id and phase,
// and no event names a write that is not there. It returns how many events
// Query answered and how many the stream holds for the campaign (the
// difference being intents whose write never landed).
func checkAuditMatchesHistory(tb testing.TB, ctx context.Context, js jetstream.JetStream, bucket, campaign string, ids []string) (answered, stored int) {
	tb.Helper()
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		tb.Fatal(err)
	}
	// Every revision the bucket kept, in order; a write that changes the
	// op id or the phase is a transition (a device update is not).
	w, err := kv.WatchAll(ctx, jetstream.IncludeHistory())
	if err != nil {
		tb.Fatal(err)
	}
	defer w.Stop()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	last := map[string]migrate.User{}
	revisions := map[string]int{}
	committed := map[string]int{}
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if !want[e.Key()] {
			continue
		}
		u, err := decode(e.Key(), e.Value(), e.Revision())
		if err != nil {
			tb.Fatal(err)
		}
		revisions[u.ID]++
		if p, ok := last[u.ID]; !ok || p.OpID != u.OpID || p.Phase != u.Phase {
			committed[u.ID+" "+u.OpID+" "+string(u.Phase)]++
		}
		last[u.ID] = u
	}
	for id, n := range revisions {
		if n >= checkHistory {
			tb.Fatalf("%s has %d revisions: the bucket may have dropped some, the test cannot judge", id, n)
		}
	}
	a, err := NewAudit(ctx, js, "", 0)
	if err != nil {
		tb.Fatal(err)
	}
	a.bucket = bucket
	evs, err := a.Query(ctx, AuditQuery{Campaign: campaign})
	if err != nil {
		tb.Fatal(err)
	}
	audited := map[string]int{}
	for _, ev := range evs {
		audited[ev.User+" "+ev.OpID+" "+ev.To]++
	}
	if diff := cmp.Diff(committed, audited); diff != "" {
		tb.Errorf("campaign %s: committed writes (-) vs audit events (+):\n%s", campaign, diff)
	}
	return len(evs), storedEvents(tb, ctx, js, campaign)
}

// storedEvents counts the events the audit stream holds for campaign,
// landed or not: a batch intent counts one per move it carries.
func storedEvents(tb testing.TB, ctx context.Context, js jetstream.JetStream, campaign string) int {
	tb.Helper()
	s, err := js.Stream(ctx, DefaultAuditStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(auditSubjectPrefix+".c_"+campaign+".>"))
	if err != nil {
		tb.Fatal(err)
	}
	stored := 0
	for subj, n := range info.State.Subjects {
		if !strings.HasSuffix(subj, "."+batchToken) {
			stored += int(n)
			continue
		}
		for seq := uint64(0); n > 0; n-- {
			m, err := s.GetMsg(ctx, seq+1, jetstream.WithGetMsgSubject(subj))
			if err != nil {
				tb.Fatal(err)
			}
			seq = m.Sequence
			b, _, err := decodeBatchIntent(m.Data)
			if err != nil {
				tb.Fatal(err)
			}
			stored += len(b.Users)
		}
	}
	return stored
}

// TestAuditedLostCompareAndSet moves users whose State is stale behind
// another writer's device updates: the batch's first intents name a
// revision that is no longer the user's, their compare-and-sets lose, and
// the slow path writes a second intent that lands. The log answers exactly
// one event per transition, though the stream holds both intents.
func TestAuditedLostCompareAndSet(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cfg := Config{History: checkHistory}
	s := startStore(t, ctx, e.JS, cfg)
	ids := make([]string, 300)
	for i := range ids {
		ids[i] = fmt.Sprintf("lost-%03d", i)
	}
	auditedRound(t, ctx, s.Store, ids, migrate.PhaseShadow, "lost", "first")

	// A batcher whose State the device updates leave behind.
	batcher := staleBatcher(t, ctx, e.JS, s.Store, ids, cfg)
	foreign := func(i int) bool { return i%3 == 1 }
	for i, id := range ids {
		if foreign(i) {
			if _, err := s.SeeDevice(ctx, id, migrate.Device{ID: "phone", Platform: "android", ClientVersion: "5.0"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	auditedRound(t, ctx, batcher, ids, migrate.PhaseReady, "lost", "second")
	// Repeating the round changes nothing and writes no event.
	auditedRound(t, ctx, batcher, ids, migrate.PhaseReady, "lost", "second")

	answered, stored := checkAuditMatchesHistory(t, ctx, e.JS, DefaultBucket, "lost", ids)
	if want := 2 * len(ids); answered != want {
		t.Errorf("Query answered %d events, want %d", answered, want)
	}
	lost := 0
	for i := range ids {
		if foreign(i) {
			lost++
		}
	}
	if stored != answered+lost {
		t.Errorf("the stream holds %d events, want %d answered + %d intents that lost", stored, answered, lost)
	}
}

// Environment of the child process of TestAuditSurvivesKill.
const (
	crashDirEnv  = "FERRY_AUDIT_CRASH_DIR"
	crashLifeEnv = "FERRY_AUDIT_CRASH_LIFE"
)

// Sizes of TestAuditSurvivesKill.
const (
	crashKills  = 5
	crashUsers  = 150
	crashRounds = 40 // per life, so a user's writes stay within the history
)

// TestAuditSurvivesKill runs transitions with their audit in a child
// process (this test binary, re-executed) and kills it with SIGKILL at a
// random moment, several times. After each kill it restarts the engine on
// the same directory and checks that every write the bucket kept has
// exactly one audit event and that no audit event names a write that did
// not land.
func TestAuditSurvivesKill(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(t, dir, os.Getenv(crashLifeEnv))
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	totalDropped := 0
	for life := range crashKills {
		ctx := testContext(t)
		t0 := time.Now()
		// Kill at a random moment after the first round.
		killChild(t, ctx, "TestAuditSurvivesKill", []string{crashDirEnv + "=" + dir, crashLifeEnv + "=" + strconv.Itoa(life)}, "round ", 400*time.Millisecond)

		t.Logf("life %d: killed %v after start", life, time.Since(t0))
		ids := crashIDs(life)
		e := enginetest.StartIn(t, dir)
		answered, stored := checkAuditMatchesHistory(t, ctx, e.JS, DefaultBucket, crashCampaign(life), ids)
		t.Logf("life %d: %d transitions audited; %d intents whose write never landed dropped", life, answered, stored-answered)
		totalDropped += stored - answered
		e.Close()
		if t.Failed() {
			return
		}
	}
	t.Logf("%d kills; %d intents dropped in all", crashKills, totalDropped)
}

func crashCampaign(life int) string { return "life" + strconv.Itoa(life) }

func crashIDs(life int) []string {
	ids := make([]string, crashUsers)
	for i := range ids {
		ids[i] = fmt.Sprintf("l%d-u%03d", life, i)
	}
	return ids
}

// crashChild is the child of TestAuditSurvivesKill: on the engine in dir it
// moves its life's users round after round, printing "round N" after each,
// until it is killed (or, past crashRounds, idles until it is).
func crashChild(t *testing.T, dir, lifeArg string) {
	life, err := strconv.Atoi(lifeArg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := enginetest.StartIn(t, dir)
	s := startStore(t, ctx, e.JS, Config{History: checkHistory})
	ids := crashIDs(life)
	for r := range crashRounds {
		to := migrate.PhaseShadow // legacy→shadow, then ready and shadow in turn
		if r%2 == 1 {
			to = migrate.PhaseReady
		}
		// Every third round moves a fifth of the users one by one, as the
		// admin API's manual changes do (TransitionAudited), the rest in a
		// batch: a kill lands in either.
		if r%3 == 2 {
			manual, batched := splitManual(ids, r)
			manualRound(t, ctx, s.Store, manual, to, crashCampaign(life), "r"+strconv.Itoa(r))
			auditedRound(t, ctx, s.Store, batched, to, crashCampaign(life), "r"+strconv.Itoa(r))
		} else {
			auditedRound(t, ctx, s.Store, ids, to, crashCampaign(life), "r"+strconv.Itoa(r))
		}
		fmt.Printf("round %d\n", r)
	}
	<-ctx.Done()
}

// splitManual splits ids into the fifth round r moves one by one and the
// rest.
func splitManual(ids []string, r int) (manual, batched []string) {
	for i, id := range ids {
		if i%5 == r%5 {
			manual = append(manual, id)
		} else {
			batched = append(batched, id)
		}
	}
	return manual, batched
}

// manualRound moves each of ids to phase to with TransitionAudited, as the
// admin API's manual changes do, a few at a time, and fails on any error.
func manualRound(tb testing.TB, ctx context.Context, s *Store, ids []string, to migrate.Phase, campaign, opID string) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	sem := make(chan struct{}, 8)
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ev := migrate.AuditEvent{Kind: migrate.AuditTransition, Actor: "ops@example", OpID: opID,
				Campaign: campaign, Step: -1, To: string(to), Reason: "manual", Result: migrate.ResultOK}
			_, errs[i] = s.TransitionAudited(ctx, id, migrate.Op{ID: opID, To: to, Reason: "manual"}, ev)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			tb.Fatalf("manual %s: %v", ids[i], err)
		}
	}
}
