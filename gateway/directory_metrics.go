package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/migrate"
)

// directoryCollector reports the supernode's directory from one pass over
// its records per scrape (legacy.Supernode.DirectoryStats).
type directoryCollector struct {
	sn *legacy.Supernode
}

var (
	directoryRecordsDesc = prometheus.NewDesc("gateway_legacy_directory_records",
		"Live records in the supernode's directory, by kind (device registrations, home routes, shadow mirror routes).", []string{"kind"}, nil)
	directoryLookupsDesc = prometheus.NewDesc("gateway_legacy_directory_lookups_total",
		"Lookups the supernode answered.", nil, nil)
	offlineMessagesDesc = prometheus.NewDesc("gateway_legacy_offline_messages",
		"Messages the supernode's offline store holds for users with no live device.", nil, nil)
	registeredDevicesDesc = prometheus.NewDesc("gateway_legacy_registered_devices",
		"Devices registered live at the supernode, by platform and client-version band as their certificates declare (the largest pairs; the rest under other).", []string{"platform", "band"}, nil)
)

func (c directoryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- directoryRecordsDesc
	ch <- directoryLookupsDesc
	ch <- offlineMessagesDesc
	ch <- registeredDevicesDesc
}

func (c directoryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sn.DirectoryStats()
	for kind, n := range map[string]int{"device": st.Devices, "route": st.Routes, "mirror": st.Mirrors} {
		ch <- prometheus.MustNewConstMetric(directoryRecordsDesc, prometheus.GaugeValue, float64(n), kind)
	}
	ch <- prometheus.MustNewConstMetric(directoryLookupsDesc, prometheus.CounterValue, float64(st.Lookups))
	ch <- prometheus.MustNewConstMetric(offlineMessagesDesc, prometheus.GaugeValue, float64(st.Offline))
	// One row per platform and band, bounded like the active-devices
	// census: the largest pairs by name, the rest (and platforms that
	// cannot be a label) under other.
	type pair struct{ platform, band string }
	byBand := map[pair]int{}
	for cl, n := range st.Clients {
		byBand[pair{cl.Platform, migrate.VersionBand(cl.Version)}] += n
	}
	var census migrate.Census
	for p, n := range byBand {
		census.Rows = append(census.Rows, migrate.CensusRow{Platform: p.platform, Band: p.band, Devices: n})
	}
	for _, r := range census.Bounded(activeDevicePairs) {
		ch <- prometheus.MustNewConstMetric(registeredDevicesDesc, prometheus.GaugeValue, float64(r.Devices), r.Platform, r.Band)
	}
}
