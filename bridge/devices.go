package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// A user in phase cloud who still runs a legacy client is one more device
// of theirs in the cloud (DESIGN.md, phases). What that device sends
// through the bridge (to a cloud-home recipient: the recipient's route
// points here) is written into the cloud as the user, from that device
// (cloudwire.Send.Device, protocol v11), so it reaches the recipient and,
// as the user's own sent message, every other device of theirs. The
// device id is the one the migration record keeps for a legacy device:
// its overlay peer id. The bridge checks the device's certificate (the
// chat handler already bound the sender to it); the cloud asks the
// gateway (cloud.Config.ActForDevice), which applies CheckOwnDevice to
// its own copy of the record.

// Errors of CheckOwnDevice, each a reason the bridge may not carry a
// legacy device as one of its user's cloud devices.
var (
	// ErrOverlayHome: the user's home is the overlay; the bridge acts for
	// them as a user (no device), as for every legacy-home user.
	ErrOverlayHome = errors.New("bridge: the user's home is the overlay")
	// ErrFinalized: the user moved to the cloud for good; their legacy
	// devices are refused with upgrade_required (DESIGN.md).
	ErrFinalized = errors.New("bridge: the user is finalized: legacy devices may no longer send")
	// ErrDeviceNotOnRecord: the device is not a legacy device (an overlay
	// peer id) of the user's migration record.
	ErrDeviceNotOnRecord = errors.New("bridge: not a legacy device on the user's record")
)

// CheckOwnDevice reports whether device may appear in the cloud as one of
// u's devices through the bridge: u's home is the cloud but not for good
// (phase cloud, or held or failed on the way back from it), and device is
// a legacy device on u's record. The bridge and the gateway's
// cloud.Config.ActForDevice both apply it.
func CheckOwnDevice(u migrate.User, device string) error {
	switch {
	case !u.CloudHome():
		return fmt.Errorf("%w: %s is in phase %s", ErrOverlayHome, u.ID, u.Phase)
	case finalized(u):
		return fmt.Errorf("%w: %s", ErrFinalized, u.ID)
	}
	if _, err := peer.Decode(device); err != nil {
		return fmt.Errorf("%w: %s is not an overlay peer id", ErrDeviceNotOnRecord, device)
	}
	if _, ok := u.Device(device); !ok {
		return fmt.Errorf("%w: %s of %s", ErrDeviceNotOnRecord, device, u.ID)
	}
	return nil
}

// finalized reports whether u is finalized, or held or failed on the way
// back from it.
func finalized(u migrate.User) bool {
	return u.Phase == migrate.PhaseFinalized || u.Prior == migrate.PhaseFinalized
}

// Results of gateway_bridge_own_device_items_total, and its kind for
// what is read back from a device's history (syncSent).
const (
	kindOwnHistory = "history"
	// kindMirror: a shadow copy the device sent to a mirrored
	// recipient's mirror (shadow.go).
	kindMirror         = "mirror"
	ownResultFinalized = "finalized"
	ownResultNoRecord  = "not_on_record"
)

// ownDeviceMetrics count what cloud-home users' legacy devices send
// through the bridge.
type ownDeviceMetrics struct {
	items    *prometheus.CounterVec
	presence *prometheus.CounterVec
	online   prometheus.Gauge
}

func newOwnDeviceMetrics(reg prometheus.Registerer) (*ownDeviceMetrics, error) {
	m := &ownDeviceMetrics{items: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gateway_bridge_own_device_items_total",
		Help: "Items a cloud-home user's own legacy device sent, written into the cloud as the user from that device, by kind (msg, file, receipt: through the bridge; mirror: a shadow copy to a mirrored legacy recipient; history: sent device to device to a legacy user, read back from the device's history) and result (ok, finalized: refused with upgrade_required, not_on_record: the device is not on the user's record, refused: the cloud will never take it, error).",
	}, []string{"kind", "result"}),
		presence: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_own_device_presence_total",
			Help: "Presence changes of cloud-home users' legacy devices the bridge wrote into the cloud, by state (active: the device became reachable, offline) and result (ok, error).",
		}, []string{"state", "result"}),
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_bridge_own_devices_online",
			Help: "Legacy devices of cloud-home users the bridge shows online in the cloud.",
		}),
	}
	for _, k := range []string{kindMsg, kindFile, kindReceipt, kindMirror, kindOwnHistory} {
		for _, r := range []string{resultOK, ownResultFinalized, ownResultNoRecord, resultRefused, resultError} {
			m.items.WithLabelValues(k, r)
		}
	}
	if err := register(reg, "own device ", m.items, m.presence, m.online); err != nil {
		return nil, err
	}
	return m, nil
}

