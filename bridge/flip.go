package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// The flip hold's stream: legacy messages for a user whose flip to the
// cloud is under way, one FIFO per recipient (doc.go, "The flip").
const (
	flipStream        = "FERRY_BRIDGE_FLIP"
	flipSubjectPrefix = "bridge.flip."
)

// errFlipping holds a queue back until its user's route is published.
var errFlipping = errors.New("bridge: flip in progress")

// flipTracker knows which users are flipping: their inbound home became
// the cloud (memdb), and either the route record pointing lookups here is
// not published yet, or the cloud has not answered since it was, or
// legacy messages held for them have not drained. The mark is set by the
// route publisher's memdb listener before the route is queued, so no route
// can be published before it.
type flipTracker struct {
	mu    sync.Mutex
	users map[string]*flipState
}

type flipState struct {
	startedAt time.Time // when the user's home became the cloud
	routedAt  time.Time // zero until the route is published
	confirmed bool      // the cloud answered after routedAt
	released  bool      // the hold has started draining to the cloud
}

// flipDeltaWait bounds how long a flip's hold waits for the user's final
// delta (shadow_backfill.go) before it drains anyway. The delta writes the
// copies the mirror missed; written after the hold drains, they would land
// behind newer messages, so once the hold is released the delta leaves
// them out (a hole, as doc.go says, rather than a message out of order).
const flipDeltaWait = 5 * time.Second

func newFlipTracker() *flipTracker { return &flipTracker{users: map[string]*flipState{}} }

func (f *flipTracker) mark(user string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users[user] = &flipState{startedAt: now}
}

// unmark ends user's flip and reports whether one was under way.
func (f *flipTracker) unmark(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.users[user]
	delete(f.users, user)
	return ok
}

// routed records that user's route is out and reports whether user was
// flipping.
func (f *flipTracker) routed(user string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.users[user]
	if ok && st.routedAt.IsZero() {
		st.routedAt = now
	}
	return ok
}

func (f *flipTracker) flipping(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.users[user]
	return ok
}

// blocked reports whether user's held messages must wait: the route is not
// out, or the cloud has not answered since, or the user's final delta is
// still due (deltaDue) and has had less than flipDeltaWait. When it
// answers false for a flipping user, the hold is released for good.
func (f *flipTracker) blocked(user string, now time.Time, deltaDue bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.users[user]
	if !ok {
		return false
	}
	if !st.confirmed || (deltaDue && now.Before(st.startedAt.Add(flipDeltaWait))) {
		return true
	}
	st.released = true
	return false
}

// released reports whether the final delta for user comes too late: the
// user is not flipping (the flip ended, or never started) or the flip's
// hold already drains to the cloud.
func (f *flipTracker) released(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.users[user]
	return !ok || st.released
}

// unconfirmed reports whether some flip waits for the cloud to answer.
func (f *flipTracker) unconfirmed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, st := range f.users {
		if !st.routedAt.IsZero() && !st.confirmed {
			return true
		}
	}
	return false
}

// confirm records that the cloud answered a request made at asked: every
// flip routed by then may drain. It returns those users.
func (f *flipTracker) confirm(asked time.Time) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for u, st := range f.users {
		if !st.confirmed && !st.routedAt.IsZero() && !st.routedAt.After(asked) {
			st.confirmed = true
			out = append(out, u)
		}
	}
	return out
}

// finish ends the confirmed flips whose hold is empty (drained) and whose
// final delta is done (deltaDue false) or has had flipDeltaWait, and
// returns how many it ended.
func (f *flipTracker) finish(now time.Time, drained, deltaDue func(user string) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for u, st := range f.users {
		if st.confirmed && drained(u) && (!now.Before(st.startedAt.Add(flipDeltaWait)) || !deltaDue(u)) {
			delete(f.users, u)
			n++
		}
	}
	return n
}

// flowMetrics are the flip's, the mirror's and the undeliverable reports'
// series. None carries a user or peer id.
type flowMetrics struct {
	flips    *prometheus.CounterVec
	held     prometheus.Gauge
	heldIn   prometheus.Counter
	mirrored *prometheus.CounterVec
	reports  *prometheus.CounterVec
	notes    *prometheus.CounterVec
}

