package bridge

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bridge's Prometheus series. None carries a user or peer id.
type metrics struct {
	messages *prometheus.CounterVec
	items    *prometheus.CounterVec
	receipts *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	routes   *prometheus.CounterVec
	// decisions counts route decisions by kind and path (decide).
	decisions *prometheus.CounterVec
	linkUp    prometheus.Gauge
	link      *prometheus.GaugeVec
	// puppets and puppetOpens: the per-user puppet sessions (puppets.go).
	puppets     *prometheus.GaugeVec
	puppetOpens *prometheus.CounterVec

	outboxDepth  prometheus.Gauge
	outboxOldest prometheus.Gauge
	// callSetups counts calls across the boundary by callee home and
	// result (calls.go); the call setup guardrail reads it.
	callSetups *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_messages_total",
			Help: "Messages the bridge carried between the overlay and the cloud, by direction and result.",
		}, []string{"direction", "result"}),
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_items_total",
			Help: "Items the bridge carried between the overlay and the cloud, by direction, kind (msg, group_msg, receipt, typing, presence) and result.",
		}, []string{"direction", "kind", "result"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_receipts_total",
			Help: "Receipts the bridge translated, by direction and result.",
		}, []string{"direction", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gateway_bridge_delivery_seconds",
			Help:    "Time from a message reaching the bridge to its acknowledgement by the other side, by direction.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12),
		}, []string{"direction"}),
		routes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_route_publications_total",
			Help: "Route records and withdrawals the bridge published to the directory, by kind and result.",
		}, []string{"kind", "result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_route_decisions_total",
			Help: "Route decisions by kind and path: native (both ends on one side), interop (carried across the boundary), escalation (the first path failed: queued in the outbox, or the sender told to look the user up again).",
		}, []string{"kind", "path"}),
		linkUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_bridge_cloud_link_up",
			Help: "1 while every link of the bridge's pool of cloud links is connected.",
		}),
		link: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_bridge_link_state",
			Help: "1 for the current state of each of the bridge's cloud links (link: its index in the pool, 0 carries the feed; state: stopped, connecting, connected, reconnecting, bad_credentials), 0 for the others.",
		}, []string{"link", "state"}),
		puppets: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_bridge_puppets",
			Help: "The bridge's puppet sessions (one per legacy user it acts for in the cloud) by state: opening, open, reconnecting, refused, closed.",
		}, []string{"state"}),
		puppetOpens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_puppet_opens_total",
			Help: "Puppet opens the bridge asked the cloud for, by result (ok, refused: the cloud may not act for the user, error: the link failed).",
		}, []string{"result"}),
		outboxDepth: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_bridge_outbox_messages",
			Help: "Cloud messages waiting in the bridge's outbox for a legacy recipient.",
		}),
		outboxOldest: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_bridge_outbox_oldest_age_seconds",
			Help: "Age of the oldest message at the head of an outbox queue the bridge has looked at.",
		}),
		callSetups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_call_setups_total",
			Help: "Calls the bridge set up across the boundary, by the callee's home (cloud, legacy) and result (ok: the callee rings; failed; unsupported: chat v1 only; unavailable: no live device).",
		}, []string{"callee_home", "result"}),
	}
	for _, home := range []string{calleeCloud, calleeLegacy} {
		for _, res := range callSetupResults {
			m.callSetups.WithLabelValues(home, res)
		}
	}
	for _, dir := range []string{dirLegacyToCloud, dirCloudToLegacy} {
		m.items.WithLabelValues(dir, kindCall, resultOK)
	}
	for _, path := range []string{pathNative, pathInterop, pathEscalation} {
		m.decisions.WithLabelValues(kindCall, path)
	}
	// Pre-create the series dashboards expect, so they exist at zero.
	for _, dir := range []string{dirLegacyToCloud, dirCloudToLegacy} {
		for _, res := range []string{resultOK, resultQueued, resultRefused, resultError, resultUndeliverable} {
			m.messages.WithLabelValues(dir, res)
		}
		for _, kind := range itemKinds {
			m.items.WithLabelValues(dir, kind, resultOK)
		}
	}
	for _, kind := range itemKinds {
		for _, path := range []string{pathNative, pathInterop, pathEscalation} {
			m.decisions.WithLabelValues(kind, path)
		}
	}
	if err := register(reg, "", m.messages, m.items, m.receipts, m.latency, m.routes, m.decisions, m.linkUp, m.link, m.puppets, m.puppetOpens, m.outboxDepth, m.outboxOldest, m.callSetups); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers cs on reg (nothing when reg is nil); what names the
// group in the error.
func register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("bridge: register %smetrics: %w", what, err)
		}
	}
	return nil
}

// Route paths, as values of the path label of
// gateway_bridge_route_decisions_total. Native decisions are those the
// bridge sees: cloud-to-cloud traffic in the inboxes it follows; a legacy
// device reaches another legacy-home user's devices without the agent.
const (
	pathNative     = "native"
	pathInterop    = "interop"
	pathEscalation = "escalation"
)

// decide counts one route decision.
func (b *Bridge) decide(kind, path string) {
	b.metrics.decisions.WithLabelValues(kind, path).Inc()
}

// countItem counts one item carried (or not) across the boundary.
func (b *Bridge) countItem(direction, kind, result string) {
	b.metrics.items.WithLabelValues(direction, kind, result).Inc()
}
