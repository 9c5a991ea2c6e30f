package cloud

import (
	"bytes"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Client kinds (the kind label of gateway_cloud_sessions): a bridge
// session, a user session that sent its token in hello (browsers, which
// cannot set headers), or one that sent it in the Authorization header.
const (
	kindNative  = "native"
	kindBrowser = "browser"
	kindBridge  = "bridge"
)

// frameOther labels a written frame whose type is not a server frame's.
const frameOther = "other"

// typePrefix starts every encoded frame (cloudwire.Encode puts type first).
var typePrefix = []byte(`{"type":"`)

// metrics are the service's Prometheus collectors. They always exist (so
// code never checks for nil) and are registered only when a Registerer is
// configured. No label carries a user, device or session id.
type metrics struct {
	sessions   *prometheus.GaugeVec
	framesSent *prometheus.CounterVec
	// sentByType holds framesSent's counters by server frame type;
	// read-only after newMetrics.
	sentByType   map[string]prometheus.Counter
	handshakes   *prometheus.CounterVec
	closes       *prometheus.CounterVec
	frames       *prometheus.CounterVec
	sends        *prometheus.CounterVec
	receipts     *prometheus.CounterVec
	sendSeconds  prometheus.Histogram
	bridgeQueue  prometheus.Histogram
	events       *prometheus.CounterVec
	liveLag      prometheus.Histogram
	syncSeconds  prometheus.Histogram
	conflicts    prometheus.Counter
	settingUp    prometheus.Gauge
	placeholders *prometheus.CounterVec
	nodes        prometheus.Gauge
	reaped       prometheus.Counter
	callsReaped  prometheus.Counter
	// puppets counts the puppets bridge sessions hold open (puppets.go).
	puppets prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_cloud_sessions",
			Help: "Open cloud WebSocket sessions (past welcome) on this node, by client kind (native, browser, bridge).",
		}, []string{"kind"}),
		framesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_frames_sent_total",
			Help: "Frames written to clients by type.",
		}, []string{"type"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_handshakes_total",
			Help: "WebSocket handshakes by result (ok, or why they were refused).",
		}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_session_closes_total",
			Help: "Sessions closed by the service, by WebSocket close code.",
		}, []string{"code"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_frames_received_total",
			Help: "Frames received from clients by type (invalid for undecodable ones).",
		}, []string{"type"}),
		sends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_sends_total",
			Help: "Send requests by result: ok, duplicate, or the error code.",
		}, []string{"result"}),
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_receipts_total",
			Help: "Receipt requests by result: ok, or the error code.",
		}, []string{"result"}),
		sendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_cloud_send_duration_seconds",
			Help:    "Time from a send frame to its ack being queued (log, inbox and idempotency writes).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		bridgeQueue: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_cloud_bridge_queue_seconds",
			Help:    "Time a bridge session's send or receipt waited from being read to being handled: behind the earlier requests of the same legacy user, which are handled one at a time in order.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_events_delivered_total",
			Help: "Inbox events queued to sessions, by path (sync replay or live).",
		}, []string{"path"}),
		liveLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_cloud_delivery_lag_seconds",
			Help:    "Age of live inbox events when this node dispatches them to its sessions.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		syncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_cloud_sync_duration_seconds",
			Help:    "Time from welcome to synced for a session's initial replay.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_cloud_log_conflicts_total",
			Help: "Conversation log appends retried because another writer moved the conversation on.",
		}),
		settingUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_cloud_handshakes_in_flight",
			Help: "Sessions being set up on this node (admitted, initial sync not done); bounded by MaxHandshakes.",
		}),
		placeholders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_cloud_events_placeholder_total",
			Help: "Inbox events sent as placeholders because the stored record could not be read (corrupt) or encoded (unencodable).",
		}, []string{"reason"}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_cloud_nodes",
			Help: "Cloud service nodes holding a lease (heartbeating), as this node last listed them.",
		}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_cloud_devices_reaped_total",
			Help: "Devices this node marked offline because the node holding their session stopped heartbeating (its lease expired).",
		}),
		callsReaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_cloud_calls_reaped_total",
			Help: "Calls this node ended as unavailable for both parties because the node that owned them stopped heartbeating (its lease expired).",
		}),
		puppets: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_cloud_bridge_puppets",
			Help: "Puppets (users a bridge session announced it acts for, protocol v10) open on this node's bridge sessions.",
		}),
	}
	for _, k := range []string{kindNative, kindBrowser, kindBridge} {
		m.sessions.WithLabelValues(k)
	}
	m.sentByType = make(map[string]prometheus.Counter)
	for _, t := range []string{
		cloudwire.TypeWelcome, cloudwire.TypeAck, cloudwire.TypeError, cloudwire.TypeEvent,
		cloudwire.TypeSynced, cloudwire.TypePage, cloudwire.TypePresence, cloudwire.TypePresenceSnapshot,
		cloudwire.TypeTyping, cloudwire.TypeCallState, cloudwire.TypeActing, frameOther,
	} {
		m.sentByType[t] = m.framesSent.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.sessions, m.handshakes, m.closes, m.frames, m.sends, m.receipts,
		m.sendSeconds, m.bridgeQueue, m.events, m.liveLag, m.syncSeconds, m.conflicts, m.settingUp,
		m.placeholders, m.framesSent, m.nodes, m.reaped, m.callsReaped, m.puppets,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) closed(code int) {
	m.closes.WithLabelValues(strconv.Itoa(code)).Inc()
}

// sent counts one frame written to a client, reading its type from the
// encoded bytes rather than decoding it.
func (m *metrics) sent(b []byte) {
	c := m.sentByType[frameOther]
	if rest, ok := bytes.CutPrefix(b, typePrefix); ok {
		if i := bytes.IndexByte(rest, '"'); i > 0 {
			// Indexing with string(bytes) does not allocate.
			if t, ok := m.sentByType[string(rest[:i])]; ok {
				c = t
			}
		}
	}
	c.Inc()
}