// Flip stages, mirror results and report origins, as label values.
const (
	flipStarted    = "started"
	flipRouted     = "routed"
	flipRolledBack = "rolled_back"

	resultExpired = "expired"
	resultStored  = "stored"

	originCloud  = "cloud"
	originLegacy = "legacy"
)

func newFlowMetrics(reg prometheus.Registerer) (*flowMetrics, error) {
	m := &flowMetrics{
		flips: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_flips_total",
			Help: "Flips of users to the cloud by stage: started (the user's home became the cloud), routed (the route record was published and the hold released), rolled_back (the user left the cloud before the route was published).",
		}, []string{"stage"}),
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_bridge_flip_held_messages",
			Help: "Legacy messages held for users whose flip to the cloud is under way, waiting to be drained in order.",
		}),
		heldIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_bridge_flip_held_total",
			Help: "Legacy messages the bridge held (and acknowledged once durable) because their recipient was flipping to the cloud.",
		}),
		mirrored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_mirrored_total",
			Help: "History copies of messages a user in cloud received, mirrored to their legacy devices, by result (ok, queued, refused, expired).",
		}, []string{"result"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_undeliverable_reports_total",
			Help: "Reports to a message's sender that the bridge dropped it unread after its queue expiry, by origin (cloud, legacy) and result (ok, stored at the supernode, error).",
		}, []string{"origin", "result"}),
		notes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_system_notes_total",
			Help: "System notes of the cloud (a participant moved between the apps) carried to legacy users' devices as messages from ferry-notices, by result (ok, queued, refused, expired).",
		}, []string{"result"}),
	}
	for _, s := range []string{flipStarted, flipRouted, flipRolledBack} {
		m.flips.WithLabelValues(s)
	}
	for _, r := range []string{resultOK, resultQueued, resultRefused, resultExpired} {
		m.mirrored.WithLabelValues(r)
		m.notes.WithLabelValues(r)
	}
	for _, o := range []string{originCloud, originLegacy} {
		for _, r := range []string{resultOK, resultStored, resultError} {
			m.reports.WithLabelValues(o, r)
		}
	}
	if err := register(reg, "flip ", m.flips, m.held, m.heldIn, m.mirrored, m.reports, m.notes); err != nil {
		return nil, err
	}
	return m, nil
}

// holdSpec is the flip hold: legacy messages toward the cloud.
func (b *Bridge) holdSpec() queueSpec {
	return queueSpec{
		stream: flipStream, prefix: flipSubjectPrefix, replicas: b.cfg.Replicas,
		description: "Ferry bridge: legacy messages held while their recipient flips to the cloud",
		dir:         dirLegacyToCloud, depth: b.flow.held,
		expired: b.reportToLegacySender,
	}
}

// flipStart is called from the memdb listener, before the route is
// queued, when user's inbound home becomes the cloud.
func (b *Bridge) flipStart(user string) {
	b.flip.mark(user, b.now())
	b.flow.flips.WithLabelValues(flipStarted).Inc()
}

// flipCancel is called from the memdb listener when user's home is the
// overlay again: a flip still under way ends, and what it held drains to
// the user's legacy devices.
func (b *Bridge) flipCancel(user string) {
	if b.flip.unmark(user) {
		b.flow.flips.WithLabelValues(flipRolledBack).Inc()
	}
	b.hold.wake(user)
}

// flipRouted is called once the route record for a cloud-home user is
// published: lookups now lead here, and the hold drains, in order, once
// the cloud has answered (runFlips).
func (b *Bridge) flipRouted(user string) {
	if b.flip.routed(user, b.now()) {
		b.flow.flips.WithLabelValues(flipRouted).Inc()
	}
}

// flipTick is how often runFlips looks at the flips under way.
const flipTick = 100 * time.Millisecond

// runFlips confirms that the cloud answers for flips whose route is out
// (one probe covers every flip routed before it was sent), wakes their
// holds, and ends the flips whose hold has drained, until ctx ends.
func (b *Bridge) runFlips(ctx context.Context) error {
	t := time.NewTicker(flipTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if b.flip.unconfirmed() {
			asked := b.now()
			if b.cloudAnswers(ctx) {
				for _, u := range b.flip.confirm(asked) {
					b.hold.wake(u)
				}
			}
		}
		b.flip.finish(b.now(), func(u string) bool { return !b.hold.pending(u) }, b.shadow.fill.due)
	}
}

