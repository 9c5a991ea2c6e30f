package migrate

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeMeasures returns whatever the test set, for every measure.
type fakeMeasures struct {
	mu              sync.Mutex
	cohort, control Sample
	err             error
}

func (f *fakeMeasures) Measure(_ context.Context, measure string, window time.Duration, _ time.Time) (Sample, Sample, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if measure != MeasureBridgeFailures || window <= 0 {
		return Sample{}, Sample{}, errors.New("unexpected measure")
	}
	return f.cohort, f.control, f.err
}

func (f *fakeMeasures) set(cohort, control Sample) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cohort, f.control = cohort, control
}

func TestGuardrailEvaluate(t *testing.T) {
	g := Guardrail{Name: "bridge", Measure: MeasureBridgeFailures, MinSamples: 100, MaxExcess: 0.02}
	tests := []struct {
		name            string
		cohort, control Sample
		err             error
		want            GuardrailOutcome
	}{
		{"pass", Sample{Total: 1000, Bad: 30}, Sample{Total: 5000, Bad: 100}, nil, GuardrailPass},
		{"at the threshold passes", Sample{Total: 1000, Bad: 40}, Sample{Total: 1000, Bad: 20}, nil, GuardrailPass},
		{"fail", Sample{Total: 1000, Bad: 50}, Sample{Total: 5000, Bad: 100}, nil, GuardrailFail},
		{"a network-wide incident is no migration failure", Sample{Total: 1000, Bad: 500}, Sample{Total: 1000, Bad: 490}, nil, GuardrailPass},
		{"few cohort samples", Sample{Total: 99, Bad: 99}, Sample{Total: 5000}, nil, GuardrailInconclusive},
		{"few control samples", Sample{Total: 1000, Bad: 900}, Sample{Total: 10}, nil, GuardrailInconclusive},
		{"source error", Sample{}, Sample{}, errors.New("down"), GuardrailInconclusive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := &fakeMeasures{cohort: tt.cohort, control: tt.control, err: tt.err}
			r := g.Evaluate(t.Context(), src, time.Now())
			if r.Outcome != tt.want {
				t.Errorf("outcome %s, want %s (%+v)", r.Outcome, tt.want, r)
			}
			if r.Threshold != 0.02 || r.MinSamples != 100 {
				t.Errorf("threshold %v, min samples %d", r.Threshold, r.MinSamples)
			}
		})
	}
	if got := CombineGuardrails([]GuardrailResult{{Outcome: GuardrailPass}, {Outcome: GuardrailInconclusive}}); got != GuardrailInconclusive {
		t.Errorf("pass+inconclusive = %s", got)
	}
	if got := CombineGuardrails([]GuardrailResult{{Outcome: GuardrailInconclusive}, {Outcome: GuardrailFail}}); got != GuardrailFail {
		t.Errorf("inconclusive+fail = %s", got)
	}
}

