package migratestore

import (
	"fmt"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// TestGuardrailFailMovesNobodyUntilItStops checks that a failed guardrail
// whose pause did not land (an operator's change of the campaign won the
// compare-and-set) still stops the campaign: the next ticks, before the
// next evaluation is due, pause it and move nobody. Before the fix the
// driver kept the fail as the campaign's outcome and went on moving users
// until the next evaluation, a minute later by default.
func TestGuardrailFailMovesNobodyUntilItStops(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	users := startStore(t, ctx, e.JS, Config{})
	const n = 20
	for i := range n {
		if _, err := users.SeeDevice(ctx, fmt.Sprintf("u%02d", i), migrate.Device{ID: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "the users in the state", func() bool { return users.st.Snapshot().Len() == n })
	cs, audit := campaignStores(t, ctx, e.JS)
	now := t0
	c, _ := migrate.Campaign{Name: "guarded", Steps: []migrate.Step{{TargetBP: migrate.BasisPoints}}, Pace: migrate.Pace{PerMinute: 1 << 20},
		Guardrails: []migrate.Guardrail{{Name: "bridge", Measure: migrate.MeasureBridgeFailures, MaxExcess: 0.01, MinSamples: 10}}}.Lifecycle(migrate.CmdStart, "test", "salt", now)
	if _, err := cs.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	moved := 0
	store := &racedCampaigns{DriverCampaigns: DriverCampaigns{cs, audit}, races: 1}
	d, err := migrate.NewDriver(migrate.DriverConfig{State: users.st, Users: users.Store, Campaigns: store, Audit: audit,
		Measures: failingMeasures{}, GuardrailEvery: time.Hour,
		OnTransition: func(_, _ migrate.Phase, result string) {
			if result == migrate.ResultOK {
				moved++
			}
		},
		Now: func() time.Time { now = now.Add(time.Second); return now }}) // one goroutine: Tick
	if err != nil {
		t.Fatal(err)
	}
	// First tick: the guardrail fails and its pause loses to the rival write.
	if err := d.Tick(ctx); err == nil {
		t.Fatal("tick with a lost pause returned no error")
	}
	for i := range 3 {
		if err := d.Tick(ctx); err != nil {
			t.Fatalf("tick %d: %v", i+2, err)
		}
	}
	if moved != 0 {
		t.Errorf("%d users moved while the guardrail failed", moved)
	}
	got, err := cs.Get(ctx, "guarded")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != migrate.CampaignPaused {
		t.Errorf("campaign is %s after a failed guardrail, want paused", got.State)
	}
	evs, err := audit.Query(ctx, AuditQuery{Campaign: "guarded"})
	if err != nil {
		t.Fatal(err)
	}
	var pauses int
	for _, ev := range evs {
		if ev.Kind == migrate.AuditCampaign && ev.To == string(migrate.CampaignPaused) {
			pauses++
			if ev.Values["bridge.value"] == 0 || ev.Thresholds["bridge.max_excess"] != 0.01 {
				t.Errorf("pause event lacks the guardrail's values and thresholds: %+v", ev)
			}
		}
		if ev.Kind == migrate.AuditTransition {
			t.Errorf("move audited while the guardrail failed: %+v", ev)
		}
	}
	if pauses != 1 {
		t.Errorf("%d pause events, want 1", pauses)
	}
}
