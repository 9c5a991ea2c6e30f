package migrate

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Guardrail is a threshold on a measurement, evaluated over a window,
// comparing the migrated cohort with the users not yet migrated as a control
// group (DESIGN.md "Campaigns"). The value it is held to is the cohort's
// failure rate minus the control group's: a network-wide incident raises
// both and fails nothing, a migration problem raises only the first.
type Guardrail struct {
	// Name labels the guardrail in metrics and the audit log; it must be
	// short and stable (it is a metric label value).
	Name string `json:"name"`
	// Measure names what the source measures, for example
	// MeasureBridgeFailures.
	Measure string `json:"measure"`
	// Window is how far back the measurement looks; default
	// DefaultGuardrailWindow.
	Window Duration `json:"window,omitempty"`
	// MinSamples is how many events each group needs in the window for a
	// verdict; fewer is inconclusive. Default DefaultGuardrailMinSamples.
	MinSamples int `json:"min_samples,omitempty"`
	// MaxExcess is the threshold: the evaluation fails when the cohort's
	// failure rate exceeds the control group's by more than this (a
	// fraction: 0.01 is one percentage point). With Compare "none" it is
	// the highest failure rate of the cohort alone.
	MaxExcess float64 `json:"max_excess"`
	// Compare is CompareControl (default): the cohort is held to the
	// control group; or CompareNone, for measures that have no control
	// group (sync lag: only cloud users sync): the cohort's rate alone.
	Compare string `json:"compare,omitempty"`
	// PromQL holds the queries of a guardrail with Measure MeasurePromQL.
	PromQL *PromQLMeasure `json:"promql,omitempty"`
}

// What a guardrail compares the migrated cohort with (Guardrail.Compare).
const (
	CompareControl = "control"
	CompareNone    = "none"
)

// control reports whether g compares the cohort with a control group.
func (g Guardrail) control() bool { return g.Compare != CompareNone }

// Defaults of Guardrail.
const (
	DefaultGuardrailWindow     = 10 * time.Minute
	DefaultGuardrailMinSamples = 100
)

// Measures the agent's own source knows (gateway's bridge measurements).
const (
	// MeasureBridgeFailures: messages the bridge failed to deliver
	// (error, refused, undeliverable) out of all it carried; the cohort
	// is deliveries to cloud users, the control deliveries to legacy users.
	MeasureBridgeFailures = "bridge_delivery_failures"
	// MeasureSyncLag: live cloud events delivered late (the agent counts
	// those older than about a second when dispatched) out of all
	// delivered. Only cloud users sync, so it has no control group: use it
	// with Compare "none".
	MeasureSyncLag = "sync_lag"
	// MeasureCallSetupFailures: calls whose setup failed out of all call
	// setups; the cohort is calls to cloud users, the control calls to
	// legacy users.
	MeasureCallSetupFailures = "call_setup_failures"
)

// What a campaign does when a guardrail fails (Campaign.OnGuardrailFail).
const (
	// OnFailPause pauses the campaign: nobody moves until an operator
	// resumes it. The default.
	OnFailPause = "pause"
	// OnFailRollback rolls the campaign back: its users return to shadow.
	OnFailRollback = "rollback"
	// OnFailRollbackStep rolls back the current step only: the users it
	// moved return to shadow and the campaign pauses at the step.
	OnFailRollbackStep = "rollback_step"
)

// GuardrailOutcome is a guardrail evaluation's verdict. Its values are stable metric
// label values.
type GuardrailOutcome string

// The outcomes of DESIGN.md: inconclusive is never pass and never fail.
const (
	GuardrailPass         GuardrailOutcome = "pass"
	GuardrailFail         GuardrailOutcome = "fail"
	GuardrailInconclusive GuardrailOutcome = "inconclusive"
)

// Sample counts events over a window: Total of them, Bad of which failed.
type Sample struct {
	Total float64 `json:"total"`
	Bad   float64 `json:"bad"`
}

// Rate is Bad/Total, or 0 for no events.
func (s Sample) Rate() float64 {
	if s.Total <= 0 {
		return 0
	}
	return s.Bad / s.Total
}

