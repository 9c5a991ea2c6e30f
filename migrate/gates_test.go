package migrate

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

type shadowMap map[string]ShadowReport

func (m shadowMap) Shadow(user string) (ShadowReport, bool) {
	r, ok := m[user]
	return r, ok
}

func TestGatesCheckShadow(t *testing.T) {
	src := shadowMap{
		"done":     {BackfillDone: true, Compared: 1000, Mismatched: 5},
		"filling":  {BackfillDone: false, Compared: 1000},
		"few":      {BackfillDone: true, Compared: 99},
		"mismatch": {BackfillDone: true, Compared: 1000, Mismatched: 50},
	}
	both := Gates{Backfill: true, Mismatch: &MismatchGate{MaxRate: 0.01}}
	for _, tc := range []struct {
		name string
		g    Gates
		user string
		src  ShadowSource
		want string
	}{
		{"no shadow gates", Gates{}, "unknown", nil, ""},
		{"pass", both, "done", src, ""},
		{"backfill not done", both, "filling", src, GateBackfill},
		{"no report", both, "unknown", src, GateBackfillInconclusive},
		{"no source", both, "done", nil, GateBackfillInconclusive},
		{"too few samples", both, "few", src, GateMismatchInconclusive},
		{"mismatch over the limit", both, "mismatch", src, GateMismatch},
		{"mismatch gate alone, no report", Gates{Mismatch: &MismatchGate{MaxRate: 0.5, MinSamples: 10}}, "unknown", src, GateMismatchInconclusive},
		{"mismatch gate alone, own minimum", Gates{Mismatch: &MismatchGate{MaxRate: 0.01, MinSamples: 50}}, "few", src, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := User{ID: tc.user, Phase: PhaseShadow}
			if got := tc.g.CheckShadow(&u, tc.src); got != tc.want {
				t.Errorf("CheckShadow = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestGateDeviceInconclusive(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := Gates{ActiveWithin: Duration(24 * time.Hour), MinVersion: map[string]string{"android": "5.0"}}
	stale := User{ID: "s", Devices: []Device{{ID: "d", Platform: "android", ClientVersion: "5.2", LastSeen: now.Add(-48 * time.Hour)}}}
	if got := g.Check(&stale, now); got != GateDeviceInconclusive {
		t.Errorf("no recently active device: %q, want %q", got, GateDeviceInconclusive)
	}
	if got := g.Check(&User{ID: "none"}, now); got != GateDeviceInconclusive {
		t.Errorf("no device at all: %q, want %q", got, GateDeviceInconclusive)
	}
}

// TestDriverShadowGatesHold: with backfill and mismatch gates the driver
// moves users to shadow and holds them there while the source has no
// conclusive report; those whose report passes go on to cloud.
func TestDriverShadowGatesHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := Campaign{Name: "gated", Steps: []Step{{TargetBP: BasisPoints, Gates: Gates{Backfill: true, Mismatch: &MismatchGate{MaxRate: 0.01, MinSamples: 10}}}},
			Pace: Pace{PerMinute: 60000}}
		r := newRig(t, 100, c)
		src := shadowMap{}
		for i := range 40 {
			src[fmt.Sprintf("u%05d", i)] = ShadowReport{BackfillDone: true, Compared: 10}
		}
		src["u00040"] = ShadowReport{BackfillDone: true, Compared: 5} // too few samples
		src["u00041"] = ShadowReport{BackfillDone: false, Compared: 100}
		r.d.cfg.Shadow = src
		r.run(t, 10*time.Minute)
		sn := r.st.Snapshot()
		if got := sn.Count(PhaseCloud); got != 40 {
			t.Errorf("%d in cloud, want the 40 with a passing report", got)
		}
		if got := sn.Count(PhaseShadow); got != 60 {
			t.Errorf("%d held in shadow, want 60", got)
		}
		sv := SurveyCampaign(sn, &c, time.Now(), 0, src)
		want := map[string]int{GateBackfillInconclusive: 58, GateMismatchInconclusive: 1, GateBackfill: 1}
		for k, n := range want {
			if sv.HeldBack[k] != n {
				t.Errorf("held back %v, want %v", sv.HeldBack, want)
				break
			}
		}
		if sv.Waiting != 59 {
			t.Errorf("%d waiting on inconclusive gates, want 59", sv.Waiting)
		}
		if s := r.cs.get("gated"); s.State != CampaignRunning {
			t.Errorf("campaign %s: users waiting on inconclusive gates must keep the last step from completing", s.State)
		}
		// Exempting the waiting users lets the campaign complete.
		r.cs.edit("gated", func(c *Campaign) {
			c.Exemptions = map[string]Exemption{}
			for _, u := range r.st.Snapshot().List(PhaseShadow, "", 0) {
				if u.ID != "u00041" {
					c.Exemptions[u.ID] = Exemption{Reason: "test"}
				}
			}
		})
		r.run(t, time.Minute)
		if s := r.cs.get("gated"); s.State != CampaignCompleted {
			t.Errorf("campaign %s after exempting the waiting users, want completed", s.State)
		}
	})
}
