package migratestore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// racedCampaigns is the driver's campaign store with a rival writer: for
// the first races decisions, it rewrites the campaign between the
// decision's intent and its compare-and-set, so that the record write
// fails after the event was written.
type racedCampaigns struct {
	DriverCampaigns
	races int
}

func (r *racedCampaigns) ModifyAudited(ctx context.Context, name, opID string, fn func(migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error)) (migrate.Campaign, error) {
	return r.DriverCampaigns.ModifyAudited(ctx, name, opID, func(cur migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		next, ev, err := fn(cur)
		if err != nil || r.races == 0 {
			return next, ev, err
		}
		r.races--
		// ModifyAudited writes the intent after fn returns: the rival's
		// write, here, makes its compare-and-set lose.
		if _, err := r.Campaigns.Update(ctx, cur); err != nil {
			return migrate.Campaign{}, migrate.AuditEvent{}, err
		}
		return next, ev, nil
	})
}

// failingMeasures measures a cohort far worse than its control group.
type failingMeasures struct{}

func (failingMeasures) Measure(context.Context, string, time.Duration, time.Time) (migrate.Sample, migrate.Sample, error) {
	return migrate.Sample{Total: 1000, Bad: 500}, migrate.Sample{Total: 1000, Bad: 1}, nil
}

// TestDriverDecisionsAuditedFirst checks that the driver's own campaign
// decisions (a step's soak, a step advance, a guardrail pause) each leave
// exactly one event in the audit log, written before the record: a
// decision whose record write lost leaves none that Query answers, and its
// retry at the next tick one.
func TestDriverDecisionsAuditedFirst(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	users := startStore(t, ctx, e.JS, Config{})
	cs, audit := campaignStores(t, ctx, e.JS)
	now := time.Now()
	steps := []migrate.Step{{TargetBP: 100}, {TargetBP: 200}}
	plain, _ := migrate.Campaign{Name: "plain", Steps: steps}.Lifecycle(migrate.CmdStart, "test", "salt", now)
	guarded, _ := migrate.Campaign{Name: "guarded", Steps: steps,
		Guardrails: []migrate.Guardrail{{Name: "bridge", Measure: migrate.MeasureBridgeFailures, MaxExcess: 0.01, MinSamples: 10}}}.Lifecycle(migrate.CmdStart, "test", "salt", now)
	for _, c := range []migrate.Campaign{plain, guarded} {
		if _, err := cs.Create(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	store := &racedCampaigns{DriverCampaigns: DriverCampaigns{cs, audit}, races: 2}
	d, err := migrate.NewDriver(migrate.DriverConfig{State: users.st, Users: users.Store, Campaigns: store, Audit: audit,
		Measures: failingMeasures{}, GuardrailEvery: time.Nanosecond,
		Now: func() time.Time { now = now.Add(time.Second); return now }}) // one goroutine: Tick
	if err != nil {
		t.Fatal(err)
	}
	campaignEvents := func(name string) []migrate.AuditEvent {
		t.Helper()
		evs, err := audit.Query(ctx, AuditQuery{Campaign: name})
		if err != nil {
			t.Fatal(err)
		}
		var out []migrate.AuditEvent
		for _, ev := range evs {
			if ev.Kind == migrate.AuditCampaign {
				out = append(out, ev)
			}
		}
		return out
	}

	// First tick: both decisions (plain soaks step 0, guarded pauses) lose
	// their record write after their intents.
	if err := d.Tick(ctx); err == nil {
		t.Fatal("tick with lost record writes returned no error")
	}
	for _, name := range []string{"plain", "guarded"} {
		if evs := campaignEvents(name); len(evs) != 0 {
			t.Errorf("%s: %d campaign events of decisions that did not land: %+v", name, len(evs), evs)
		}
		if stored := campaignStored(t, ctx, e.JS, name); stored == 0 {
			t.Errorf("%s: no intent in the stream: the decision was not audited first", name)
		}
	}

	// Later ticks: plain soaks, then advances to step 1; guarded pauses once.
	for range 3 {
		if err := d.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		to   []string
	}{
		{"plain", []string{"soaking", "step 1", "soaking"}},
		{"guarded", []string{string(migrate.CampaignPaused)}},
	} {
		evs := campaignEvents(tc.name)
		var to []string
		for _, ev := range evs {
			to = append(to, ev.To)
			if ev.Actor != migrate.ActorDriver || !strings.HasPrefix(ev.OpID, "driver."+tc.name+".") {
				t.Errorf("%s: event %+v is not the driver's decision", tc.name, ev)
			}
		}
		if strings.Join(to, ",") != strings.Join(tc.to, ",") {
			t.Errorf("%s: campaign events to %q, want %q", tc.name, to, tc.to)
		}
		c, err := cs.Get(ctx, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 && (c.LastOp != evs[len(evs)-1].OpID || c.Audit == 0) {
			t.Errorf("%s: record's last op %q (audit %d), last event's %q", tc.name, c.LastOp, c.Audit, evs[len(evs)-1].OpID)
		}
	}
	evs := campaignEvents("guarded")
	if len(evs) == 1 && (evs[0].Values["bridge.value"] == 0 || evs[0].Thresholds["bridge.max_excess"] != 0.01) {
		t.Errorf("guardrail pause event lacks the values and thresholds: %+v", evs[0])
	}
}
