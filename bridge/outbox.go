package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// The outbox's stream and its limits.
const (
	outboxStream         = "FERRY_BRIDGE_OUTBOX"
	outboxSubjectPrefix  = "bridge.outbox."
	outboxDuplicates     = 10 * time.Minute
	outboxTick           = 100 * time.Millisecond
	outboxBackoffMin     = 500 * time.Millisecond
	outboxBackoffMax     = time.Minute
	DefaultOutboxTTL     = 7 * 24 * time.Hour
	outboxRequestTimeout = 5 * time.Second
	// outboxDrains bounds the recipients whose queues drain at once: one
	// slow device holds one of them, not every other recipient's retries.
	outboxDrains = 16
)

// outboxEntry is what the outbox stores for one message. Mirror marks a
// history copy of a message a cloud-home user got (mirror.go), Note a
// cloud system note for a legacy user (notes.go): both are delivered
// without a receipt and expire without a report.
type outboxEntry struct {
	Event    cloudwire.Event `json:"event"`
	QueuedAt time.Time       `json:"queued_at"`
	Mirror   bool            `json:"mirror,omitempty"`
	Note     bool            `json:"note,omitempty"`
}

// queueSpec names one durable per-user queue: the outbox toward legacy
// devices, or the flip hold toward the cloud (flip.go). Both share the
// outbox's code; each has its own stream, gauges and expiry report.
type queueSpec struct {
	stream, prefix, description string
	replicas                    int
	// dir labels what expires, in gateway_bridge_messages_total.
	dir           string
	depth, oldest prometheus.Gauge
	// mirror, when set, delivers entries marked Mirror instead of deliver;
	// mirrorExpired counts those that expire.
	mirror        deliverFunc
	mirrorExpired prometheus.Counter
	// note, when set, delivers entries marked Note; noteExpired counts
	// those that expire.
	note        deliverFunc
	noteExpired prometheus.Counter
	// expired, when set, tells the origin of an expired entry that is not
	// a mirror copy; an error keeps the entry for a later attempt. home
	// reports that the message reached its recipient's home meanwhile (a
	// user who flipped to the cloud has it there): it is counted as an
	// expired mirror copy, not as undeliverable.
	expired func(ctx context.Context, e outboxEntry) (home bool, err error)
}

// outboxSpec is the outbox toward legacy devices.
func outboxSpec(replicas int, m *metrics) queueSpec {
	return queueSpec{
		stream: outboxStream, prefix: outboxSubjectPrefix, replicas: replicas,
		description: "Ferry bridge: cloud messages waiting for a legacy recipient",
		dir:         dirCloudToLegacy, depth: m.outboxDepth, oldest: m.outboxOldest,
	}
}

// deliverFunc makes one attempt to carry a cloud event to the overlay. done
// means the entry can leave the outbox: delivered, or refused for good.
type deliverFunc func(ctx context.Context, ev cloudwire.Event) (done bool, err error)

// outbox holds cloud messages that could not reach a legacy-home recipient
// yet (no live device, device unreachable), one FIFO per recipient in a
// JetStream stream, and retries them with jittered exponential backoff. While
// a recipient has anything queued, newer messages for them queue behind it,
// so a conversation's order holds. What stays longer than ttl is dropped and
// counted as undeliverable.
type outbox struct {
	spec    queueSpec
	stream  jetstream.Stream
	js      jetstream.JetStream
	ttl     time.Duration
	deliver deliverFunc
	now     func() time.Time
	log     *slog.Logger
	m       *metrics

	mu       sync.Mutex
	users    map[string]*outboxQueue
	draining map[string]bool // recipients being drained now; never two drains of one
}

// outboxQueue is the in-memory view of one recipient's queue.
type outboxQueue struct {
	depth   int
	oldest  time.Time // queue time of the head, zero until known
	next    time.Time // next attempt
	backoff time.Duration
}

func newOutbox(ctx context.Context, js jetstream.JetStream, ttl time.Duration, deliver deliverFunc, now func() time.Time, log *slog.Logger, m *metrics) (*outbox, error) {
	return newQueue(ctx, js, outboxSpec(1, m), ttl, deliver, now, log, m)
}

