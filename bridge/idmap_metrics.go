package bridge

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// idMapScrapeTimeout bounds the bucket status request one scrape of
// gateway_bridge_id_map_entries makes.
const idMapScrapeTimeout = 2 * time.Second

// sizeGauge returns gateway_bridge_id_map_entries, read from the id map
// bucket's stream at each scrape (one JetStream request). A scrape that
// cannot reach JetStream shows the last size read, so an outage shows in
// the engine's own metrics rather than as a drop to zero here.
func (l *ledger) sizeGauge() prometheus.GaugeFunc {
	var last atomic.Uint64
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gateway_bridge_id_map_entries",
		Help: "Entries in the bridge's persistent id map (bucket " + idsBucket + "): the conversation of each group message carried to a legacy device, cumulative receipt watermarks, and system-note marks.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), idMapScrapeTimeout)
		defer cancel()
		if st, err := l.kv.Status(ctx); err == nil {
			last.Store(st.Values())
		}
		return float64(last.Load())
	})
}
