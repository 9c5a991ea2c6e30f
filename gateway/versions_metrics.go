package main

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/migrate"
)

// The version plane's gauges are refreshed on a timer rather than at scrape
// time: a census reads every user's record (about a second per million
// users), which a scrape every few seconds must not pay.
const (
	// versionMetricsEvery is how often the census and the policies' dry
	// runs behind the gauges are recomputed.
	versionMetricsEvery = 30 * time.Second
	// activeDeviceWindow: a device counts as active when it was seen within
	// it, the same month the campaign gates look at.
	activeDeviceWindow = 30 * 24 * time.Hour
	// activeDevicePairs bounds the (platform, band) pairs exported; the
	// others are summed under platform and band "other".
	activeDevicePairs = 50
)

// activeDevices exports the last census of active devices by platform,
// version band and phase. Its rows are swapped whole, so a scrape never sees
// half of one census and half of another.
type activeDevices struct {
	desc *prometheus.Desc
	mu   sync.Mutex
	rows []migrate.CensusRow
}

func newActiveDevices() *activeDevices {
	return &activeDevices{desc: prometheus.NewDesc("gateway_versions_active_devices",
		"Devices seen within the last 30 days, by platform, version band and the user's phase (the 50 largest platform and band pairs; the rest under \"other\").",
		[]string{"platform", "band", "phase"}, nil)}
}

func (c *activeDevices) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *activeDevices) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	rows := c.rows
	c.mu.Unlock()
	for _, r := range rows {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(r.Devices), r.Platform, r.Band, string(r.Phase))
	}
}

func (c *activeDevices) set(rows []migrate.CensusRow) {
	c.mu.Lock()
	c.rows = rows
	c.mu.Unlock()
}

// runVersionMetrics refreshes the version plane's gauges until ctx ends.
func (a *agent) runVersionMetrics(ctx context.Context) error {
	t := time.NewTicker(versionMetricsEvery)
	defer t.Stop()
	for {
		a.refreshVersionMetrics(ctx, time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refreshVersionMetrics recomputes the active-device census and every
// saved policy's pending and enforced counts as of now.
func (a *agent) refreshVersionMetrics(ctx context.Context, now time.Time) {
	c := migrate.TakeCensus(a.state.Snapshot(), nil, "", activeDeviceWindow, now)
	a.versions.active.set(c.Bounded(activeDevicePairs))
	lctx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	ps, err := a.versions.policies.List(lctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("version metrics: policies", "err", err)
		}
		return
	}
	for i := range ps {
		a.dryRun(&ps[i], now)
	}
}
