package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Audit stream defaults.
const (
	DefaultAuditStream = "FERRY_AUDIT"
	// auditSubjectPrefix starts every audit subject:
	// ferry.audit.<campaign token>.<user token>, where a campaign token is
	// "c_" + name, a user token "u_" + id, and either is "none" when the
	// event has no campaign or user. Consumers filter on these tokens.
	auditSubjectPrefix = "ferry.audit"
	noToken            = "none"
	// DefaultAuditMaxAge is how long audit events are kept.
	DefaultAuditMaxAge = 400 * 24 * time.Hour
	// MaxAuditQuery bounds the events one Query returns.
	MaxAuditQuery = 10000
)

// hdrPrev marks an intent: an audit event TransitionManyAudited writes
// before a compare-and-set. Its value is the Audit field of the record the
// compare-and-set replaces (the previous link of the user's chain).
const hdrPrev = "Ferry-Audit-Prev"

// Audit is the append-only decision log in a JetStream stream. Record waits
// for every event's acknowledgement: with the embedded engine an
// acknowledged event survives kill -9 (see gateway/engine).
//
// A transition the store makes with its audit event
// (Store.TransitionManyAudited) is written as an intent: the event first,
// acknowledged, then the user's compare-and-set, whose record carries the
// event's stream sequence in migrate.User.Audit, while the event carries
// (in a header) the Audit of the record it replaces. So a committed
// transition always has its event (the event was durable before the write
// could land), and the events whose writes landed form, per user, a chain
// from the current record's Audit back through the events' headers:
// every write of a user either sets Audit to its own intent, whose header
// names the Audit it replaced, or keeps Audit as it was. Query keeps an
// intent only when it is on its user's chain, and drops the others: their
// compare-and-set lost, failed, or never went out because the writer died.
// This was chosen over writing the event after the compare-and-set and
// reconciling on start, because with one revision kept per key a record
// overwritten before the reconciliation would take its transition's only
// trace with it; it costs no extra write, and reading, not writing, pays
// for the check (one record read per user in the answer).
type Audit struct {
	js     jetstream.JetStream
	stream string
	// bucket is the users bucket whose records tell which intents landed.
	bucket string
}

// NewAudit creates or updates the audit stream (stream "" means
// DefaultAuditStream).
func NewAudit(ctx context.Context, js jetstream.JetStream, stream string, replicas int) (*Audit, error) {
	if stream == "" {
		stream = DefaultAuditStream
	}
	if replicas == 0 {
		replicas = DefaultReplicas
	}
	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        stream,
		Description: "Ferry audit log: every migration decision (JSON of migrate.AuditEvent)",
		Subjects:    []string{auditSubjectPrefix + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		MaxAge:      DefaultAuditMaxAge,
	})
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream %s: %w", stream, err)
	}
	return &Audit{js: js, stream: stream, bucket: DefaultBucket}, nil
}

func auditSubject(campaign, user string) string {
	c, u := noToken, noToken
	if campaign != "" {
		c = "c_" + campaign
	}
	if user != "" {
		u = "u_" + user
	}
	return auditSubjectPrefix + "." + c + "." + u
}

// encodeEvent checks ev's names, brings its time to the stored resolution
// and returns its subject and JSON.
func encodeEvent(ev migrate.AuditEvent) (subject string, data []byte, err error) {
	if ev.Campaign != "" {
		if err := migrate.CheckCampaignName(ev.Campaign); err != nil {
			return "", nil, fmt.Errorf("migratestore: audit: %w", err)
		}
	}
	if ev.User != "" {
		if err := migrate.CheckUserID(ev.User); err != nil {
			return "", nil, fmt.Errorf("migratestore: audit: %w", err)
		}
	}
	ev.At = ev.At.UTC().Truncate(time.Millisecond)
	data, err = json.Marshal(ev)
	if err != nil {
		return "", nil, fmt.Errorf("migratestore: encode audit event: %w", err)
	}
	return auditSubject(ev.Campaign, ev.User), data, nil
}

// intentMsg is the intent of a compare-and-set of cur's user: ev, from
// cur's phase, with cur.Audit as its previous link. It carries no message
// id for the stream's duplicate window: a resent intent is one more intent,
// and of two intents over one revision at most one can be on the chain
// (only one write lands over a revision), so the chain, not the window,
// keeps each transition to one event.
func intentMsg(ev migrate.AuditEvent, cur migrate.User) (*nats.Msg, error) {
	ev.User = cur.ID
	ev.From = string(cur.Phase)
	subject, data, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	h := nats.Header{hdrPrev: []string{strconv.FormatUint(cur.Audit, 10)}}
	return &nats.Msg{Subject: subject, Data: data, Header: h}, nil
}