// sendAs fills in who a legacy send is written into the cloud as: the
// sender, acting as a user when their home is the overlay, or as the
// cloud-home sender from the device from when CheckOwnDevice allows it.
// A refusal comes as the chat ack to give the device (and is counted
// under kind).
func (b *Bridge) sendAs(from legacywire.Certificate, s *cloudwire.Send, kind string) (refusal *legacywire.ChatAck) {
	s.As = from.User
	s.Device, refusal = b.ownDevice(from, s.MsgID, kind)
	return refusal
}

// ownDevice returns the device a request of from's user (a send, a
// receipt: kind) is written into the cloud from: none when the user's
// home is the overlay (the bridge acts for them as a user), from's own
// device when the home is the cloud and CheckOwnDevice allows it. A
// refusal comes as the chat ack (with id) to give the device, counted
// under kind.
func (b *Bridge) ownDevice(from legacywire.Certificate, id, kind string) (device string, refusal *legacywire.ChatAck) {
	u, ok := b.cfg.State.Get(from.User)
	if !ok || !u.CloudHome() {
		return "", nil
	}
	err := CheckOwnDevice(u, from.PeerID)
	ack := legacywire.ChatAck{ID: id, Status: legacywire.StatusRefused}
	switch {
	case err == nil:
		return from.PeerID, nil
	case errors.Is(err, ErrFinalized):
		b.own.items.WithLabelValues(kind, ownResultFinalized).Inc()
		ack.Code = legacywire.CodeUpgradeRequired
		ack.Error = from.User + " has moved to the new app for good: this app can no longer send; please use the new app"
	default:
		// Devices are recorded as they register, asynchronously: a device
		// that registered a moment ago may not be on record yet, so the
		// refusal is one the device retries.
		b.own.items.WithLabelValues(kind, ownResultNoRecord).Inc()
		ack.Code = CodeUnavailable
		ack.Error = "this device is not (yet) on record as one of " + from.User + "'s devices; retry later"
	}
	b.log.Info("own legacy device refused", "id", id, "kind", kind, "reason", err)
	return "", &ack
}

// The cloud shows a cloud-home user's legacy device as online while the
// bridge can reach it: it is registered at the directory and connected to
// the bridge, or answers a connection. The bridge looks again (probe) when
// the device sends through it, when a mirror copy reached the user's
// devices, when the user's record changes (a device registered, a phase
// change), when the bridge's connection to a device shown online closes,
// and every ownProbeEvery for every device shown online. The records name
// the bridge's own node lease (cloud.BridgeDevices): if the bridge dies,
// the cloud marks its devices offline once the lease expires; a bridge
// that stops marks them offline itself. A look shows again a device the
// cloud no longer shows as this bridge's (its lease lapsed in a stall, or
// another bridge that reached it too hid it as it stopped). A look costs
// a directory lookup, a connection check per device and a history read
// (syncSent) per device it shows.
const (
	ownProbeEvery   = 30 * time.Second
	ownProbeTimeout = 3 * time.Second
	// ownStopTimeout bounds marking the devices offline at stop.
	ownStopTimeout = 2 * time.Second
	// ownProbeQueue bounds the users waiting for a probe; beyond it a
	// probe is dropped (the periodic probe catches up).
	ownProbeQueue = 4096
	// ownProbeWorkers bounds the looks in flight (probeAll), and
	// ownProbeJitter is the most a look waits before it starts.
	ownProbeWorkers = 4
	ownProbeJitter  = 100 * time.Millisecond
)

// ownDevices shows cloud-home users' legacy devices in the cloud.
type ownDevices struct {
	b     *Bridge
	cloud *cloud.BridgeDevices
	m     *ownDeviceMetrics
	wake  chan struct{}

	mu     sync.Mutex
	queued map[string]bool              // users waiting for a probe
	on     map[string]map[string]string // user → device shown online → its client version
	byPeer map[peer.ID]string           // device shown online → its user
}

