package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// The device census is persisted in its own KV bucket, one key per user's
// device, so that a restarted agent (or another agent on the same cluster)
// knows what every device declared and spoke. Entries of devices not seen
// for censusMaxAge expire from the bucket; the in-memory census is bounded
// by -census-max and keeps the most recently seen.
const (
	censusBucket = "ferry_census"
	censusMaxAge = 180 * 24 * time.Hour
)

type sighting struct {
	user    string
	device  migrate.Device
	census  migrate.CensusDevice
	persist bool
}

// deviceRecorder writes the devices the overlay and the cloud see into the
// users' migration records (devices seen, with platform and version) and
// into the device census (what each declared and the protocol it spoke),
// persisted in censusBucket.
type deviceRecorder struct {
	store   *migratestore.Store
	census  *migrate.DeviceCensus
	kv      jetstream.KeyValue
	log     *slog.Logger
	queue   chan sighting
	results *prometheus.CounterVec
	// legacyProtocol tells the chat version an overlay peer speaks (0 when
	// unknown); nil without a supernode.
	legacyProtocol func(peerID string) int
}

func newDeviceRecorder(ctx context.Context, js jetstream.JetStream, replicas int, store *migratestore.Store, censusMax int, log *slog.Logger, reg prometheus.Registerer) (*deviceRecorder, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      censusBucket,
		Description: "Ferry device census (key: base64url of user NUL device, value: JSON of migrate.CensusDevice)",
		History:     1,
		TTL:         censusMaxAge,
		Replicas:    max(replicas, 1),
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("census bucket %s: %w", censusBucket, err)
	}
	r := &deviceRecorder{
		store:  store,
		census: migrate.NewDeviceCensus(censusMax, migratestore.DeviceSeenResolution),
		kv:     kv,
		log:    log.With("component", "devices"),
		queue:  make(chan sighting, sightingQueue),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_migration_device_sightings_total",
			Help: "Devices seen by the overlay or the cloud and recorded in the users' records, by source and result.",
		}, []string{"source", "result"}),
	}
	reg.MustRegister(r.results,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_versions_census_devices",
			Help: "Devices the in-memory device census holds (bounded by -census-max).",
		}, func() float64 { return float64(r.census.Len()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "gateway_versions_census_evicted_total",
			Help: "Devices evicted from the in-memory device census for its cap, least recently seen first.",
		}, func() float64 { return float64(r.census.Evicted()) }),
	)
	return r, nil
}

func (r *deviceRecorder) fromLegacy(rec legacywire.DeviceRecord) {
	proto := 0
	if r.legacyProtocol != nil {
		proto = r.legacyProtocol(rec.Cert.PeerID)
	}
	r.offer(migrate.CensusDevice{User: rec.Cert.User, ID: rec.Cert.PeerID, Source: migrate.SourceLegacy,
		Platform: rec.Cert.Platform, ClientVersion: rec.Cert.ClientVersion, Protocol: proto, Capabilities: rec.Cert.Capabilities})
}

func (r *deviceRecorder) fromCloud(user string, h cloudwire.Hello) {
	if user == bridge.User {
		return // the bridge's own link is not a user's device
	}
	// A session past its hello speaks the service's one protocol version.
	r.offer(migrate.CensusDevice{User: user, ID: h.Device, Source: migrate.SourceCloud, Platform: h.Platform,
		ClientVersion: h.ClientVersion, Protocol: cloudwire.ProtocolVersion, Capabilities: h.Capabilities})
}

func (r *deviceRecorder) offer(cd migrate.CensusDevice) {
	cd.LastSeen = time.Now().UTC()
	persist, err := r.census.See(cd)
	if err != nil {
		r.results.WithLabelValues(cd.Source, "invalid").Inc()
		return
	}
	d := migrate.Device{ID: cd.ID, Platform: cd.Platform, ClientVersion: cd.ClientVersion, LastSeen: cd.LastSeen}
	select {
	case r.queue <- sighting{user: cd.User, device: d, census: cd, persist: persist}:
		r.results.WithLabelValues(cd.Source, "queued").Inc()
	default:
		r.results.WithLabelValues(cd.Source, "dropped").Inc()
	}
}

// run writes queued sightings and keeps the in-memory census in step with
// the bucket: what is there when it starts (so a restart keeps the census)
// and what other agents write later.
func (r *deviceRecorder) run(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("census watch: %w", err)
	}
	defer func() {
		if err := w.Stop(); err != nil && ctx.Err() == nil {
			r.log.Warn("census watch stop", "err", err)
		}
	}()
	updates := w.Updates()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-updates:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("census watch ended")
			}
			if e != nil { // nil marks the end of the initial values
				r.load(e)
			}
		case s := <-r.queue:
			r.write(ctx, s)
		}
	}
}

func (r *deviceRecorder) load(e jetstream.KeyValueEntry) {
	d, err := migrate.ParseCensusDevice(e.Value())
	if err == nil {
		err = r.census.Load(d)
	}
	if err != nil {
		r.log.Warn("census entry skipped", "key", e.Key(), "err", err)
	}
}

func (r *deviceRecorder) write(ctx context.Context, s sighting) {
	wctx, cancel := context.WithTimeout(ctx, sightingTimeout)
	defer cancel()
	if _, err := r.store.SeeDevice(wctx, s.user, s.device); err != nil && ctx.Err() == nil {
		r.log.Warn("record device", "user", s.user, "err", err)
	}
	if !s.persist {
		return
	}
	b, err := json.Marshal(s.census)
	if err == nil {
		_, err = r.kv.Put(wctx, censusKey(s.user, s.census.ID), b)
	}
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("census write", "user", s.user, "err", err)
		}
		return
	}
	r.census.Persisted(s.user, s.census.ID, s.census.LastSeen)
}

// censusKey is the bucket key of a user's device: any device id becomes a
// valid KV key, and two users' devices of the same id never collide.
func censusKey(user, device string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(user + "\x00" + device))
}
