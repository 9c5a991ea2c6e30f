package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferrygw/ferry/migrate"
)

// What bridgeMeasures reads from the agent's registry, by measure.
const (
	// bridgeMessagesMetric (the bridge's) feeds MeasureBridgeFailures.
	bridgeMessagesMetric = "gateway_bridge_messages_total"
	// syncLagMetric (the cloud service's histogram of the age of live
	// events at dispatch) feeds MeasureSyncLag: an event is late when it
	// is older than syncLagLate, the bucket bound at about a second.
	syncLagMetric = "gateway_cloud_delivery_lag_seconds"
	syncLagLate   = 1.024
	// callsMetric feeds MeasureCallSetupFailures: the bridge's counter of
	// call setups across the boundary, with labels callee_home (cloud,
	// legacy) and result (ok, failed; unsupported and unavailable describe
	// the callee's devices, not the bridge, and are not counted). In an
	// agent without the bridge role it is absent, and guardrails on call
	// setup are inconclusive with an error saying so.
	callsMetric = "gateway_bridge_call_setups_total"
)

// agentMeasures are the measures the agent's own metrics feed, with the
// metric each reads.
var agentMeasures = map[string]string{
	migrate.MeasureBridgeFailures:    bridgeMessagesMetric,
	migrate.MeasureSyncLag:           syncLagMetric,
	migrate.MeasureCallSetupFailures: callsMetric,
}

// maxMeasureHistory bounds the snapshots bridgeMeasures keeps.
const maxMeasureHistory = 10000

// bridgeMeasures is the guardrails' measurement source from the agent's own
// metrics: it reads the bridge's message counters (and, for the other
// measures of agentMeasures, the cloud's sync lag histogram and the call
// setup counter) through a Gatherer and keeps timed snapshots of them, per
// measure, so that a window is the difference between now and the last
// snapshot at least a window old. Until such a snapshot
// exists the window is shorter (measured from the first snapshot), which
// can only make a verdict inconclusive, never a false fail.
//
// The cohort is deliveries to cloud users (legacy_to_cloud: the recipient
// migrated), the control group deliveries to legacy users (cloud_to_legacy).
// A delivery counts when it reached a final result: ok is good; refused,
// error and undeliverable are bad; queued is not final and not counted.
type bridgeMeasures struct {
	g prometheus.Gatherer

	mu      sync.Mutex
	history map[string][]measureSnap
}

type measureSnap struct {
	at              time.Time
	cohort, control migrate.Sample
}

var _ migrate.MeasureSource = (*bridgeMeasures)(nil)

// errNoBridgeMeasures: the agent runs no bridge, so there is nothing to
// compare (guardrails on it stay inconclusive).
var errNoBridgeMeasures = errors.New("no bridge measurements in this agent (" + bridgeMessagesMetric + " not registered)")

// errSourceAbsent says which metric a measure needs and the agent lacks;
// the guardrail is inconclusive, never passed by default.
func errSourceAbsent(measure, metric string) error {
	if metric == bridgeMessagesMetric {
		return errNoBridgeMeasures
	}
	return fmt.Errorf("no %s measurements in this agent (%s not registered)", measure, metric)
}

// Measure implements migrate.MeasureSource.
func (m *bridgeMeasures) Measure(_ context.Context, measure string, window time.Duration, now time.Time) (cohort, control migrate.Sample, err error) {
	if _, ok := agentMeasures[measure]; !ok {
		return cohort, control, fmt.Errorf("unknown measure %q (this agent measures %s, %s and %s; or use %s)", measure,
			migrate.MeasureBridgeFailures, migrate.MeasureSyncLag, migrate.MeasureCallSetupFailures, migrate.MeasurePromQL)
	}
	cur, err := m.read(measure, now)
	if err != nil {
		return cohort, control, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.history == nil {
		m.history = map[string][]measureSnap{}
	}
	h := append(m.history[measure], cur)
	base := h[0]
	for _, s := range h {
		if s.at.After(now.Add(-window)) {
			break
		}
		base = s
	}
	// Drop what no window of this length needs any more.
	for len(h) > 1 && (len(h) > maxMeasureHistory || !h[1].at.After(now.Add(-window))) {
		h = h[1:]
	}
	m.history[measure] = h
	return diff(cur.cohort, base.cohort), diff(cur.control, base.control), nil
}

func diff(a, b migrate.Sample) migrate.Sample {
	return migrate.Sample{Total: max(0, a.Total-b.Total), Bad: max(0, a.Bad-b.Bad)}
}

// read takes the measure's cumulative counts now.
func (m *bridgeMeasures) read(measure string, now time.Time) (measureSnap, error) {
	mfs, err := m.g.Gather()
	if err != nil {
		return measureSnap{}, fmt.Errorf("gather metrics: %w", err)
	}
	metric := agentMeasures[measure]
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		s := measureSnap{at: now}
		switch measure {
		case migrate.MeasureSyncLag:
			s.cohort = lateEvents(mf)
		case migrate.MeasureCallSetupFailures:
			s.cohort, s.control = splitResults(mf, "callee_home", "cloud", "legacy", func(result string) (total, bad bool) {
				return result == "ok" || result == "failed", result == "failed"
			})
		default:
			s.cohort, s.control = splitResults(mf, "direction", "legacy_to_cloud", "cloud_to_legacy", bridgeResult)
		}
		return s, nil
	}
	return measureSnap{}, errSourceAbsent(measure, metric)
}

