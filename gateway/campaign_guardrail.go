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

	"github.com/ferrygw/ferry/migrate"
)

// bridgeMessagesMetric is what bridgeMeasures reads: the bridge registers it
// on the agent's registry.
const bridgeMessagesMetric = "gateway_bridge_messages_total"

// maxMeasureHistory bounds the snapshots bridgeMeasures keeps.
const maxMeasureHistory = 10000

// bridgeMeasures is the guardrails' measurement source from the agent's own
// metrics: it reads the bridge's message counters through a Gatherer and
// keeps timed snapshots of them, so that a window is the difference between
// now and the last snapshot at least a window old. Until such a snapshot
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
	history []measureSnap
}

type measureSnap struct {
	at              time.Time
	cohort, control migrate.Sample
}

var _ migrate.MeasureSource = (*bridgeMeasures)(nil)

// errNoBridgeMeasures: the agent runs no bridge, so there is nothing to
// compare (guardrails on it stay inconclusive).
var errNoBridgeMeasures = errors.New("no bridge measurements in this agent (" + bridgeMessagesMetric + " not registered)")

// Measure implements migrate.MeasureSource.
func (m *bridgeMeasures) Measure(_ context.Context, measure string, window time.Duration, now time.Time) (cohort, control migrate.Sample, err error) {
	if measure != migrate.MeasureBridgeFailures {
		return cohort, control, fmt.Errorf("unknown measure %q (this agent measures %s)", measure, migrate.MeasureBridgeFailures)
	}
	cur, err := m.read(now)
	if err != nil {
		return cohort, control, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.history = append(m.history, cur)
	base := m.history[0]
	for _, s := range m.history {
		if s.at.After(now.Add(-window)) {
			break
		}
		base = s
	}
	// Drop what no window of this length needs any more.
	for len(m.history) > 1 && (len(m.history) > maxMeasureHistory || !m.history[1].at.After(now.Add(-window))) {
		m.history = m.history[1:]
	}
	return diff(cur.cohort, base.cohort), diff(cur.control, base.control), nil
}

func diff(a, b migrate.Sample) migrate.Sample {
	return migrate.Sample{Total: max(0, a.Total-b.Total), Bad: max(0, a.Bad-b.Bad)}
}

// read sums the bridge's counters by direction.
func (m *bridgeMeasures) read(now time.Time) (measureSnap, error) {
	mfs, err := m.g.Gather()
	if err != nil {
		return measureSnap{}, fmt.Errorf("gather metrics: %w", err)
	}
	s := measureSnap{at: now}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != bridgeMessagesMetric {
			continue
		}
		found = true
		for _, mt := range mf.GetMetric() {
			var dir, result string
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "direction":
					dir = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			var sm *migrate.Sample
			switch dir {
			case "legacy_to_cloud":
				sm = &s.cohort
			case "cloud_to_legacy":
				sm = &s.control
			default:
				continue
			}
			v := mt.GetCounter().GetValue()
			switch result {
			case "ok":
				sm.Total += v
			case "refused", "error", "undeliverable":
				sm.Total += v
				sm.Bad += v
			}
		}
	}
	if !found {
		return measureSnap{}, errNoBridgeMeasures
	}
	return s, nil
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
