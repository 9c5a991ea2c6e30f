package bridge

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Typing and presence cross the boundary live only: nothing is stored,
// queued or retried, because the next indication supersedes the last. Each
// is published only by the side that is authoritative for its user
// (DESIGN.md, phases): a legacy-home user's typing and presence come from
// their legacy devices, a cloud-home user's from their cloud devices, and
// the bridge converts them for watchers on the other side. Chat v1 devices
// get neither (counted as unsupported, never an error to anyone).
//
//   - legacy → cloud: typing a legacy device sends to a cloud-home user
//     (the route record points it here) becomes a cloud typing frame in
//     their one-to-one conversation. For presence the bridge subscribes to
//     the devices of every legacy-home user it carries traffic for, and what
//     they publish goes to the user's cloud contacts (those who share a
//     conversation with them), as one more device of the user.
//   - cloud → legacy: the bridge listens on the cloud's live subjects. A
//     cloud user's typing in a one-to-one conversation with a legacy-home
//     user goes to that user's devices (legacy chat has no groups: group
//     typing is unsupported); a cloud-home user's presence, summed over
//     their devices (active beats idle beats offline), goes to the legacy
//     devices that subscribed to it through the bridge.
const (
	// liveQueue bounds the cloud → legacy work waiting for the worker;
	// beyond it an indication is dropped (and counted), never waited for.
	liveQueue = 1024
	// watchTTL is how long a presence subscription the bridge made to a
	// legacy user's devices is trusted before it is made again (a device
	// that restarted has forgotten its subscribers).
	watchTTL = 5 * time.Minute
	// maxLiveUsers bounds each of the relay's maps; when one is full it
	// starts over (a forgotten watcher subscribes again, a forgotten
	// presence is resent on its next change).
	maxLiveUsers = 10000
	// maxWatchersPerUser bounds the legacy devices watching one cloud user.
	maxWatchersPerUser = 256
)

// liveJob is one piece of work for the relay's worker: a frame for the
// devices of a legacy user (to), for explicit devices (targets), or, with
// subscribe set, a presence subscription to the devices of to.
type liveJob struct {
	to        string
	targets   []peer.AddrInfo
	frame     legacywire.ChatFrame
	kind      string
	subscribe bool
}

// liveRelay carries typing and presence across the boundary.
type liveRelay struct {
	b     *Bridge
	cloud *cloud.BridgeLive
	jobs  chan liveJob

	mu       sync.Mutex
	watched  map[string]time.Time            // legacy user → when the bridge subscribed
	watchers map[string]map[peer.ID]struct{} // cloud user → legacy devices subscribed
	devices  map[string]map[string]string    // cloud user → device → presence state
	sent     map[string]string               // cloud user → state last sent to watchers
}

func newLiveRelay(b *Bridge) *liveRelay {
	return &liveRelay{
		b:        b,
		cloud:    cloud.NewBridgeLive(b.cfg.JS),
		jobs:     make(chan liveJob, liveQueue),
		watched:  make(map[string]time.Time),
		watchers: make(map[string]map[peer.ID]struct{}),
		devices:  make(map[string]map[string]string),
		sent:     make(map[string]string),
	}
}

// run listens on the cloud's live subjects and works the queue until ctx
// ends.
func (r *liveRelay) run(ctx context.Context) error {
	sub, err := r.cloud.SubscribeLive(r.fromCloud)
	if err != nil {
		return err
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil {
			r.b.log.Debug("unsubscribe live", "err", err)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-r.jobs:
			r.work(ctx, j)
		}
	}
}

// legacyHome reports whether user's inbound home is the overlay; unknown
// users are legacy (DESIGN.md: every user starts there).
func (r *liveRelay) legacyHome(user string) bool {
	u, ok := r.b.cfg.State.Get(user)
	return !ok || !u.CloudHome()
}

func (r *liveRelay) cloudHome(user string) bool { return !r.legacyHome(user) }

// enqueue hands j to the worker, or drops it when the queue is full.
func (r *liveRelay) enqueue(j liveJob) {
	select {
	case r.jobs <- j:
	default:
		if j.kind != "" {
			r.b.countItem(dirCloudToLegacy, j.kind, resultError)
		}
		r.b.log.Debug("live queue full; dropped", "kind", j.kind)
	}
}

func (r *liveRelay) work(ctx context.Context, j liveJob) {
	if j.subscribe {
		f := legacywire.ChatFrame{Type: legacywire.FrameSubscribe, ID: newFrameID(), Subscribe: &legacywire.Subscribe{User: j.to}}
		if res := r.b.sendFrameTo(ctx, r.b.legacyTargets(ctx, j.to), f); res == resultError {
			r.forget(j.to) // try again with the user's next traffic
		}
		return
	}
	targets := j.targets
	if targets == nil {
		targets = r.b.legacyTargets(ctx, j.to)
	}
	r.b.countItem(dirCloudToLegacy, j.kind, r.b.sendFrameTo(ctx, targets, j.frame))
}