// intend writes the intent of one compare-and-set (see intentMsg) and
// returns its sequence, for the record's Audit.
func (a *Audit) intend(ctx context.Context, ev *migrate.AuditEvent, cur migrate.User) (uint64, error) {
	msg, err := intentMsg(*ev, cur)
	if err != nil {
		return 0, err
	}
	ack, err := a.js.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("migratestore: audit intent: %w", err)
	}
	return ack.Sequence, nil
}

// Record appends events, publishing them together and waiting for every
// acknowledgement (one grouped round of fsyncs rather than one per event).
// Up to batchWindow publishes are in flight; the next goes out as soon as
// the oldest is acknowledged.
func (a *Audit) Record(ctx context.Context, events ...migrate.AuditEvent) error {
	if len(events) == 0 {
		return nil
	}
	futures := make([]jetstream.PubAckFuture, 0, min(len(events), batchWindow))
	var errs []error
	head := 0
	waitOldest := func() error {
		select {
		case <-futures[head].Ok():
		case err := <-futures[head].Err():
			errs = append(errs, err)
		case <-ctx.Done():
			return fmt.Errorf("migratestore: audit: %w", ctx.Err())
		}
		futures[head] = nil
		head++
		return nil
	}
	for _, ev := range events {
		if len(futures)-head == batchWindow {
			// Stay under the client's limit on pending publishes.
			if err := waitOldest(); err != nil {
				return err
			}
		}
		if head == len(futures) && head > 0 {
			futures, head = futures[:0], 0
		}
		subject, data, err := encodeEvent(ev)
		if err != nil {
			return err
		}
		f, err := a.js.PublishAsync(subject, data)
		if err != nil {
			return fmt.Errorf("migratestore: publish audit event: %w", err)
		}
		futures = append(futures, f)
	}
	for head < len(futures) {
		if err := waitOldest(); err != nil {
			return err
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("migratestore: audit: %d of %d events not stored: %w", len(errs), len(events), errors.Join(errs...))
	}
	return nil
}

// AuditQuery selects audit events; empty fields select everything.
type AuditQuery struct {
	Campaign string
	User     string
	Since    time.Time
	// Limit caps the events returned (0 or more than MaxAuditQuery:
	// MaxAuditQuery); the oldest matching events come first.
	Limit int
}

// Query returns the matching events in the order they were recorded.
func (a *Audit) Query(ctx context.Context, q AuditQuery) ([]migrate.AuditEvent, error) {
	if q.Campaign != "" {
		if err := migrate.CheckCampaignName(q.Campaign); err != nil {
			return nil, err
		}
	}
	if q.User != "" {
		if err := migrate.CheckUserID(q.User); err != nil {
			return nil, err
		}
	}
	if q.Limit <= 0 || q.Limit > MaxAuditQuery {
		q.Limit = MaxAuditQuery
	}
	c, u := "*", "*"
	if q.Campaign != "" {
		c = "c_" + q.Campaign
	}
	if q.User != "" {
		u = "u_" + q.User
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{auditSubjectPrefix + "." + c + "." + u}}
	if !q.Since.IsZero() {
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		since := q.Since
		cfg.OptStartTime = &since
	}
	s, err := a.js.Stream(ctx, a.stream)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream: %w", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit stream: %w", err)
	}
	out := []migrate.AuditEvent{}
	var intents []intentRef
	if info.State.Msgs == 0 {
		return out, nil
	}
	cons, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit consumer: %w", err)
	}
	// An ordered consumer says how many messages are left after each one;
	// a filter that matches nothing delivers nothing, so ask first.
	cinfo, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("migratestore: audit consumer: %w", err)
	}
	if cinfo.NumPending == 0 {
		return out, nil
	}
	// Ask for no more than are left: a fetch for more waits its whole
	// MaxWait for messages that will not come.
	pending := cinfo.NumPending
	for len(out) < q.Limit && pending > 0 {
		want := min(uint64(q.Limit-len(out)), 1000, pending)                       // #nosec G115 -- Limit is positive
		batch, err := cons.Fetch(int(want), jetstream.FetchMaxWait(5*time.Second)) // #nosec G115 -- at most 1000
		if err != nil {
			return nil, fmt.Errorf("migratestore: audit fetch: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var ev migrate.AuditEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				return nil, fmt.Errorf("migratestore: decode audit event: %w", err)
			}
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("migratestore: audit event metadata: %w", err)
			}
			pending = md.NumPending
			if h := m.Headers().Get(hdrPrev); h != "" {
				prev, err := strconv.ParseUint(h, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("migratestore: audit event %d: header %s: %w", md.Sequence.Stream, hdrPrev, err)
				}
				intents = append(intents, intentRef{at: len(out), seq: md.Sequence.Stream, prev: prev})
			}
			out = append(out, ev)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("migratestore: audit fetch: %w", err)
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	return a.landed(ctx, s, out, intents)
}

