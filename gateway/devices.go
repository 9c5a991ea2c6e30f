package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// Sightings wait in a bounded queue so that a registration or a cloud hello
// never waits on a KV write; when the queue is full a sighting is dropped and
// counted (the device will be seen again at its next refresh).
const (
	sightingQueue   = 4096
	sightingTimeout = 5 * time.Second
)

type sighting struct {
	user   string
	device migrate.Device
}

// deviceRecorder writes the devices the overlay and the cloud see into the
// users' migration records (devices seen, with platform and version).
type deviceRecorder struct {
	store   *migratestore.Store
	log     *slog.Logger
	queue   chan sighting
	results *prometheus.CounterVec
}

func newDeviceRecorder(store *migratestore.Store, log *slog.Logger, reg prometheus.Registerer) *deviceRecorder {
	r := &deviceRecorder{
		store: store,
		log:   log.With("component", "devices"),
		queue: make(chan sighting, sightingQueue),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_migration_device_sightings_total",
			Help: "Devices seen by the overlay or the cloud and recorded in the users' records, by source and result.",
		}, []string{"source", "result"}),
	}
	reg.MustRegister(r.results)
	return r
}

func (r *deviceRecorder) fromLegacy(rec legacywire.DeviceRecord) {
	r.offer("legacy", rec.Cert.User, migrate.Device{
		ID: rec.Cert.PeerID, Platform: rec.Cert.Platform, ClientVersion: rec.Cert.ClientVersion,
	})
}

func (r *deviceRecorder) fromCloud(user string, h cloudwire.Hello) {
	if user == bridge.User {
		return // the bridge's own link is not a user's device
	}
	r.offer("cloud", user, migrate.Device{ID: h.Device, Platform: h.Platform, ClientVersion: h.ClientVersion})
}

func (r *deviceRecorder) offer(source, user string, d migrate.Device) {
	d.LastSeen = time.Now().UTC()
	select {
	case r.queue <- sighting{user: user, device: d}:
		r.results.WithLabelValues(source, "queued").Inc()
	default:
		r.results.WithLabelValues(source, "dropped").Inc()
	}
}

func (r *deviceRecorder) run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-r.queue:
			wctx, cancel := context.WithTimeout(ctx, sightingTimeout)
			_, err := r.store.SeeDevice(wctx, s.user, s.device)
			cancel()
			if err != nil && ctx.Err() == nil {
				r.log.Warn("record device", "user", s.user, "err", err)
			}
		}
	}
}