// MeasureSource supplies what guardrails measure (gateway reads the
// agent's own metrics; a PromQL source may come later).
type MeasureSource interface {
	// Measure returns the counts of measure over the window ending at now
	// for the migrated cohort and for the control group. An unknown
	// measure is an error.
	Measure(ctx context.Context, measure string, window time.Duration, now time.Time) (cohort, control Sample, err error)
}

// GuardrailResult is one evaluation of one guardrail.
type GuardrailResult struct {
	Guardrail string           `json:"guardrail"`
	Outcome   GuardrailOutcome `json:"outcome"`
	// Value is the cohort's rate minus the control's; Threshold is
	// MaxExcess.
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	Cohort    Sample  `json:"cohort"`
	Control   Sample  `json:"control"`
	// MinSamples is the guardrail's minimum, defaults applied.
	MinSamples int `json:"min_samples"`
	// Err is why the measurement failed (then the outcome is
	// inconclusive).
	Err string `json:"err,omitempty"`
}

// Evaluate measures g at now and judges it.
func (g Guardrail) Evaluate(ctx context.Context, src MeasureSource, now time.Time) GuardrailResult {
	window := time.Duration(g.Window)
	if window <= 0 {
		window = DefaultGuardrailWindow
	}
	minSamples := g.MinSamples
	if minSamples <= 0 {
		minSamples = DefaultGuardrailMinSamples
	}
	r := GuardrailResult{Guardrail: g.Name, Threshold: g.MaxExcess, MinSamples: minSamples, Outcome: GuardrailInconclusive}
	cohort, control, err := src.Measure(ctx, g.Measure, window, now)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.Cohort, r.Control = cohort, control
	r.Value = cohort.Rate() - control.Rate()
	if !g.control() {
		r.Control, r.Value = Sample{}, cohort.Rate()
		control = Sample{Total: math.Inf(1)} // no control group to wait for
	}
	switch {
	case cohort.Total < float64(minSamples) || control.Total < float64(minSamples):
	case r.Value > g.MaxExcess:
		r.Outcome = GuardrailFail
	default:
		r.Outcome = GuardrailPass
	}
	return r
}

// CombineGuardrails is the verdict of several evaluations: any fail fails, else any
// inconclusive is inconclusive, else pass (also for none).
func CombineGuardrails(rs []GuardrailResult) GuardrailOutcome {
	out := GuardrailPass
	for _, r := range rs {
		switch r.Outcome {
		case GuardrailFail:
			return GuardrailFail
		case GuardrailInconclusive:
			out = GuardrailInconclusive
		}
	}
	return out
}

// validateGuardrails reports guardrails that cannot be evaluated.
func validateGuardrails(gs []Guardrail, onFail string) []error {
	var errs []error
	seen := map[string]bool{}
	for i, g := range gs {
		if CheckUserID(g.Name) != nil {
			errs = append(errs, fmt.Errorf("guardrail %d: name %q: 1 to 64 letters, digits, '_' or '-'", i, g.Name))
		}
		if seen[g.Name] {
			errs = append(errs, fmt.Errorf("guardrail %d: name %q used twice", i, g.Name))
		}
		seen[g.Name] = true
		if g.Measure == "" {
			errs = append(errs, fmt.Errorf("guardrail %s: no measure", g.Name))
		}
		switch g.Compare {
		case "", CompareControl, CompareNone:
		default:
			errs = append(errs, fmt.Errorf("guardrail %s: compare %q: want control or none", g.Name, g.Compare))
		}
		if g.Measure == MeasurePromQL {
			errs = append(errs, g.PromQL.validate(g.Name, g.control())...)
		} else if g.PromQL != nil {
			errs = append(errs, fmt.Errorf("guardrail %s: promql queries need measure %s", g.Name, MeasurePromQL))
		}
		if g.Window < 0 || g.MinSamples < 0 || g.MaxExcess < 0 || g.MaxExcess > 1 {
			errs = append(errs, fmt.Errorf("guardrail %s: window, min_samples must not be negative and max_excess must be in [0, 1]", g.Name))
		}
	}
	switch onFail {
	case "", OnFailPause, OnFailRollback, OnFailRollbackStep:
	default:
		errs = append(errs, fmt.Errorf("on_guardrail_fail %q: want pause, rollback or rollback_step", onFail))
	}
	return errs
}
