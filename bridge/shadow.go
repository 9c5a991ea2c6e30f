package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// shadowBucket holds the shadow mirror's marks ("mark.<msg id>": a copy
// the bridge wrote into the cloud, which its feed must not deliver;
// "cmp.<source>.<msg id>": the compare result of one source) and each
// user's summary ("user.<hash>", ShadowStats). Entries expire after
// shadowMaxAge without a write: a user whose summary expired is backfilled
// again.
const shadowBucket = "ferry_bridge_shadow"

// shadowMaxAge bounds how long a mark or a summary lives without a write.
const shadowMaxAge = 30 * 24 * time.Hour

// Sources of a legacy copy the shadow compare checks, as label values.
const (
	sourceMirror   = "mirror"
	sourceBackfill = "backfill"
	// sourceDelta is the final delta (shadow_backfill.go): what the
	// mirror and the last backfill missed, written as the user enters
	// ready and again as they flip to the cloud.
	sourceDelta = "delta"
)

// Compare results (label values of gateway_bridge_shadow_compare_total).
const (
	CompareMatch    = "match"
	CompareMismatch = "mismatch"
	CompareMissing  = "missing"
)

// shadowing reports whether u's traffic is mirrored into the cloud: phase
// shadow or ready.
func shadowing(u migrate.User) bool {
	return u.Phase == migrate.PhaseShadow || u.Phase == migrate.PhaseReady
}

// shadow is the bridge's shadow mirror: it publishes mirror routes for
// users in shadow and ready, takes the shadow copies legacy senders send,
// backfills history from the users' devices, writes both into the cloud
// without delivering them anywhere, and compares the two sides.
type shadow struct {
	b       *Bridge
	kv      jetstream.KeyValue
	mirrors *routePublisher
	stats   *shadowStats
	fill    *backfiller
	m       shadowMetrics
	// fault, when set, makes the mirror refuse the copies it fails
	// (SetMirrorFault).
	fault atomic.Pointer[func(msgID string) error]
}

// SetMirrorFault makes the shadow mirror refuse each copy for which f
// returns an error, as if the copy could not be stored (the cloud
// unreachable): a fault hook for tests of what the final delta repairs.
// nil removes it.
func (b *Bridge) SetMirrorFault(f func(msgID string) error) {
	if f == nil {
		b.shadow.fault.Store(nil)
		return
	}
	b.shadow.fault.Store(&f)
}

type shadowMetrics struct {
	compare   *prometheus.CounterVec
	copies    *prometheus.CounterVec
	backfills *prometheus.CounterVec
}

func newShadow(ctx context.Context, b *Bridge) (*shadow, error) {
	kv, err := b.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      shadowBucket,
		Description: "Ferry bridge: shadow copies written to the cloud, compare results, per-user shadow summaries",
		History:     1,
		TTL:         shadowMaxAge,
		Replicas:    b.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: shadow bucket: %w", err)
	}
	s := &shadow{b: b, kv: kv, m: shadowMetrics{
		compare: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_shadow_compare_total",
			Help: "Shadow compares of a legacy copy (mirrored or backfilled) with the cloud copy, by result: match, mismatch, missing (the cloud had no copy).",
		}, []string{"result"}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_shadow_copies_total",
			Help: "Legacy copies the shadow mirror handled, by source (mirror, backfill, delta: the final delta at ready and at the flip) and result (written, repeat, refused, skipped, late: a final-delta copy left out because the flip hold had already drained, error).",
		}, []string{"source", "result"}),
		backfills: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_bridge_shadow_backfills_total",
			Help: "Backfill runs of shadow users' history, by result (complete, unsupported, no_device, error).",
		}, []string{"result"}),
	}}
	for _, r := range []string{CompareMatch, CompareMismatch, CompareMissing} {
		s.m.compare.WithLabelValues(r)
	}
	if err := register(b.cfg.Registerer, "shadow ", s.m.compare, s.m.copies, s.m.backfills); err != nil {
		return nil, err
	}
	if s.stats, err = loadShadowStats(ctx, b.cfg.JS, kv, b.now, b.log); err != nil {
		return nil, err
	}
	s.mirrors = newMirrorPublisher(b)
	s.fill = newBackfiller(s)
	return s, nil
}

// run serves the mirror protocol and runs the mirror publisher, the
// backfill and the summary writer until ctx ends.
func (s *shadow) run(ctx context.Context) error {
	b := s.b
	legacy.HandleMirror(b.cfg.Host, legacy.ChatConfig{
		Authority: b.cfg.Authority.PublicKey(),
		Now:       b.now,
		Logger:    b.log,
		Deliver:   s.take,
	})
	defer b.cfg.Host.RemoveStreamHandler(legacywire.MirrorProtocolID)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.mirrors.run(ctx) })
	g.Go(func() error { return s.stats.run(ctx) })
	g.Go(func() error { return s.fill.run(ctx) })
	return g.Wait()
}

