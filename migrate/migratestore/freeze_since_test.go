package migratestore

import (
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestFreezeSinceIsTheFirstOn: a second "freeze on" (a new reason, another
// operator) moved the freeze's since to its own time, so `gateway freeze
// status` no longer said how long campaigns had been frozen.
func TestFreezeSinceIsTheFirstOn(t *testing.T) {
	ctx := testContext(t)
	e := enginetest.Start(t)
	cs, audit := campaignStores(t, ctx, e.JS)
	for i, step := range []struct {
		on        bool
		at, since time.Time
	}{
		{true, t0, t0},
		{true, t0.Add(time.Hour), t0}, // still on since t0
		{false, t0.Add(2 * time.Hour), t0.Add(2 * time.Hour)}, // off since then
		{true, t0.Add(3 * time.Hour), t0.Add(3 * time.Hour)},  // on again
	} {
		f, err := cs.SetFreezeAudited(ctx, audit, Freeze{On: step.on, Reason: "r", Actor: "admin", Since: step.at}, string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		if !f.Since.Equal(step.since) {
			t.Errorf("change %d (on=%v at %s): since %s, want %s", i, step.on, step.at, f.Since, step.since)
		}
	}
	evs, err := audit.Query(ctx, AuditQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || !evs[1].At.Equal(t0.Add(time.Hour)) {
		t.Errorf("events %+v: want 4, the second at its own time", evs)
	}
}