func newOwnDevices(b *Bridge, m *ownDeviceMetrics) *ownDevices {
	d := &ownDevices{
		b: b, m: m, wake: make(chan struct{}, 1),
		cloud:  cloud.NewBridgeDevices(b.cfg.JS, b.cfg.Host.ID().String()),
		queued: map[string]bool{}, on: map[string]map[string]string{}, byPeer: map[peer.ID]string{},
	}
	b.cfg.State.OnChange(func(prev *migrate.User, cur migrate.User) {
		if !mirrors(cur) && !d.showing(cur.ID) {
			return // no legacy device of a cloud user to show, none to hide
		}
		if prev != nil && prev.Phase == cur.Phase && prev.Prior == cur.Prior && slices.Equal(prev.Devices, cur.Devices) {
			return
		}
		d.probe(cur.ID)
	})
	b.cfg.Host.Network().Notify(&network.NotifyBundle{DisconnectedF: func(_ network.Network, c network.Conn) {
		d.mu.Lock()
		user, ok := d.byPeer[c.RemotePeer()]
		d.mu.Unlock()
		if ok {
			d.probe(user)
		}
	}})
	return d
}

// showing reports whether the bridge shows a device of user's online.
func (d *ownDevices) showing(user string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.on[user]) > 0
}

// seen is told that the device certified by cert sent through the bridge.
func (d *ownDevices) seen(cert legacywire.Certificate) {
	pid, err := peer.Decode(cert.PeerID)
	if err != nil {
		return
	}
	d.mu.Lock()
	_, shown := d.byPeer[pid]
	d.mu.Unlock()
	if !shown {
		d.probe(cert.User)
	}
}

// reached is told that a device of user's took a mirror copy: a look
// finds it, unless one of user's devices is shown already.
func (d *ownDevices) reached(user string) {
	if !d.showing(user) {
		d.probe(user)
	}
}

// probe queues a look at user's legacy devices.
func (d *ownDevices) probe(user string) {
	d.mu.Lock()
	if !d.queued[user] && len(d.queued) < ownProbeQueue {
		d.queued[user] = true
	}
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run heartbeats the bridge's node lease and works the probes until ctx
// ends, then marks the devices it shows offline. The looks run apart from
// the heartbeat (work), so a long batch never delays the lease.
func (d *ownDevices) run(ctx context.Context) error {
	defer d.stop()
	var wg sync.WaitGroup
	defer wg.Wait() // before stop: no look is left to show a device again
	wg.Go(func() { d.work(ctx) })
	beat := time.NewTimer(0)
	defer beat.Stop()
	tick := time.NewTicker(ownProbeEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			next, err := d.cloud.Heartbeat(ctx)
			if err != nil {
				// The cloud service may not be up yet: its buckets are its own.
				d.b.log.Debug("bridge node lease", "err", err)
				next = time.Second
			}
			beat.Reset(next)
		case <-tick.C:
			d.mu.Lock()
			for user := range d.on {
				d.queued[user] = true
			}
			d.mu.Unlock()
			select {
			case d.wake <- struct{}{}:
			default:
			}
		}
	}
}

// work takes the queued users in batches until ctx ends: each batch is
// looked at by probeAll, and what is queued meanwhile waits for the next.
func (d *ownDevices) work(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		}
		d.mu.Lock()
		users := make([]string, 0, len(d.queued))
		for u := range d.queued {
			users = append(users, u)
		}
		clear(d.queued)
		d.mu.Unlock()
		probeAll(ctx, users, ownProbeWorkers, ownProbeJitter, d.look)
	}
}