// bridgeResult classes a bridged message's result: ok is good; refused,
// error and undeliverable are bad; queued is not final and not counted.
func bridgeResult(result string) (total, bad bool) {
	switch result {
	case "ok":
		return true, false
	case "refused", "error", "undeliverable":
		return true, true
	}
	return false, false
}

// lateEvents reads a lag histogram as a sample: every observation is an
// event, those above syncLagLate are bad.
func lateEvents(mf *dto.MetricFamily) migrate.Sample {
	var s migrate.Sample
	for _, mt := range mf.GetMetric() {
		h := mt.GetHistogram()
		n := float64(h.GetSampleCount())
		s.Total += n
		onTime := 0.0
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() <= syncLagLate {
				onTime = float64(b.GetCumulativeCount())
			}
		}
		s.Bad += n - onTime
	}
	return s
}

// splitResults sums a counter by one label into the cohort (cohortValue)
// and the control group (controlValue), classing each series' result label
// with class.
func splitResults(mf *dto.MetricFamily, label, cohortValue, controlValue string, class func(result string) (total, bad bool)) (cohort, control migrate.Sample) {
	for _, mt := range mf.GetMetric() {
		var group, result string
		for _, l := range mt.GetLabel() {
			switch l.GetName() {
			case label:
				group = l.GetValue()
			case "result":
				result = l.GetValue()
			}
		}
		var sm *migrate.Sample
		switch group {
		case cohortValue:
			sm = &cohort
		case controlValue:
			sm = &control
		default:
			continue
		}
		total, bad := class(result)
		v := mt.GetCounter().GetValue()
		if total {
			sm.Total += v
		}
		if bad {
			sm.Bad += v
		}
	}
	return cohort, control
}

// driverHolder names this agent's driver in the lease: host, process and a
// random suffix, so that two agents on one host never share a name.
func driverHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	b := make([]byte, 3)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// guardrailMetrics are the guardrail and lease series of the control plane.
type guardrailMetrics struct {
	value       *prometheus.GaugeVec
	threshold   *prometheus.GaugeVec
	evaluations *prometheus.CounterVec
	leaseHeld   prometheus.Gauge
}

func newGuardrailMetrics(reg prometheus.Registerer) *guardrailMetrics {
	m := &guardrailMetrics{
		value: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_campaign_guardrail_value", Help: "Last evaluated value of a campaign guardrail: the migrated cohort's failure rate minus the control group's.",
		}, []string{"campaign", "guardrail"}),
		threshold: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_campaign_guardrail_threshold", Help: "Threshold of a campaign guardrail (maximum excess failure rate of the cohort over the control group).",
		}, []string{"campaign", "guardrail"}),
		evaluations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_campaign_guardrail_evaluations_total", Help: "Guardrail evaluations by campaign, guardrail and outcome (pass, fail, inconclusive).",
		}, []string{"campaign", "guardrail", "outcome"}),
		leaseHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_campaign_driver_lease_held", Help: "1 while this agent's campaign driver holds the driver lease (exactly one agent on a NATS should).",
		}),
	}
	reg.MustRegister(m.value, m.threshold, m.evaluations, m.leaseHeld)
	return m
}

func (m *guardrailMetrics) observe(campaign string, r migrate.GuardrailResult) {
	m.value.WithLabelValues(campaign, r.Guardrail).Set(r.Value)
	m.threshold.WithLabelValues(campaign, r.Guardrail).Set(r.Threshold)
	m.evaluations.WithLabelValues(campaign, r.Guardrail, string(r.Outcome)).Inc()
}