// take is the mirror protocol's Deliver: one shadow copy from the sender's
// device. The ack only tells the sender the mirror took it.
//
// A copy from a cloud-home user's own legacy device (devices.go) to a
// mirrored recipient is that user's message from that device: it is
// written as theirs (Send.Device), so it reaches the cloud live rather
// than at the device's next history read, which then finds it there.
func (s *shadow) take(ctx context.Context, from legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck {
	if f := s.fault.Load(); f != nil {
		if err := (*f)(msg.ID); err != nil {
			s.m.copies.WithLabelValues(sourceMirror, resultError).Inc()
			return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: err.Error()}
		}
	}
	if len(s.shadowUsers(msg)) == 0 {
		s.m.copies.WithLabelValues(sourceMirror, resultRefused).Inc()
		return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: CodeNotHere,
			Error: "neither end of the message is mirrored; look the user up again"}
	}
	device, refusal := s.b.ownDevice(from, msg.ID, kindMirror)
	if refusal != nil {
		s.m.copies.WithLabelValues(sourceMirror, resultRefused).Inc()
		return *refusal
	}
	ctx, cancel := context.WithTimeout(ctx, s.b.cfg.DeliveryTimeout)
	defer cancel()
	err := s.writeFrom(ctx, msg, sourceMirror, device)
	if device != "" {
		s.b.own.items.WithLabelValues(kindMirror, resultOf(err)).Inc()
		if err == nil {
			s.b.devices.seen(from)
		}
	}
	if err != nil {
		s.b.log.Warn("shadow copy", "msg_id", msg.ID, "err", err)
		return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: "the mirror could not store the copy"}
	}
	return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusDelivered}
}

// shadowUsers returns the ends of msg whose traffic is mirrored.
func (s *shadow) shadowUsers(msg legacywire.ChatMessage) []string {
	var out []string
	for _, id := range []string{msg.From, msg.To} {
		if u, ok := s.b.cfg.State.Get(id); ok && shadowing(u) {
			out = append(out, id)
		}
	}
	return out
}

// errCloudHome refuses to shadow-write a message with a cloud-home end: its
// cloud copy is the authoritative one, written by the interop path.
var errCloudHome = errors.New("bridge: a message with a cloud-home end is not shadow-written")

// write puts one legacy copy of msg into the cloud conversation, acting for
// its sender, and compares the cloud copy with it. The message id is the
// idempotency key: the cloud returns the original for a copy it holds, and
// a copy of a source already compared is counted once. The mark written
// first keeps the bridge's own feed from delivering the copy.
//
// The final delta (sourceDelta) writes only what no source has written
// yet, and also for a recipient who just flipped to the cloud (the
// message predates the flip; the cloud takes it once by id), but never
// for a cloud-home sender, for whom the bridge may not act, and not for a
// recipient whose flip hold has already been released (flipDeltaWait):
// the copy would land behind newer messages, so it is left out (result
// "late") and stays a hole rather than a message out of order.
func (s *shadow) write(ctx context.Context, msg legacywire.ChatMessage, source string) error {
	return s.writeFrom(ctx, msg, source, "")
}

// writeFrom is write for a copy whose sender may be a cloud-home user,
// from their legacy device device (checked by the caller with
// CheckOwnDevice): it is written as theirs from that device. With no
// device it is write.
func (s *shadow) writeFrom(ctx context.Context, msg legacywire.ChatMessage, source, device string) error {
	b := s.b
	ends, sources := []string{msg.From, msg.To}, []string{source}
	if device != "" {
		ends = ends[1:] // the sender's home is the cloud: they send from device
	}
	if source == sourceDelta {
		ends, sources = ends[:1], []string{sourceMirror, sourceBackfill, sourceDelta}
		if u, ok := b.cfg.State.Get(msg.To); ok && u.CloudHome() && b.flip.released(msg.To) {
			s.m.copies.WithLabelValues(source, "late").Inc()
			return nil
		}
	}
	for _, id := range ends {
		if u, ok := b.cfg.State.Get(id); ok && u.CloudHome() {
			s.m.copies.WithLabelValues(source, "skipped").Inc()
			return errCloudHome
		}
	}
	cmpKey := "cmp." + source + "." + msg.ID
	for _, src := range sources {
		if _, err := s.kv.Get(ctx, "cmp."+src+"."+msg.ID); err == nil {
			s.m.copies.WithLabelValues(source, "repeat").Inc()
			return nil
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return s.failed(source, fmt.Errorf("read compare mark: %w", err))
		}
	}
	link, err := b.linkAs(ctx, msg.From)
	if err != nil {
		return s.failed(source, err)
	}
	if _, err := s.kv.Put(ctx, "mark."+msg.ID, []byte(source)); err != nil {
		return s.failed(source, fmt.Errorf("mark copy: %w", err))
	}
	ack, err := link.Send(ctx, cloudwire.Send{As: msg.From, Device: device, To: msg.To, MsgID: msg.ID, Text: msg.Text})
	if err != nil {
		return s.failed(source, fmt.Errorf("write copy: %w", err))
	}
	if source == sourceDelta && ack.Duplicate {
		// The cloud had it (the interop path wrote it): nothing was missing.
		if _, err := s.kv.Put(ctx, cmpKey, []byte("repeat")); err != nil {
			return s.failed(source, fmt.Errorf("save delta mark: %w", err))
		}
		s.m.copies.WithLabelValues(source, "repeat").Inc()
		return nil
	}
	result := CompareMissing
	if source != sourceDelta && (ack.Duplicate || source == sourceMirror) {
		// A mirrored copy is read back even when it was new: the compare
		// then checks what the cloud stored of it.
		if result, err = s.compare(ctx, link, msg, ack); err != nil {
			return s.failed(source, err)
		}
	}
	if _, err := s.kv.Put(ctx, cmpKey, []byte(result)); err != nil {
		return s.failed(source, fmt.Errorf("save compare result: %w", err))
	}
	s.m.copies.WithLabelValues(source, "written").Inc()
	s.m.compare.WithLabelValues(result).Inc()
	for _, user := range s.shadowUsers(msg) {
		s.stats.record(user, msg.ID, result)
	}
	return nil
}