func TestGuardrailValidate(t *testing.T) {
	c := Campaign{Name: "g", Steps: []Step{{TargetBP: 100}}, OnGuardrailFail: "explode",
		Guardrails: []Guardrail{{Name: "a", Measure: "m", MaxExcess: 2}, {Name: "a"}}}
	err := c.Validate()
	if !errors.Is(err, ErrInvalidCampaign) {
		t.Fatalf("validate: %v", err)
	}
	for _, want := range []string{"max_excess", "used twice", "no measure", "on_guardrail_fail"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// guardedRig is a driver rig whose driver reads fake measurements.
func guardedRig(t *testing.T, n int, c Campaign, src MeasureSource) (*driverRig, map[string]int) {
	t.Helper()
	r := newRig(t, n, c)
	var mu sync.Mutex
	evals := map[string]int{}
	d, err := NewDriver(DriverConfig{State: r.st, Users: memMover{r.st}, Campaigns: r.cs, Audit: r.audit, Tick: time.Second,
		Measures: src, GuardrailEvery: time.Minute,
		OnGuardrail: func(_ string, res GuardrailResult) { mu.Lock(); evals[string(res.Outcome)]++; mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	r.d = d
	return r, evals
}

func (a *memAudit) kind(kind string) []AuditEvent {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []AuditEvent
	for _, e := range a.ev {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

var bridgeGuard = []Guardrail{{Name: "bridge", Measure: MeasureBridgeFailures, MinSamples: 50, MaxExcess: 0.05, Window: Duration(5 * time.Minute)}}

// TestGuardrailFailMidStep: a guardrail that fails while a step is moving
// users pauses the campaign (the default), and nobody moves after that.
func TestGuardrailFailMidStep(t *testing.T) {
	for _, onFail := range []string{"", OnFailRollback, OnFailRollbackStep} {
		t.Run("on_fail="+onFail, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				src := &fakeMeasures{cohort: Sample{Total: 100, Bad: 1}, control: Sample{Total: 1000, Bad: 10}}
				r, evals := guardedRig(t, 600, Campaign{Name: "g", Steps: []Step{{TargetBP: BasisPoints}},
					Pace: Pace{PerMinute: 60}, Guardrails: bridgeGuard, OnGuardrailFail: onFail}, src)
				r.run(t, 5*time.Minute)
				moved := len(r.audit.transitions())
				if moved < 250 || r.cs.get("g").State != CampaignRunning {
					t.Fatalf("before the failure: %d moves, state %s", moved, r.cs.get("g").State)
				}
				// The migrated cohort now fails 20% of deliveries, the
				// control group 1%.
				src.set(Sample{Total: 100, Bad: 20}, Sample{Total: 1000, Bad: 10})
				r.run(t, 2*time.Minute)
				c := r.cs.get("g")
				want := CampaignPaused
				if onFail == OnFailRollback {
					want = CampaignAborted // rolled back, then nobody left to move
				}
				if onFail == OnFailRollbackStep && c.RollbackStep != nil {
					t.Fatalf("step rollback still under way: %+v", c)
				}
				if c.State != want {
					t.Fatalf("state %s (%q), want %s", c.State, c.Reason, want)
				}
				stops := 0
				for _, e := range r.audit.kind(AuditCampaign) {
					if e.From == string(CampaignRunning) && strings.Contains(e.Reason, "guardrail failed") && e.Values["bridge.value"] > 0.18 {
						stops++
					}
				}
				if stops != 1 {
					t.Errorf("%d campaign events stopping it for the guardrail, want 1", stops)
				}
				fails := 0
				for _, e := range r.audit.kind(AuditGuardrail) {
					if e.To == string(GuardrailFail) {
						fails++
						if e.Values["bridge.value"] < 0.18 || e.Thresholds["bridge.max_excess"] != 0.05 || e.Thresholds["bridge.min_samples"] != 50 {
							t.Errorf("failed evaluation lacks its values: %+v", e)
						}
					}
				}
				if fails != 1 || evals["fail"] != 1 || evals["pass"] < 5 {
					t.Errorf("%d failed evaluations audited, evaluations %v", fails, evals)
				}
				sn := r.st.Snapshot()
				if onFail == OnFailRollback || onFail == OnFailRollbackStep {
					if n := sn.Count(PhaseReady) + sn.Count(PhaseCloud); n != 0 {
						t.Errorf("%d users still ready or in cloud after the rollback", n)
					}
					return
				}
				// Paused: nothing moves however long we wait.
				before := len(r.audit.transitions())
				r.run(t, 10*time.Minute)
				if after := len(r.audit.transitions()); after != before {
					t.Errorf("%d moves while paused", after-before)
				}
				if sn.Count(PhaseCloud)+sn.Count(PhaseReady)+sn.Count(PhaseShadow) == 0 {
					t.Error("nobody moved at all")
				}
			})
		})
	}
}

// TestGuardrailTooFewSamplesHolds: with too few samples the campaign moves
// the users of its current step but holds there, never passing to the next
// step nor completing, until the measurements are conclusive.
func TestGuardrailTooFewSamplesHolds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeMeasures{cohort: Sample{Total: 10}, control: Sample{Total: 1000, Bad: 10}}
		r, evals := guardedRig(t, 1000, Campaign{Name: "h", Steps: []Step{{TargetBP: 1000}, {TargetBP: 2000}},
			Pace: Pace{PerMinute: 6000}, Guardrails: bridgeGuard}, src)
		r.run(t, 3*time.Hour)
		c := r.cs.get("h")
		if c.State != CampaignRunning || c.Step != 0 {
			t.Fatalf("state %s step %d, want running at step 0", c.State, c.Step)
		}
		inStep0 := 0
		for _, u := range r.st.Snapshot().List(PhaseCloud, "", 0) {
			if Bucket(c.Salt, u.ID) < 1000 {
				inStep0++
			}
		}
		if got := r.st.Snapshot().Count(PhaseCloud); got == 0 || got != inStep0 {
			t.Fatalf("%d in cloud, %d of them in step 0: the step's users should all have moved", got, inStep0)
		}
		if evals["inconclusive"] < 100 || evals["pass"] != 0 || evals["fail"] != 0 {
			t.Errorf("evaluations %v", evals)
		}
		// Enough samples now, and they pass: the campaign carries on.
		src.set(Sample{Total: 500, Bad: 6}, Sample{Total: 1000, Bad: 10})
		r.run(t, 5*time.Minute)
		if c := r.cs.get("h"); c.State != CampaignCompleted {
			t.Fatalf("state %s step %d after passing, want completed", c.State, c.Step)
		}
	})
}
