package migrate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// MeasurePromQL is the Measure of a guardrail whose counts come from
// PromQL queries (Guardrail.PromQL) to a Prometheus server rather than from
// the agent's own metrics.
const MeasurePromQL = "promql"

// WindowPlaceholder in a PromQL query is replaced by the guardrail's window
// in seconds ("600s"), so that one query serves any window:
// sum(increase(gateway_bridge_messages_total{direction="legacy_to_cloud"}[$window])).
const WindowPlaceholder = "$window"

// PromQLMeasure holds the instant queries of a PromQL guardrail. Each must
// return one number (a scalar, or a vector of one sample; an empty vector
// counts as 0): the failed events and all events over the window, for the
// migrated cohort and for the control group. The control queries are not
// needed with Compare "none".
type PromQLMeasure struct {
	CohortBad    string `json:"cohort_bad"`
	CohortTotal  string `json:"cohort_total"`
	ControlBad   string `json:"control_bad,omitempty"`
	ControlTotal string `json:"control_total,omitempty"`
}

// PromQuerier runs one instant PromQL query at a time (gateway's HTTP
// client of the Prometheus API).
type PromQuerier interface {
	QueryScalar(ctx context.Context, query string, at time.Time) (float64, error)
}

// ErrNoPrometheus is what the evaluation of a PromQL guardrail reports (as
// an inconclusive result) when the driver has no PromQuerier.
var ErrNoPrometheus = errors.New("migrate: no Prometheus configured for PromQL guardrails")

// promSource measures one PromQL guardrail through a PromQuerier.
type promSource struct {
	q       PromQuerier
	m       PromQLMeasure
	control bool
}

var _ MeasureSource = promSource{}

// Measure implements MeasureSource: it runs the cohort queries, and the
// control queries when the guardrail compares with a control group, and
// checks that the counts make sense (finite, not negative, bad ≤ total).
func (p promSource) Measure(ctx context.Context, _ string, window time.Duration, now time.Time) (cohort, control Sample, err error) {
	if p.q == nil {
		return cohort, control, ErrNoPrometheus
	}
	if cohort, err = p.sample(ctx, "cohort", p.m.CohortBad, p.m.CohortTotal, window, now); err != nil || !p.control {
		return cohort, control, err
	}
	control, err = p.sample(ctx, "control", p.m.ControlBad, p.m.ControlTotal, window, now)
	return cohort, control, err
}

func (p promSource) sample(ctx context.Context, group, bad, total string, window time.Duration, now time.Time) (Sample, error) {
	var s Sample
	for _, q := range []struct {
		name  string
		query string
		dst   *float64
	}{{"bad", bad, &s.Bad}, {"total", total, &s.Total}} {
		v, err := p.q.QueryScalar(ctx, ExpandWindow(q.query, window), now)
		if err != nil {
			return Sample{}, fmt.Errorf("%s_%s query: %w", group, q.name, err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return Sample{}, fmt.Errorf("%s_%s query: %v is not a count", group, q.name, v)
		}
		*q.dst = v
	}
	if s.Bad > s.Total {
		return Sample{}, fmt.Errorf("%s: %g bad of %g total", group, s.Bad, s.Total)
	}
	return s, nil
}

// ExpandWindow replaces WindowPlaceholder in query with window in whole
// seconds (at least one).
func ExpandWindow(query string, window time.Duration) string {
	secs := max(1, int64(window/time.Second))
	return strings.ReplaceAll(query, WindowPlaceholder, strconv.FormatInt(secs, 10)+"s")
}

// validate reports a PromQL guardrail that cannot be evaluated.
func (m *PromQLMeasure) validate(name string, control bool) []error {
	if m == nil {
		return []error{fmt.Errorf("guardrail %s: measure %s needs promql queries", name, MeasurePromQL)}
	}
	var errs []error
	need := map[string]string{"cohort_bad": m.CohortBad, "cohort_total": m.CohortTotal}
	if control {
		need["control_bad"], need["control_total"] = m.ControlBad, m.ControlTotal
	}
	for _, k := range []string{"cohort_bad", "cohort_total", "control_bad", "control_total"} {
		if q, ok := need[k]; ok && strings.TrimSpace(q) == "" {
			errs = append(errs, fmt.Errorf("guardrail %s: promql %s query is empty", name, k))
		}
	}
	return errs
}