// newQueue opens (or creates) the queue spec names.
func newQueue(ctx context.Context, js jetstream.JetStream, spec queueSpec, ttl time.Duration, deliver deliverFunc, now func() time.Time, log *slog.Logger, m *metrics) (*outbox, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        spec.stream,
		Description: spec.description,
		Subjects:    []string{spec.prefix + "*"},
		Storage:     jetstream.FileStorage,
		Duplicates:  outboxDuplicates,
		AllowDirect: true,
		Replicas:    max(1, spec.replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: %s stream: %w", spec.stream, err)
	}
	o := &outbox{spec: spec, stream: st, js: js, ttl: ttl, deliver: deliver, now: now, log: log, m: m, users: map[string]*outboxQueue{}, draining: map[string]bool{}}
	if err := o.load(ctx); err != nil {
		return nil, err
	}
	spec.depth.Set(0)
	return o, nil
}

// load rebuilds the per-recipient counts from the stream after a restart.
func (o *outbox) load(ctx context.Context) error {
	info, err := o.stream.Info(ctx, jetstream.WithSubjectFilter(o.spec.prefix+">"))
	if err != nil {
		return fmt.Errorf("bridge: outbox state: %w", err)
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	for subj, n := range info.State.Subjects {
		user := strings.TrimPrefix(subj, o.spec.prefix)
		o.users[user] = &outboxQueue{depth: int(n), next: now, backoff: outboxBackoffMin} // #nosec G115 -- a message count, bounded by the stream's limits
	}
	return nil
}

// pending reports whether user has messages waiting.
func (o *outbox) pending(user string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.users[user] != nil
}

// add queues ev behind whatever its recipient already has waiting. The
// message id makes a replay after a restart a no-op.
func (o *outbox) add(ctx context.Context, ev cloudwire.Event) error {
	return o.addEntry(ctx, outboxEntry{Event: ev})
}

// addEntry queues e (its QueuedAt set now) behind whatever e.Event.User
// already has waiting.
func (o *outbox) addEntry(ctx context.Context, e outboxEntry) error {
	ev := e.Event
	now := o.now().UTC()
	e.QueuedAt = now
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(o.spec.prefix + ev.User)
	msg.Data = b
	msg.Header.Set(jetstream.MsgIDHeader, ev.MsgID+":"+ev.User)
	ack, err := o.js.PublishMsg(ctx, msg)
	if err != nil {
		return fmt.Errorf("bridge: queue %s for %s: %w", ev.MsgID, ev.User, err)
	}
	if ack.Duplicate {
		return nil
	}
	o.mu.Lock()
	q := o.users[ev.User]
	if q == nil {
		q = &outboxQueue{oldest: now, next: now.Add(outboxBackoffMin), backoff: outboxBackoffMin}
		o.users[ev.User] = q
	}
	q.depth++
	o.mu.Unlock()
	return nil
}

// wake makes user's queue due now, with its backoff reset: what held it
// back (a flip in progress) has gone.
func (o *outbox) wake(user string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if q := o.users[user]; q != nil {
		q.next = o.now()
		q.backoff = outboxBackoffMin
	}
}

// run retries due recipients until ctx ends, up to outboxDrains of them
// at once (each recipient's queue in order, by one drain at a time); it
// returns once its drains have stopped.
func (o *outbox) run(ctx context.Context) error {
	t := time.NewTicker(outboxTick)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, user := range o.claimDue(outboxDrains) {
			wg.Go(func() {
				defer o.drained(user)
				if err := o.drain(ctx, user); err != nil && ctx.Err() == nil {
					o.log.Warn("outbox", "user", user, "err", err)
				}
			})
		}
		o.updateGauges()
	}
}

// due returns the recipients whose next attempt is due.
func (o *outbox) due() []string {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for u, q := range o.users {
		if !q.next.After(now) {
			out = append(out, u)
		}
	}
	return out
}

// claimDue marks as draining, and returns, the due recipients that are not
// being drained, so that at most limit drain at once.
func (o *outbox) claimDue(limit int) []string {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for u, q := range o.users {
		if len(o.draining) >= limit {
			break
		}
		if !q.next.After(now) && !o.draining[u] {
			o.draining[u] = true
			out = append(out, u)
		}
	}
	return out
}

// drained ends user's drain.
func (o *outbox) drained(user string) {
	o.mu.Lock()
	delete(o.draining, user)
	o.mu.Unlock()
}