func (s *shadow) failed(source string, err error) error {
	s.m.copies.WithLabelValues(source, resultError).Inc()
	return err
}

// historyReader reads one page of a cloud conversation (cloud.Client).
type historyReader interface {
	History(ctx context.Context, h cloudwire.History) (cloudwire.Page, error)
}

// compare reads the cloud copy of msg at the sequence the cloud answered
// and compares it with the legacy copy: sender, recipient and text. A group
// message reads on chat v1/v2 devices as its group's name then its text.
func (s *shadow) compare(ctx context.Context, link historyReader, msg legacywire.ChatMessage, ack cloudwire.Ack) (string, error) {
	if ack.Seq == 0 {
		return CompareMissing, nil
	}
	as := msg.To
	if u, ok := s.b.cfg.State.Get(msg.From); ok && shadowing(u) {
		as = msg.From
	}
	page, err := link.History(ctx, cloudwire.History{As: as, Conv: ack.Conv, After: ack.Seq - 1, Limit: 1})
	if err != nil {
		return "", fmt.Errorf("read cloud copy: %w", err)
	}
	if len(page.Msgs) == 0 || page.Msgs[0].MsgID != msg.ID {
		return CompareMissing, nil
	}
	if sameCopy(page.Msgs[0], ack.Conv, msg) {
		return CompareMatch, nil
	}
	return CompareMismatch, nil
}

// sameCopy reports whether the cloud message c (of conversation conv) and
// the legacy copy l say the same thing.
func sameCopy(c cloudwire.Message, conv string, l legacywire.ChatMessage) bool {
	if c.From != l.From {
		return false
	}
	if cloudwire.IsGroupID(conv) {
		_, text, ok := strings.Cut(l.Text, "] ")
		return ok && strings.HasPrefix(l.Text, "[") && text == c.Text
	}
	return c.To == l.To && c.Text == l.Text
}

// suppress reports whether the cloud event ev is a shadow copy the bridge
// wrote itself: a one-to-one message between two overlay-home users, or
// from a cloud-home user's legacy device, that carries a mark. Such a copy
// is delivered natively on the overlay and must not be carried there
// again. Other cloud senders' messages are never marks: they cost no look.
func (s *shadow) suppress(ctx context.Context, ev cloudwire.Event) (bool, error) {
	if ev.Kind != cloudwire.KindMsg || cloudwire.IsGroupID(ev.Conv) {
		return false, nil
	}
	if u, ok := s.b.cfg.State.Get(ev.From); ok && u.CloudHome() {
		if _, err := peer.Decode(ev.FromDevice); ev.FromDevice == "" || err != nil {
			return false, nil // from a cloud device
		}
	}
	_, err := s.kv.Get(ctx, "mark."+ev.MsgID)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("bridge: read shadow mark of %s: %w", ev.MsgID, err)
}

// newMirrorPublisher returns the publisher of mirror routes: one for each
// user in shadow or ready, withdrawn when the user leaves both.
func newMirrorPublisher(b *Bridge) *routePublisher {
	p := &routePublisher{b: b, kind: legacywire.RouteMirror, wants: shadowing, pending: make(map[string]bool), wake: make(chan struct{}, 1)}
	b.cfg.State.OnChange(func(prev *migrate.User, cur migrate.User) {
		if prev != nil && shadowing(*prev) == shadowing(cur) {
			return
		}
		if prev == nil && !shadowing(cur) {
			return // a new legacy user has no mirror to withdraw
		}
		p.enqueue(cur.ID, shadowing(cur))
	})
	return p
}