// watch makes sure the bridge hears user's presence from their legacy
// devices: called whenever it carries traffic of a legacy-home user.
func (r *liveRelay) watch(user string) {
	if !r.legacyHome(user) {
		return
	}
	now := r.b.now()
	r.mu.Lock()
	if at, ok := r.watched[user]; ok && now.Sub(at) < watchTTL {
		r.mu.Unlock()
		return
	}
	if len(r.watched) >= maxLiveUsers {
		clear(r.watched)
	}
	r.watched[user] = now
	r.mu.Unlock()
	r.enqueue(liveJob{to: user, subscribe: true})
}

func (r *liveRelay) forget(user string) {
	r.mu.Lock()
	delete(r.watched, user)
	r.mu.Unlock()
}

// fromCloud handles a live frame the cloud sent to user, a legacy-home
// user (or any user, for presence: its own copy is how the bridge learns
// a cloud user's state). It runs on NATS's goroutine: it only queues.
func (r *liveRelay) fromCloud(user string, f cloudwire.Frame) {
	switch f := f.(type) {
	case cloudwire.Typing:
		if f.User == user || !r.legacyHome(user) || r.legacyHome(f.User) {
			return // native, or not a cloud-home user's own indication
		}
		if cloudwire.IsGroupID(f.Conv) {
			r.b.decide(kindTyping, pathInterop)
			r.b.countItem(dirCloudToLegacy, kindTyping, resultUnsupported)
			return
		}
		if f.Conv != cloudwire.DirectConversationID(f.User, user) {
			return
		}
		r.b.decide(kindTyping, pathInterop)
		r.enqueue(liveJob{to: user, kind: kindTyping, frame: legacywire.ChatFrame{
			Type: legacywire.FrameTyping, ID: newFrameID(),
			Typing: &legacywire.Typing{From: f.User, To: user, Active: f.Typing, At: r.b.now().UTC()},
		}})
	case cloudwire.Presence:
		if f.User != user || r.legacyHome(user) {
			return // only the user's own copy, and only if the cloud speaks for them
		}
		r.cloudPresence(user, f)
	}
}

// cloudPresence records one device's presence of a cloud-home user and,
// when the user's summed state changes, sends it to the legacy devices
// watching the user.
func (r *liveRelay) cloudPresence(user string, f cloudwire.Presence) {
	r.mu.Lock()
	devs := r.devices[user]
	if devs == nil {
		if len(r.devices) >= maxLiveUsers {
			clear(r.devices)
			clear(r.sent)
		}
		devs = make(map[string]string)
		r.devices[user] = devs
	}
	if f.State == cloudwire.PresenceOffline {
		delete(devs, f.Device)
	} else {
		devs[f.Device] = f.State
	}
	state := summedPresence(devs)
	if len(devs) == 0 {
		delete(r.devices, user)
	}
	changed := r.sent[user] != state
	r.sent[user] = state
	targets := r.watcherTargets(user)
	r.mu.Unlock()
	if !changed || len(targets) == 0 {
		return
	}
	r.b.decide(kindPresence, pathInterop)
	r.enqueue(liveJob{targets: targets, kind: kindPresence, frame: r.presenceFrame(user, state)})
}

func (r *liveRelay) presenceFrame(user, state string) legacywire.ChatFrame {
	return legacywire.ChatFrame{Type: legacywire.FramePresence, ID: newFrameID(),
		Presence: &legacywire.Presence{User: user, Status: state, At: r.b.now().UTC()}}
}

// summedPresence is a user's presence over their devices: active if one is
// active, idle if one is idle, else offline. The legacy protocol has one
// presence per user.
func summedPresence(devs map[string]string) string {
	state := legacywire.PresenceOffline
	for _, s := range devs {
		switch s {
		case cloudwire.PresenceActive:
			return legacywire.PresenceActive
		case cloudwire.PresenceIdle:
			state = legacywire.PresenceIdle
		}
	}
	return state
}

// watcherTargets returns the legacy devices watching user, with the
// addresses the bridge's peerstore knows. r.mu must be held.
func (r *liveRelay) watcherTargets(user string) []peer.AddrInfo {
	ws := r.watchers[user]
	if len(ws) == 0 {
		return nil
	}
	out := make([]peer.AddrInfo, 0, len(ws))
	for p := range ws {
		out = append(out, peer.AddrInfo{ID: p, Addrs: r.b.cfg.Host.Peerstore().Addrs(p)})
	}
	return out
}

