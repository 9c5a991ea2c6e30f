package migrate

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// fakeProm answers each query with the number its map has for it.
type fakeProm struct {
	answers map[string]float64
	asked   []string
}

func (f *fakeProm) QueryScalar(_ context.Context, q string, _ time.Time) (float64, error) {
	f.asked = append(f.asked, q)
	v, ok := f.answers[q]
	if !ok {
		return 0, errors.New("no such series")
	}
	return v, nil
}

func TestPromQLGuardrail(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	q := PromQLMeasure{CohortBad: `cb[$window]`, CohortTotal: `ct[$window]`, ControlBad: `xb[$window]`, ControlTotal: `xt[$window]`}
	g := Guardrail{Name: "prom", Measure: MeasurePromQL, Window: Duration(5 * time.Minute), MinSamples: 100, MaxExcess: 0.05, PromQL: &q}
	for _, tc := range []struct {
		name    string
		compare string
		answers map[string]float64
		want    GuardrailOutcome
		value   float64
		errPart string
	}{
		{"pass", "", map[string]float64{"cb[300s]": 2, "ct[300s]": 200, "xb[300s]": 1, "xt[300s]": 1000}, GuardrailPass, 0.009, ""},
		{"fail", "", map[string]float64{"cb[300s]": 40, "ct[300s]": 200, "xb[300s]": 1, "xt[300s]": 1000}, GuardrailFail, 0.199, ""},
		{"few control samples", "", map[string]float64{"cb[300s]": 40, "ct[300s]": 200, "xb[300s]": 0, "xt[300s]": 10}, GuardrailInconclusive, 0.2, ""},
		{"query fails", "", map[string]float64{"cb[300s]": 40}, GuardrailInconclusive, 0, "cohort_total query"},
		{"bad over total", "", map[string]float64{"cb[300s]": 400, "ct[300s]": 200}, GuardrailInconclusive, 0, "400 bad of 200 total"},
		{"negative", "", map[string]float64{"cb[300s]": -1, "ct[300s]": 200}, GuardrailInconclusive, 0, "not a count"},
		{"NaN", "", map[string]float64{"cb[300s]": math.NaN(), "ct[300s]": 200}, GuardrailInconclusive, 0, "not a count"},
		{"no control group: pass", CompareNone, map[string]float64{"cb[300s]": 4, "ct[300s]": 200}, GuardrailPass, 0.02, ""},
		{"no control group: fail", CompareNone, map[string]float64{"cb[300s]": 20, "ct[300s]": 200}, GuardrailFail, 0.1, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := g
			g.Compare = tc.compare
			if err := validateGuardrails([]Guardrail{g}, ""); len(err) != 0 {
				t.Fatal(err)
			}
			fp := &fakeProm{answers: tc.answers}
			r := g.Evaluate(context.Background(), promSource{q: fp, m: q, control: g.control()}, now)
			if r.Outcome != tc.want || math.Abs(r.Value-tc.value) > 1e-9 || !strings.Contains(r.Err, tc.errPart) {
				t.Errorf("outcome %s value %g err %q, want %s %g %q", r.Outcome, r.Value, r.Err, tc.want, tc.value, tc.errPart)
			}
			if tc.compare == CompareNone {
				for _, a := range fp.asked {
					if strings.HasPrefix(a, "x") {
						t.Errorf("asked the control query %q with compare none", a)
					}
				}
			}
		})
	}
	r := g.Evaluate(context.Background(), promSource{m: q, control: true}, now)
	if r.Outcome != GuardrailInconclusive || !strings.Contains(r.Err, "no Prometheus") {
		t.Errorf("without a querier: %+v", r)
	}
}

func TestPromQLGuardrailValidate(t *testing.T) {
	for name, g := range map[string]Guardrail{
		"no queries":             {Name: "a", Measure: MeasurePromQL},
		"no control query":       {Name: "a", Measure: MeasurePromQL, PromQL: &PromQLMeasure{CohortBad: "x", CohortTotal: "y"}},
		"queries, other measure": {Name: "a", Measure: MeasureBridgeFailures, PromQL: &PromQLMeasure{CohortBad: "x", CohortTotal: "y"}},
		"bad compare":            {Name: "a", Measure: MeasureSyncLag, Compare: "peers"},
	} {
		if errs := validateGuardrails([]Guardrail{g}, ""); len(errs) == 0 {
			t.Errorf("%s: accepted", name)
		}
	}
	ok := Guardrail{Name: "a", Measure: MeasurePromQL, Compare: CompareNone, PromQL: &PromQLMeasure{CohortBad: "x", CohortTotal: "y"}}
	if errs := validateGuardrails([]Guardrail{ok}, ""); len(errs) != 0 {
		t.Errorf("refused %+v: %v", ok, errs)
	}
	if got := ExpandWindow(`rate(x[$window]) / rate(y[$window])`, 90*time.Second); got != `rate(x[90s]) / rate(y[90s])` {
		t.Errorf("ExpandWindow: %s", got)
	}
}
