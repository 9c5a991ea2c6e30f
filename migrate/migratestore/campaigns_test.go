package migratestore

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

func TestCampaignsStore(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s, err := NewCampaigns(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := migrate.Campaign{Name: "spring", State: migrate.CampaignDraft, Steps: []migrate.Step{{TargetBP: 100, MinSoak: migrate.Duration(time.Hour)}}}
	got, err := s.Create(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, c); !errors.Is(err, migrate.ErrCampaignExists) {
		t.Errorf("second create: %v", err)
	}
	if _, err := s.Create(ctx, migrate.Campaign{Name: "bad"}); !errors.Is(err, migrate.ErrInvalidCampaign) {
		t.Errorf("invalid create: %v", err)
	}
	if _, err := s.Get(ctx, "nope"); !errors.Is(err, migrate.ErrCampaignNotFound) {
		t.Errorf("get missing: %v", err)
	}
	// A stale revision loses.
	stale := got
	got.Reason = "first"
	if got, err = s.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	stale.Reason = "second"
	if _, err := s.Update(ctx, stale); !errors.Is(err, migrate.ErrConflict) {
		t.Errorf("stale update: %v", err)
	}
	started, err := s.Modify(ctx, "spring", func(c migrate.Campaign) (migrate.Campaign, error) {
		return c.Lifecycle(migrate.CmdStart, "go", "salt", time.Now())
	})
	if err != nil || started.State != migrate.CampaignRunning || started.Salt != "salt" {
		t.Fatalf("start: %+v %v", started, err)
	}
	back, err := s.Get(ctx, "spring")
	if err != nil || back.Revision != started.Revision || time.Duration(back.Steps[0].MinSoak) != time.Hour {
		t.Errorf("read back %+v %v", back, err)
	}
	if _, err := s.Create(ctx, migrate.Campaign{Name: "autumn", Steps: []migrate.Step{{TargetBP: 5}}}); err != nil {
		t.Fatal(err)
	}
	audit, err := NewAudit(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetFreezeAudited(ctx, audit, Freeze{On: true, Reason: "holiday"}, "freeze-1"); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(ctx)
	if err != nil || len(all) != 2 || all[0].Name != "autumn" {
		t.Fatalf("list: %d %v", len(all), err)
	}
	if on, err := s.Frozen(ctx); !on || err != nil {
		t.Errorf("frozen %v %v", on, err)
	}
}

func TestAuditQuery(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	a, err := NewAudit(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := a.Query(ctx, AuditQuery{}); err != nil || len(evs) != 0 {
		t.Fatalf("empty: %v %v", evs, err)
	}
	base := time.Now().UTC()
	var evs []migrate.AuditEvent
	for i := range 30 {
		evs = append(evs, migrate.AuditEvent{At: base, Kind: migrate.AuditTransition, Actor: "driver", Campaign: []string{"a", "b", ""}[i%3],
			User: fmt.Sprintf("u%d", i%5), From: "legacy", To: "shadow", Result: migrate.ResultOK, Step: 0,
			Values: map[string]float64{"actual_bp": float64(i)}, Thresholds: map[string]float64{"target_bp": 100}})
	}
	if err := a.Record(ctx, evs...); err != nil {
		t.Fatal(err)
	}
	if err := a.Record(ctx, migrate.AuditEvent{User: "bad user"}); !errors.Is(err, migrate.ErrInvalidUserID) {
		t.Errorf("bad user: %v", err)
	}
	count := func(q AuditQuery) int {
		t.Helper()
		got, err := a.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return len(got)
	}
	tests := []struct {
		name string
		q    AuditQuery
		want int
	}{
		{"all", AuditQuery{}, 30},
		{"campaign", AuditQuery{Campaign: "a"}, 10},
		{"user", AuditQuery{User: "u1"}, 6},
		{"both", AuditQuery{Campaign: "b", User: "u1"}, 2}, // i = 1, 16
		{"nobody", AuditQuery{User: "zed"}, 0},
		{"limit", AuditQuery{Limit: 7}, 7},
		{"future", AuditQuery{Since: time.Now().Add(time.Hour)}, 0},
		{"past", AuditQuery{Since: base.Add(-time.Hour)}, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := count(tt.q); got != tt.want {
				t.Errorf("%d events, want %d", got, tt.want)
			}
		})
	}
	got, _ := a.Query(ctx, AuditQuery{Campaign: "a", User: "u0"})
	if len(got) != 2 || got[0].Values["actual_bp"] != 0 || got[0].Thresholds["target_bp"] != 100 {
		t.Errorf("event round trip: %+v", got)
	}
}

// TestDriverSurvivesRestart runs a campaign through the real stores, stops
// the engine mid-campaign, and lets a new driver on the restarted engine
// finish it.
func TestDriverSurvivesRestart(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	const n = 300
	phase := func(e *migrate.State) int { return e.Snapshot().Count(migrate.PhaseCloud) }

	runFor := func(ticks int) (*migrate.State, func()) {
		e := enginetest.StartIn(t, dir)
		users := startStore(t, ctx, e.JS, Config{})
		cs, audit := campaignStores(t, ctx, e.JS)
		if _, err := cs.Get(ctx, "r"); errors.Is(err, migrate.ErrCampaignNotFound) {
			for i := range n {
				if _, err := users.SeeDevice(ctx, fmt.Sprintf("u%03d", i), migrate.Device{ID: "d"}); err != nil {
					t.Fatal(err)
				}
			}
			c := migrate.Campaign{Name: "r", Steps: []migrate.Step{{TargetBP: migrate.BasisPoints}}, Pace: migrate.Pace{PerMinute: 1 << 30}}
			c, _ = c.Lifecycle(migrate.CmdStart, "test", "salt", time.Now())
			if _, err := cs.Create(ctx, c); err != nil {
				t.Fatal(err)
			}
		}
		d, err := migrate.NewDriver(migrate.DriverConfig{State: users.st, Users: users.Store, Campaigns: DriverCampaigns{cs, audit}, Audit: audit, MaxPerTick: 100})
		if err != nil {
			t.Fatal(err)
		}
		for range ticks {
			if err := d.Tick(ctx); err != nil {
				t.Fatal(err)
			}
		}
		return users.st, func() { users.stop(); e.Close() }
	}
	st, stop := runFor(5) // 500 of 900 moves
	if got := phase(st); got == 0 || got == n {
		t.Fatalf("%d in cloud after the first run", got)
	}
	stop()
	st, _ = runFor(10)
	if got := phase(st); got != n {
		t.Errorf("%d in cloud after the restart, want %d", got, n)
	}
}

var _ migrate.CampaignStore = DriverCampaigns{}
var _ migrate.Auditor = (*Audit)(nil)
var _ migrate.UserMover = (*Store)(nil)

// TestCampaignsListWhileRewritten: a campaign the driver rewrites all the
// time (every tick while it runs) is in every list taken meanwhile, and a
// deleted key is not (a list read through a KV consumer could come back
// short while keys were being rewritten).
func TestCampaignsListWhileRewritten(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	s, err := NewCampaigns(ctx, e.JS, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"spring", "autumn"} {
		if _, err := s.Create(ctx, migrate.Campaign{Name: name, Steps: []migrate.Step{{TargetBP: 100}}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.kv.Delete(ctx, campaignKeyPrefix+"autumn"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		for i := range 300 {
			if _, err := s.Modify(ctx, "spring", func(c migrate.Campaign) (migrate.Campaign, error) {
				c.Steps[0].TargetBP = 100 + i
				return c, nil
			}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; ; i++ {
		list, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].Name != "spring" {
			t.Fatalf("list %d while spring is rewritten: %+v, want only spring", i, list)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d lists taken during 300 rewrites", i+1)
			return
		default:
		}
	}
}