// cloudAnswers reports whether the cloud answers a request on the link
// now: any answer, a refusal included, shows it is reachable.
func (b *Bridge) cloudAnswers(ctx context.Context) bool {
	link := b.currentLink()
	if link == nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	_, err := link.History(pctx, cloudwire.History{As: User, Conv: cloudwire.DirectConversationID(User, User), Limit: 1})
	var se *cloud.ServerError
	return err == nil || errors.As(err, &se)
}

// holding reports whether a legacy message to user must queue in the flip
// hold: the user is flipping, or messages held for them have not drained
// yet (a newer message never overtakes them).
func (b *Bridge) holding(user string) bool {
	return b.flip.flipping(user) || b.hold.pending(user)
}

// holdFromLegacy queues msg in its recipient's flip hold and acknowledges
// the sender once the hold has it durably.
func (b *Bridge) holdFromLegacy(ctx context.Context, msg legacywire.ChatMessage, device string) legacywire.ChatAck {
	ev := cloudwire.Event{
		Kind: cloudwire.KindMsg, User: msg.To, To: msg.To, From: msg.From, MsgID: msg.ID, Text: msg.Text, At: msg.SentAt,
		Conv: cloudwire.DirectConversationID(msg.From, msg.To), FromDevice: device, // a cloud-home sender's own device (devices.go)
	}
	if err := b.hold.add(ctx, ev); err != nil {
		b.log.Warn("flip hold", "msg_id", msg.ID, "err", err)
		b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultError).Inc()
		b.countItem(dirLegacyToCloud, kindMsg, resultError)
		return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: "could not hold the message"}
	}
	b.flow.heldIn.Inc()
	b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultQueued).Inc()
	b.countItem(dirLegacyToCloud, kindMsg, resultQueued)
	return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusDelivered}
}

// drainHeld is the flip hold's delivery: nothing while the user is still
// flipping; to the cloud once the route is out and the link is up; to the
// user's legacy devices if the user went back to the overlay meanwhile.
func (b *Bridge) drainHeld(ctx context.Context, ev cloudwire.Event) (done bool, err error) {
	if b.flip.blocked(ev.User, b.now(), b.shadow.fill.due(ev.User)) {
		return false, errFlipping
	}
	if u, ok := b.cfg.State.Get(ev.User); !ok || !u.CloudHome() {
		msg := legacywire.ChatMessage{ID: ev.MsgID, From: ev.From, To: ev.User, Text: ev.Text, SentAt: ev.At}
		ack, err := b.deliverOnce(ctx, msg)
		if err != nil {
			return false, err
		}
		if !ack.Delivered() {
			b.log.Warn("held message refused by the legacy device", "msg_id", ev.MsgID, "code", ack.Code)
		}
		return true, nil
	}
	link, err := b.linkAs(ctx, ev.From)
	if err != nil {
		if refusedForGood(err) {
			b.log.Warn("held message refused by the cloud", "msg_id", ev.MsgID, "err", err)
			b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultRefused).Inc()
			b.countItem(dirLegacyToCloud, kindMsg, resultRefused)
			return true, nil
		}
		return false, err
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	if _, err := link.Send(sctx, cloudwire.Send{As: ev.From, Device: ev.FromDevice, To: ev.User, MsgID: ev.MsgID, Text: ev.Text}); err != nil {
		if refusedForGood(err) {
			b.log.Warn("held message refused by the cloud", "msg_id", ev.MsgID, "err", err)
			b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultRefused).Inc()
			b.countItem(dirLegacyToCloud, kindMsg, resultRefused)
			return true, nil
		}
		return false, fmt.Errorf("held %s to the cloud: %w", ev.MsgID, err)
	}
	b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultOK).Inc()
	b.countItem(dirLegacyToCloud, kindMsg, resultOK)
	if ev.FromDevice != "" {
		b.own.items.WithLabelValues(kindMsg, resultOK).Inc()
	}
	b.decide(kindMsg, pathInterop)
	return true, nil
}