// subscribe records (or, with unsubscribe, forgets) that a legacy device
// watches the cloud-home user's presence, and sends it the user's current
// state when the bridge knows one.
func (r *liveRelay) subscribe(from legacywire.Certificate, user string, unsubscribe bool) (ok bool) {
	pid, err := peer.Decode(from.PeerID)
	if err != nil {
		return false
	}
	r.mu.Lock()
	ws := r.watchers[user]
	switch {
	case unsubscribe:
		delete(ws, pid)
		if len(ws) == 0 {
			delete(r.watchers, user)
		}
		r.mu.Unlock()
		return true
	case ws == nil:
		if len(r.watchers) >= maxLiveUsers {
			clear(r.watchers)
		}
		ws = make(map[peer.ID]struct{})
		r.watchers[user] = ws
	case len(ws) >= maxWatchersPerUser:
		if _, known := ws[pid]; !known {
			r.mu.Unlock()
			return false
		}
	}
	ws[pid] = struct{}{}
	state, known := r.sent[user]
	r.mu.Unlock()
	if known {
		r.enqueue(liveJob{targets: []peer.AddrInfo{{ID: pid, Addrs: r.b.cfg.Host.Peerstore().Addrs(pid)}},
			kind: kindPresence, frame: r.presenceFrame(user, state)})
	}
	return true
}

// legacyDevice is how a legacy device appears among a user's cloud
// devices in presence and typing frames.
func legacyDevice(cert legacywire.Certificate) string {
	id := cert.PeerID
	return "legacy-" + id[max(0, len(id)-8):]
}

// cloudState maps a legacy presence status to a cloud presence state.
func cloudState(status string) (string, bool) {
	switch status {
	case legacywire.PresenceActive:
		return cloudwire.PresenceActive, true
	case legacywire.PresenceIdle:
		return cloudwire.PresenceIdle, true
	case legacywire.PresenceOffline:
		return cloudwire.PresenceOffline, true
	}
	return "", false
}

func newFrameID() string { return uuid.Must(uuid.NewV7()).String() }

// liveFromLegacy handles a typing, presence or subscribe frame from a
// legacy device (the bridge's ChatConfig.OnFrame hands them here).
func (b *Bridge) liveFromLegacy(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	if legacywire.IsCallFrame(f.Type) {
		return b.calls.fromLegacy(ctx, from, f)
	}
	r := b.live
	kind := kindTyping
	if f.Type != legacywire.FrameTyping {
		kind = kindPresence
	}
	refuse := func(code, text string) legacywire.ChatAck {
		b.countItem(dirLegacyToCloud, kind, resultRefused)
		return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: code, Error: text}
	}
	notHere := func(user string) legacywire.ChatAck {
		b.decide(kind, pathEscalation)
		return refuse(CodeNotHere, user+" is not served by the bridge; look the user up again")
	}
	switch f.Type {
	case legacywire.FrameTyping:
		t := *f.Typing
		if !r.cloudHome(t.To) {
			return notHere(t.To)
		}
		if r.cloudHome(t.From) {
			return refuse(legacywire.CodeUnsupported, "the cloud publishes "+t.From+"'s typing")
		}
		err := r.cloud.PublishTyping(cloudwire.Typing{
			Conv: cloudwire.DirectConversationID(t.From, t.To), User: t.From, Device: legacyDevice(from), Typing: t.Active,
		}, []string{t.To})
		if err != nil {
			b.countItem(dirLegacyToCloud, kind, resultError)
			b.log.Warn("legacy typing to cloud", "err", err)
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: "cloud did not take the typing indication"}
		}
		r.watch(t.From)
	case legacywire.FramePresence:
		p := *f.Presence
		if r.cloudHome(p.User) {
			// The device forgets the bridge as a subscriber on a refusal.
			return refuse(legacywire.CodeUnsupported, "the cloud publishes "+p.User+"'s presence")
		}
		state, ok := cloudState(p.Status)
		if !ok {
			return refuse(legacywire.CodeBadFrame, "unknown presence status")
		}
		pctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
		defer cancel()
		if _, err := r.cloud.PublishPresence(pctx, cloudwire.Presence{User: p.User, Device: legacyDevice(from), State: state, At: b.now().UTC()}); err != nil {
			b.countItem(dirLegacyToCloud, kind, resultError)
			b.log.Warn("legacy presence to cloud", "err", err)
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: "cloud did not take the presence"}
		}
	case legacywire.FrameSubscribe:
		s := *f.Subscribe
		if !r.cloudHome(s.User) {
			return notHere(s.User)
		}
		if !r.subscribe(from, s.User, s.Unsubscribe) {
			return refuse(CodeUnavailable, "too many presence subscribers")
		}
		r.watch(from.User)
	default:
		return refuse(legacywire.CodeUnsupported, f.Type+" is not bridged to the cloud")
	}
	b.decide(kind, pathInterop)
	b.countItem(dirLegacyToCloud, kind, resultOK)
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}
