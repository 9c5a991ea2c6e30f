package main

import (
	"runtime"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