// probeAll runs look for each of users, in random order, at most workers
// at a time, each after a random wait of up to jitter, and returns when
// all are done or ctx ends. A look costs a directory lookup, connection
// checks and history reads: a batch of thousands (at start, every user
// with a legacy device queues one) must neither open thousands of them at
// once nor, on several bridges started together, run in step.
func probeAll(ctx context.Context, users []string, workers int, jitter time.Duration, look func(context.Context, string)) {
	rand.Shuffle(len(users), func(i, j int) { users[i], users[j] = users[j], users[i] })
	next := make(chan string)
	var wg sync.WaitGroup
	for range min(workers, len(users)) {
		wg.Go(func() {
			for u := range next {
				if jitter > 0 {
					t := time.NewTimer(rand.N(jitter))
					select {
					case <-ctx.Done():
						t.Stop()
						continue // drain: the sender stops too
					case <-t.C:
					}
				}
				look(ctx, u)
			}
		})
	}
feed:
	for _, u := range users {
		select {
		case next <- u:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
}

// look shows user's legacy devices as the bridge finds them now.
func (d *ownDevices) look(ctx context.Context, user string) {
	b := d.b
	want := map[string]legacywire.Certificate{} // devices to show online
	if u, ok := b.cfg.State.Get(user); ok && u.CloudHome() && !finalized(u) {
		lctx, cancel := context.WithTimeout(ctx, ownProbeTimeout)
		look, err := b.dir.Lookup(lctx, user)
		cancel()
		if err != nil {
			b.log.Debug("own devices: lookup", "err", err)
			return // try again at the next probe
		}
		for _, rec := range look.Devices {
			if CheckOwnDevice(u, rec.Cert.PeerID) != nil {
				continue
			}
			if d.reachable(ctx, rec) {
				want[rec.Cert.PeerID] = rec.Cert
				if err := d.syncSent(ctx, u, rec); err != nil && ctx.Err() == nil {
					b.log.Info("own device: sent messages not read back; next probe retries", "err", err)
				}
			}
		}
	}
	d.mu.Lock()
	shown := maps.Clone(d.on[user])
	d.mu.Unlock()
	for dev, cert := range want {
		if _, ok := shown[dev]; ok {
			// Shown: still so in the cloud? A cloud node marks it offline
			// if this bridge's lease lapsed (a stall), and another bridge
			// that showed it too may have hidden it as it stopped.
			if still, err := d.cloud.Shown(ctx, user, dev); err != nil || still {
				continue
			}
		}
		d.show(ctx, user, dev, cert.ClientVersion, cloudwire.PresenceActive)
	}
	for dev, version := range shown {
		if _, ok := want[dev]; !ok {
			d.show(ctx, user, dev, version, cloudwire.PresenceOffline)
		}
	}
}

// reachable reports whether the bridge is connected to the registered
// device rec, or can connect to it.
func (d *ownDevices) reachable(ctx context.Context, rec legacywire.DeviceRecord) bool {
	targets, err := legacy.Lookup{Devices: []legacywire.DeviceRecord{rec}}.Targets()
	if err != nil || len(targets) != 1 {
		return false
	}
	h := d.b.cfg.Host
	if h.Network().Connectedness(targets[0].ID) == network.Connected {
		return true
	}
	cctx, cancel := context.WithTimeout(ctx, ownProbeTimeout)
	defer cancel()
	return h.Connect(cctx, targets[0]) == nil
}

// show records user's device in the cloud as online (state active) or
// offline, and remembers what it showed.
func (d *ownDevices) show(ctx context.Context, user, dev, version, state string) {
	err := d.cloud.Set(ctx, user, dev, cloud.BridgedDevice{ClientVersion: version, State: state, At: d.b.now()})
	d.m.presence.WithLabelValues(state, resultOf(err)).Inc()
	if err != nil {
		d.b.log.Warn("own device presence", "state", state, "err", err)
		return
	}
	pid, _ := peer.Decode(dev)
	d.mu.Lock()
	defer d.mu.Unlock()
	if state == cloudwire.PresenceOffline {
		delete(d.on[user], dev)
		if len(d.on[user]) == 0 {
			delete(d.on, user)
		}
		delete(d.byPeer, pid)
	} else {
		if d.on[user] == nil {
			d.on[user] = map[string]string{}
		}
		d.on[user][dev] = version
		d.byPeer[pid] = user
	}
	d.m.online.Set(float64(len(d.byPeer)))
}

// stop marks every device the bridge shows offline, on a fresh deadline.
func (d *ownDevices) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), ownStopTimeout)
	defer cancel()
	d.mu.Lock()
	shown := maps.Clone(d.on)
	d.mu.Unlock()
	for user, devs := range shown {
		for dev, version := range devs {
			d.show(ctx, user, dev, version, cloudwire.PresenceOffline)
		}
	}
}

