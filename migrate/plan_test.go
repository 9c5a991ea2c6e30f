package migrate

import (
	"fmt"
	"testing"
	"time"
)

var planNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// population builds a State of n users with a mix of phases, platforms and
// versions.
func population(tb testing.TB, n int) *State {
	tb.Helper()
	st, err := NewState()
	if err != nil {
		tb.Fatal(err)
	}
	platforms := []string{"android", "ios", "windows", "mac"}
	versions := []string{"4.9.1", "5.0.0", "5.1.2", "5.2.0"}
	batch := make([]User, 0, 500)
	for i := range n {
		u := User{ID: fmt.Sprintf("user-%07d", i), Phase: PhaseLegacy, PhaseSince: planNow, Revision: 1,
			Devices: []Device{{ID: "d", Platform: platforms[i%4], ClientVersion: versions[(i/4)%4], LastSeen: planNow.Add(-time.Hour)}}}
		switch i % 10 {
		case 7:
			u.Phase = PhaseShadow
		case 8:
			u.Phase = PhaseCloud
		case 9:
			if i%20 == 9 {
				u.Phase, u.Prior = PhaseHeld, PhaseLegacy
			}
		}
		batch = append(batch, u)
		if len(batch) == cap(batch) {
			st.Put(batch...)
			batch = batch[:0]
		}
	}
	st.Put(batch...)
	return st
}

func planCampaign() Campaign {
	return Campaign{Name: "spring", Salt: "s1", Filter: Filter{Platforms: []string{"android", "ios", "windows"}},
		Steps: []Step{
			{TargetBP: 100},
			{TargetBP: 1000, Gates: Gates{MinVersion: map[string]string{"android": "5.0", "ios": "5.0", "windows": "5.0"}}},
			{TargetBP: 5000},
		},
		Exemptions: map[string]Exemption{"user-0000000": {}, "user-0000001": {Until: planNow.Add(-time.Hour)}},
		OptIns:     []string{"user-0000002"},
	}
}

// TestPlanMatchesBruteForce checks the planner's counts against a direct
// computation over every user.
func TestPlanMatchesBruteForce(t *testing.T) {
	st := population(t, 20000)
	c := planCampaign()
	p := PlanCampaign(st.Snapshot(), c, "ignored", planNow, nil)
	if p.Users != 20000 || p.Salt != "s1" {
		t.Fatalf("users %d salt %s", p.Users, p.Salt)
	}
	type counts struct{ cohort, move, done, held, gated, exempt int }
	want := make([]counts, len(c.Steps))
	ineligible, beyond := 0, 0
	for _, u := range st.Snapshot().List("", "", 0) {
		d := u.Devices[0]
		if d.Platform == "mac" {
			ineligible++
			continue
		}
		b := Bucket("s1", u.ID)
		step := -1
		for i, s := range c.Steps {
			if b < s.TargetBP {
				step = i
				break
			}
		}
		if u.ID == "user-0000002" {
			step = 0
		}
		if step < 0 {
			beyond++
			continue
		}
		w := &want[step]
		w.cohort++
		switch {
		case u.Phase == PhaseCloud:
			w.done++
		case u.ID == "user-0000000":
			w.exempt++
		case u.Phase == PhaseHeld:
			w.held++
		case step == 1 && CompareVersions(d.ClientVersion, "5.0") < 0:
			w.gated++
		default:
			w.move++
		}
	}
	if p.Ineligible != ineligible || p.Beyond != beyond {
		t.Errorf("ineligible %d beyond %d, want %d %d", p.Ineligible, p.Beyond, ineligible, beyond)
	}
	for i, sp := range p.Steps {
		got := counts{sp.Cohort, sp.Move, sp.Done, sp.HeldBack[HeldHeld], sp.HeldBack["gate:device_version"], sp.HeldBack[HeldExempt]}
		if got != want[i] {
			t.Errorf("step %d: %+v, want %+v", i, got, want[i])
		}
		sum := 0
		for _, n := range sp.ByPhase {
			sum += n
		}
		if sum != sp.Move {
			t.Errorf("step %d: by phase adds up to %d, move %d", i, sum, sp.Move)
		}
		sum = 0
		for _, n := range sp.ByVersionBand {
			sum += n
		}
		if sum != sp.Move {
			t.Errorf("step %d: by version band adds up to %d, move %d", i, sum, sp.Move)
		}
		if sp.ByPlatform["mac"] != 0 {
			t.Errorf("step %d: mac users planned", i)
		}
	}
	if p.Steps[2].Move < 3000 {
		t.Errorf("step 2 moves only %d", p.Steps[2].Move)
	}
}

// BenchmarkPlan1M plans a three-step campaign over 1,000,000 users. Report:
// go test ./migrate -run '^$' -bench Plan1M -benchtime 5x
func BenchmarkPlan1M(b *testing.B) {
	st := population(b, 1_000_000)
	c := planCampaign()
	b.ResetTimer()
	for b.Loop() {
		p := PlanCampaign(st.Snapshot(), c, "", planNow, nil)
		if p.Users != 1_000_000 {
			b.Fatalf("%d users", p.Users)
		}
	}
}

// BenchmarkSurvey1M is one driver tick's read of 1,000,000 users.
func BenchmarkSurvey1M(b *testing.B) {
	st := population(b, 1_000_000)
	c := planCampaign()
	c.Step = 2
	b.ResetTimer()
	for b.Loop() {
		SurveyCampaign(st.Snapshot(), &c, planNow, DefaultMaxPerTick, nil)
	}
}