// drain delivers user's queue from the head until it is empty or an attempt
// fails, which schedules the next try.
func (o *outbox) drain(ctx context.Context, user string) error {
	subj := o.spec.prefix + user
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, outboxRequestTimeout)
		raw, err := o.stream.GetMsg(rctx, 1, jetstream.WithGetMsgSubject(subj))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// add may have published a new entry since the read: forget
			// the queue only if nothing was counted into it.
			o.mu.Lock()
			q := o.users[user]
			if q == nil || q.depth <= 0 {
				delete(o.users, user)
				o.mu.Unlock()
				return nil
			}
			q.next = o.now()
			o.mu.Unlock()
			return nil
		}
		if err != nil {
			o.retryLater(user)
			return fmt.Errorf("read head: %w", err)
		}
		var e outboxEntry
		if err := json.Unmarshal(raw.Data, &e); err != nil {
			o.log.Error("outbox entry unreadable; dropped", "seq", raw.Sequence, "err", err)
			if err := o.remove(ctx, user, raw.Sequence); err != nil {
				o.retryLater(user)
				return err
			}
			continue
		}
		o.mu.Lock()
		if q := o.users[user]; q != nil {
			q.oldest = e.QueuedAt
		}
		o.mu.Unlock()
		if o.now().Sub(e.QueuedAt) > o.ttl {
			if err := o.expire(ctx, e); err != nil {
				o.retryLater(user)
				return err
			}
			if err := o.remove(ctx, user, raw.Sequence); err != nil {
				o.retryLater(user)
				return err
			}
			continue
		}
		deliver := o.deliver
		switch {
		case e.Mirror && o.spec.mirror != nil:
			deliver = o.spec.mirror
		case e.Note && o.spec.note != nil:
			deliver = o.spec.note
		}
		done, err := deliver(ctx, e.Event)
		if !done {
			o.retryLater(user)
			return err
		}
		if err := o.remove(ctx, user, raw.Sequence); err != nil {
			o.retryLater(user)
			return err
		}
	}
	return nil
}

// expire counts an entry that waited longer than ttl and tells its origin
// (queueSpec.expired); a mirror copy is only counted, its original having
// reached the user's home, and so is a system note, which has no sender.
func (o *outbox) expire(ctx context.Context, e outboxEntry) error {
	if e.Note {
		if o.spec.noteExpired != nil {
			o.spec.noteExpired.Inc()
		}
		return nil
	}
	home := e.Mirror
	if !home && o.spec.expired != nil {
		var err error
		if home, err = o.spec.expired(ctx, e); err != nil {
			return fmt.Errorf("report expired %s: %w", e.Event.MsgID, err)
		}
	}
	if home {
		if o.spec.mirrorExpired != nil {
			o.spec.mirrorExpired.Inc()
		}
		return nil
	}
	o.m.messages.WithLabelValues(o.spec.dir, resultUndeliverable).Inc()
	o.log.Warn("message expired in a queue", "queue", o.spec.stream, "msg_id", e.Event.MsgID, "queued_at", e.QueuedAt)
	return nil
}

// remove deletes a handled entry. If the delete fails, drain schedules the
// recipient for later (not at once, which would redeliver the same head in a
// tight loop); the recipient's duplicate filter drops the repeat.
func (o *outbox) remove(ctx context.Context, user string, seq uint64) error {
	rctx, cancel := context.WithTimeout(ctx, outboxRequestTimeout)
	defer cancel()
	if err := o.stream.DeleteMsg(rctx, seq); err != nil {
		return fmt.Errorf("delete entry %d: %w", seq, err)
	}
	o.mu.Lock()
	if q := o.users[user]; q != nil {
		q.depth--
		q.oldest = time.Time{}
		q.backoff = outboxBackoffMin
	}
	o.mu.Unlock()
	return nil
}

// retryLater pushes user's next attempt out by a jittered, doubling backoff,
// so that many queues do not retry in step.
func (o *outbox) retryLater(user string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	q := o.users[user]
	if q == nil {
		return
	}
	jitter := time.Duration(rand.Int64N(int64(q.backoff)/2 + 1))
	q.next = o.now().Add(q.backoff + jitter)
	q.backoff = min(2*q.backoff, outboxBackoffMax)
}

func (o *outbox) updateGauges() {
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	depth, oldest := 0, time.Duration(0)
	for _, q := range o.users {
		depth += q.depth
		if !q.oldest.IsZero() {
			oldest = max(oldest, now.Sub(q.oldest))
		}
	}
	o.spec.depth.Set(float64(depth))
	if o.spec.oldest != nil {
		o.spec.oldest.Set(oldest.Seconds())
	}
}
