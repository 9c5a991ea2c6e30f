package main

import (
	"runtime"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/migrate"
)

// newRegistry is the agent's one registry: every part registers on it, and
// /metrics serves it. There is no global registry.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// registerAgentMetrics adds the series the agent derives from the parts'
// state at scrape time. overlay is the supernode's host, nil when this agent
// does not run one.
func registerAgentMetrics(reg prometheus.Registerer, st *migrate.State, overlay host.Host) {
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gateway_build_info",
		Help: "Always 1; labels carry the build's version and Go version.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(
		build,
		&usersCollector{state: st},
	)
	if overlay == nil {
		return // no supernode role
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_legacy_peers",
		Help: "Legacy overlay peers connected to this node's supernode.",
	}, func() float64 { return float64(len(overlay.Network().Peers())) }))
}

// registerEngineMetrics exports the embedded engine's storage health
// (engine.StorageErr): an agent on an external NATS reports 0 and 0, its
// servers report their own.
func registerEngineMetrics(reg prometheus.Registerer, eng *engine.Engine) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_engine_storage_failing",
			Help: "1 while the embedded JetStream cannot write to its store (in practice a full disk; /healthz answers 503 meanwhile), else 0.",
		}, func() float64 {
			if eng.StorageErr() != nil {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gateway_engine_storage_recoveries_total",
			Help: "Restarts of the embedded JetStream after a storage write error, once space had returned.",
		}, func() float64 { return float64(eng.StorageRecoveries()) }),
	)
}

// usersCollector reports users per phase from one memdb snapshot per scrape,
// so the phases always add up to the total.
type usersCollector struct {
	state *migrate.State
}

var usersDesc = prometheus.NewDesc("gateway_migration_users",
	"Users known to the migration, by phase.", []string{"phase"}, nil)

func (c *usersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- usersDesc }

func (c *usersCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.state.Snapshot().CountByPhase()
	for _, p := range migrate.Phases() {
		ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, float64(counts[p]), string(p))
	}
}

// registerNetMetrics exports the overlay hosts' paths, relay circuits and
// hole-punch outcomes (legacy.NetStats), read at scrape time. Every label
// value comes from a fixed list, so a series exists from the first scrape.
func registerNetMetrics(reg prometheus.Registerer, stats *legacy.NetStats) {
	reg.MustRegister(&netCollector{stats: stats})
}

// netCollector reads one legacy.NetSnapshot per scrape.
type netCollector struct {
	stats *legacy.NetStats
}

var (
	netConnsDesc = prometheus.NewDesc("gateway_legacy_connections",
		"Overlay connections open now on this agent's supernode and bridge hosts, by path (direct, hole_punched, relayed).", []string{"path"}, nil)
	netConnsOpenedDesc = prometheus.NewDesc("gateway_legacy_connections_opened_total",
		"Overlay connections opened by this agent's supernode and bridge hosts, by path.", []string{"path"}, nil)
	netMediaDesc = prometheus.NewDesc("gateway_legacy_media_streams_total",
		"Call media streams opened or accepted on this agent's overlay hosts, by path.", []string{"path"}, nil)
	netCircuitsDesc = prometheus.NewDesc("gateway_legacy_relay_circuits",
		"Relayed circuits open now through this agent's relays (supernode and bridge).", nil, nil)
	netCircuitsOpenedDesc = prometheus.NewDesc("gateway_legacy_relay_circuits_opened_total",
		"Relayed circuits opened through this agent's relays.", nil, nil)
	netCircuitsRefusedDesc = prometheus.NewDesc("gateway_legacy_relay_circuits_refused_total",
		"Circuit and reservation requests this agent's relays refused, by reason.", []string{"reason"}, nil)
	netReservationsDesc = prometheus.NewDesc("gateway_legacy_relay_reservations",
		"Relay slots NATed devices hold now at this agent's relays.", nil, nil)
	netHolePunchDesc = prometheus.NewDesc("gateway_legacy_holepunch_total",
		"DCUtR outcomes on this agent's bridge host, by outcome.", []string{"outcome"}, nil)
)

func (c *netCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{netConnsDesc, netConnsOpenedDesc, netMediaDesc, netCircuitsDesc,
		netCircuitsOpenedDesc, netCircuitsRefusedDesc, netReservationsDesc, netHolePunchDesc} {
		ch <- d
	}
}

func (c *netCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats.Snapshot()
	for _, p := range legacy.Paths() {
		ch <- prometheus.MustNewConstMetric(netConnsDesc, prometheus.GaugeValue, float64(s.Open[p]), string(p))
		ch <- prometheus.MustNewConstMetric(netConnsOpenedDesc, prometheus.CounterValue, float64(s.OpenedTotal[p]), string(p))
		ch <- prometheus.MustNewConstMetric(netMediaDesc, prometheus.CounterValue, float64(s.MediaStreams[p]), string(p))
	}
	ch <- prometheus.MustNewConstMetric(netCircuitsDesc, prometheus.GaugeValue, float64(s.CircuitsActive))
	ch <- prometheus.MustNewConstMetric(netCircuitsOpenedDesc, prometheus.CounterValue, float64(s.CircuitsOpened))
	for _, r := range legacy.RelayRefusals() {
		ch <- prometheus.MustNewConstMetric(netCircuitsRefusedDesc, prometheus.CounterValue, float64(s.CircuitsRefused[r]), r)
	}
	ch <- prometheus.MustNewConstMetric(netReservationsDesc, prometheus.GaugeValue, float64(s.Reservations))
	for _, o := range legacy.HolePunchOutcomes() {
		ch <- prometheus.MustNewConstMetric(netHolePunchDesc, prometheus.CounterValue, float64(s.HolePunches[o]), o)
	}
}