// What a cloud-home user's legacy device sends to a legacy-home user goes
// device to device: the bridge never sees it, and the recipient's mirror
// route (legacywire.RouteMirror) helps only when the recipient is in
// shadow or ready, since a sender consults the recipient's mirror, never
// its own user's (a legacy/ change would). So at each probe of a device
// it shows, the bridge reads the device's history (the history protocol,
// chat v2+; the backfill's) after the last message it took from it, and
// writes each message the user sent to a legacy-home user into the cloud
// as the user from that device: idempotent by message id, so a repeat
// writes nothing. The recipient's copy from the cloud reaches their
// legacy devices through the feed like any cloud sender's message, and
// they drop it as a repeat (same id). The cursor (the last message id
// read) is kept per device in the shadow bucket ("own.<peer id>"); the
// first read starts a little before the user's last phase change. Known
// limits: such a message reaches the cloud up to one probe period
// (ownProbeEvery) late, at the end of its conversation, where the cloud's
// sequence puts it; chat v1 devices serve no history.
type ownCursor struct {
	After string    `json:"after,omitempty"`
	Since time.Time `json:"since"`
}

func ownCursorKey(device string) string { return "own." + device }

// syncSent writes into the cloud what u's device rec sent device to device
// to legacy-home users since the last read.
func (d *ownDevices) syncSent(ctx context.Context, u migrate.User, rec legacywire.DeviceRecord) error {
	b := d.b
	targets, err := legacy.Lookup{Devices: []legacywire.DeviceRecord{rec}}.Targets()
	if err != nil || len(targets) != 1 {
		return fmt.Errorf("device record of %s: %v", u.ID, err)
	}
	kv, key := b.shadow.kv, ownCursorKey(rec.Cert.PeerID)
	cur := ownCursor{Since: u.PhaseSince.Add(-deltaMargin)}
	if e, err := kv.Get(ctx, key); err == nil {
		if err := json.Unmarshal(e.Value(), &cur); err != nil {
			return fmt.Errorf("own device cursor: %w", err)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("own device cursor: %w", err)
	}
	for n := 0; n < BackfillMaxMessages; {
		req := legacywire.HistoryRequest{User: u.ID, After: cur.After, Since: cur.Since, Limit: backfillPage}
		pctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
		page, err := legacy.FetchHistory(pctx, b.cfg.Host, b.cert, targets[0], req)
		cancel()
		if errors.Is(err, legacy.ErrNotSupported) {
			return nil // a chat v1 device: nothing to read
		}
		if err != nil {
			return fmt.Errorf("read history: %w", err)
		}
		for _, m := range page.Msgs {
			if err := d.writeSent(ctx, u.ID, rec.Cert.PeerID, m); err != nil {
				return err // the cursor stays before m
			}
			cur.After = m.ID
			n++
		}
		if len(page.Msgs) > 0 {
			data, err := json.Marshal(cur)
			if err == nil {
				_, err = kv.Put(ctx, key, data)
			}
			if err != nil {
				return fmt.Errorf("own device cursor: %w", err)
			}
		}
		if !page.More || len(page.Msgs) == 0 {
			return nil
		}
	}
	return nil
}

// writeSent writes m, read from user's device, into the cloud as user from
// device when user sent it to a legacy-home user; other messages are the
// cloud's already (received, or sent through the bridge).
func (d *ownDevices) writeSent(ctx context.Context, user, device string, m legacywire.ChatMessage) error {
	b := d.b
	if m.From != user || m.To == user || !b.live.legacyHome(m.To) {
		return nil
	}
	link, err := b.linkAs(ctx, user)
	if err != nil {
		d.m.items.WithLabelValues(kindOwnHistory, resultError).Inc()
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	_, err = link.Send(sctx, cloudwire.Send{As: user, Device: device, To: m.To, MsgID: m.ID, Text: m.Text})
	switch {
	case err == nil:
		d.m.items.WithLabelValues(kindOwnHistory, resultOK).Inc()
	case refusedForGood(err):
		// The cloud will never take it (the user finalized meanwhile, an
		// id taken by another sender): counted and left behind.
		d.m.items.WithLabelValues(kindOwnHistory, resultRefused).Inc()
		b.log.Warn("own device: sent message refused by the cloud", "msg_id", m.ID, "err", err)
	default:
		d.m.items.WithLabelValues(kindOwnHistory, resultError).Inc()
		return fmt.Errorf("write %s: %w", m.ID, err)
	}
	return nil
}

// ProbeOwnDevices looks at user's legacy devices now (as the bridge does
// on its own at least every ownProbeEvery while it shows one): which the
// cloud shows online, and what they sent device to device since the last
// look. It returns at once; the look runs on the bridge's worker.
func (b *Bridge) ProbeOwnDevices(user string) { b.devices.probe(user) }