// intentRef is an intent among Query's results: out[at], the event at
// stream sequence seq, whose previous link is prev.
type intentRef struct {
	at        int
	seq, prev uint64
}

// landed returns out without the intents whose compare-and-set never
// landed: those not on their user's chain (see Audit), which it follows
// from the user's current record back through the intents' previous links,
// reading the links not among out from the stream.
func (a *Audit) landed(ctx context.Context, s jetstream.Stream, out []migrate.AuditEvent, intents []intentRef) ([]migrate.AuditEvent, error) {
	if len(intents) == 0 {
		return out, nil
	}
	kv, err := a.js.KeyValue(ctx, a.bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("migratestore: audit: users bucket: %w", err)
	}
	prevOf := make(map[uint64]uint64, len(intents))
	oldest := map[string]uint64{} // per user, the oldest intent to judge
	for _, r := range intents {
		prevOf[r.seq] = r.prev
		u := out[r.at].User
		if o, ok := oldest[u]; !ok || r.seq < o {
			oldest[u] = r.seq
		}
	}
	heads := map[string]uint64{} // no record, so no transition of it stands
	if kv != nil {
		if heads, err = chainHeads(ctx, kv, oldest); err != nil {
			return nil, err
		}
	}
	onChain := make(map[uint64]bool, len(intents))
	for user, head := range heads {
		floor := oldest[user]
		for link := head; link >= floor && link != 0; {
			onChain[link] = true
			prev, ok := prevOf[link]
			if !ok {
				if prev, ok, err = a.prevLink(ctx, s, link); err != nil {
					return nil, err
				}
				if !ok {
					break
				}
			}
			if prev >= link {
				return nil, fmt.Errorf("migratestore: audit event %d: previous link %d is not older", link, prev)
			}
			link = prev
		}
	}
	kept := out[:0]
	next := 0
	for i, ev := range out {
		if next < len(intents) && intents[next].at == i {
			r := intents[next]
			next++
			if !onChain[r.seq] {
				continue
			}
		}
		kept = append(kept, ev)
	}
	return kept, nil
}

// chainReaders is how many users' records landed reads at once.
const chainReaders = 16

// chainHeads reads the current record of every user in users (the keys) and
// returns its Audit, the head of the user's chain; a user without a record
// is left out. It reads chainReaders records at a time: a campaign's
// answer may name thousands of users, each one read.
func chainHeads(ctx context.Context, kv jetstream.KeyValue, users map[string]uint64) (map[string]uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	todo := make(chan string)
	var (
		mu    sync.Mutex
		heads = make(map[string]uint64, len(users))
		errs  []error
		wg    sync.WaitGroup
	)
	for range min(chainReaders, len(users)) {
		wg.Go(func() {
			for user := range todo {
				cur, found, err := loadFrom(ctx, kv, user)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err)
					cancel()
				case found:
					heads[user] = cur.Audit
				}
				mu.Unlock()
			}
		})
	}
feed:
	for user := range users {
		select {
		case todo <- user:
		case <-ctx.Done():
			break feed
		}
	}
	close(todo)
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("migratestore: audit: %w", err)
	}
	return heads, nil
}

// prevLink reads the previous link of the intent at seq from the stream; ok
// is false when that message is gone (aged out) or is not an intent.
func (a *Audit) prevLink(ctx context.Context, s jetstream.Stream, seq uint64) (prev uint64, ok bool, err error) {
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("migratestore: audit event %d: %w", seq, err)
	}
	h := m.Header.Get(hdrPrev)
	if h == "" {
		return 0, false, nil
	}
	prev, err = strconv.ParseUint(h, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("migratestore: audit event %d: header %s: %w", seq, hdrPrev, err)
	}
	return prev, true, nil
}
