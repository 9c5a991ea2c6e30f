package migratestore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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

// maxChainReads bounds the audit events a query by user reads from the
// stream one at a time while it follows chains back (userChain): one read
// per link that is not among the events the query fetched anyway (the
// batch intents of the user's moves, which are not on the user's
// subject). The user's chain has no lower bound but its start, so without
// it a user with thousands of batch moves made one query read thousands
// of messages. Past it, Query fails with ErrChainTooLong. Queries by
// campaign or of everything are not capped: their walks end at the oldest
// event they judge. A var so that tests can lower it.
var maxChainReads = 10000

// chainWalk counts one query's reads of chain links against
// maxChainReads; a nil walk is not capped.
type chainWalk struct{ reads int }

// read takes one read of link seq on owner's chain from the budget, or
// returns ErrChainTooLong when it is spent.
func (w *chainWalk) read(owner string, seq uint64) error {
	if w == nil {
		return nil
	}
	if w.reads >= maxChainReads {
		return fmt.Errorf("%w: chain of %s (%d links read, still at event %d); narrow the query with since", ErrChainTooLong, owner, w.reads, seq)
	}
	w.reads++
	return nil
}

// notOlder is the error of a chain whose link seq names prev, which is
// not older, as previous link: a corrupt or crafted intent, which would
// otherwise make the walk loop or go forward.
func notOlder(owner string, seq, prev uint64) error {
	return fmt.Errorf("migratestore: audit event %d on the chain of %s: previous link %d is not older", seq, owner, prev)
}

// hdrPrev marks an intent: an audit event TransitionManyAudited writes
// before a compare-and-set. Its value is the Audit field of the record the
// compare-and-set replaces (the previous link of the user's chain).
const hdrPrev = "Ferry-Audit-Prev"

// hdrChain names the chain of an intent whose record is not its user's:
// chainCampaign for a change stored on the campaign record (its state,
// step, exemptions, opt-ins), whose record carries the intent's sequence in
// migrate.Campaign.Audit; chainFreeze for a change of the global freeze,
// whose record carries it in Freeze.Audit; policyChain(platform) for a
// change of a platform's client-version policy, whose record (in the
// policy bucket) carries it in migrate.VersionPolicy.Audit;
// revocationChain(peer) for a legacy device's revocation, whose record (in
// the revocation bucket) carries it in Revocation.Audit. An intent without
// it is on its user's chain.
const hdrChain = "Ferry-Audit-Chain"

// Values of hdrChain: an intent on its campaign's chain, or on the
// freeze's; an intent on a policy's chain has chainPolicy + "." +
// platform, on a revocation's chainRevocation + "." + peer, which is also
// the chain's owner (see chainOwner).
const (
	chainCampaign   = "campaign"
	chainFreeze     = "freeze"
	chainPolicy     = "policy"
	chainRevocation = "revocation"
)

// policyChain is the hdrChain value, and the chain owner, of platform's
// version policy: "policy.<platform>", which no user id (no dot), campaign
// key ("c.") or the freeze's key can be.
func policyChain(platform string) string { return chainPolicy + "." + platform }

// revocationChain is the hdrChain value, and the chain owner, of the
// revocation of the legacy device peer: "revocation.<peer>".
func revocationChain(peer string) string { return chainRevocation + "." + peer }

// hdrBatch marks a batch intent: one message holding the intents of many
// compare-and-sets (TransitionManyAudited writes one per chunk of moves
// instead of one per move). Its value is the batch format's version,
// batchIntentVersion; its body is a batchIntent, and its subject
// ferry.audit.<campaign token>.batch. Each user's record then carries the
// batch's sequence in Audit: a chain link is a (user, sequence) pair, and
// the batch names each user's previous link. Intents without this header
// (one message per move, the format before it) are read as before.
const hdrBatch = "Ferry-Audit-Batch"

// batchIntentVersion is the version of the batch intent's body.
//
//	1: {"users":[id...],"prev":[seq...],"events":[event...]}, one entry per
//	   move, users distinct.
const batchIntentVersion = "1"

// batchToken is the last subject token of a batch intent, in the place of
// a user token ("u_" + id or "none"), which it cannot be mistaken for.
const batchToken = "batch"

// batchIntent is the body of a batch intent: Users[i] is moved with the
// event Events[i] (whose User and From are set), over a record whose
// Audit was Prev[i].
type batchIntent struct {
	Users  []string          `json:"users"`
	Prev   []uint64          `json:"prev"`
	Events []json.RawMessage `json:"events"`
}

// decodeBatchIntent decodes a batch intent's body, refusing one whose
// lists differ in length or name a user twice, or whose events are not
// their users' (so that a link can be judged by user and sequence).
func decodeBatchIntent(data []byte) (batchIntent, []migrate.AuditEvent, error) {
	var b batchIntent
	if err := json.Unmarshal(data, &b); err != nil {
		return batchIntent{}, nil, fmt.Errorf("decode batch intent: %w", err)
	}
	if len(b.Prev) != len(b.Users) || len(b.Events) != len(b.Users) {
		return batchIntent{}, nil, fmt.Errorf("decode batch intent: %d users, %d links, %d events", len(b.Users), len(b.Prev), len(b.Events))
	}
	seen := make(map[string]bool, len(b.Users))
	evs := make([]migrate.AuditEvent, len(b.Users))
	for i, u := range b.Users {
		if seen[u] {
			return batchIntent{}, nil, fmt.Errorf("decode batch intent: user %q twice", u)
		}
		seen[u] = true
		if err := json.Unmarshal(b.Events[i], &evs[i]); err != nil {
			return batchIntent{}, nil, fmt.Errorf("decode batch intent: event %d: %w", i, err)
		}
		if evs[i].User != u {
			return batchIntent{}, nil, fmt.Errorf("decode batch intent: event %d names user %q, not %q", i, evs[i].User, u)
		}
	}
	return b, evs, nil
}

// batchLink returns user's event in the batch intent data (raw JSON) and
// its previous link, ok false when the batch does not name the user.
func batchLink(data []byte, user string) (event json.RawMessage, prev uint64, ok bool, err error) {
	var b struct {
		Users  []string          `json:"users"`
		Prev   []uint64          `json:"prev"`
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, 0, false, fmt.Errorf("decode batch intent: %w", err)
	}
	if len(b.Prev) != len(b.Users) || len(b.Events) != len(b.Users) {
		return nil, 0, false, fmt.Errorf("decode batch intent: %d users, %d links, %d events", len(b.Users), len(b.Prev), len(b.Events))
	}
	i := slices.Index(b.Users, user)
	if i < 0 {
		return nil, 0, false, nil
	}
	return b.Events[i], b.Prev[i], true, nil
}

// batchIntentMsg builds the batch intent of the moves whose encoded events
// (encodeEvent, with User and From set) are events, of users over records
// whose Audit were prev, all of campaign.
func batchIntentMsg(campaign string, users []string, prev []uint64, events []json.RawMessage) (*nats.Msg, error) {
	data, err := json.Marshal(batchIntent{Users: users, Prev: prev, Events: events})
	if err != nil {
		return nil, fmt.Errorf("migratestore: encode batch intent: %w", err)
	}
	c := noToken
	if campaign != "" {
		c = "c_" + campaign
	}
	h := nats.Header{hdrBatch: []string{batchIntentVersion}}
	return &nats.Msg{Subject: auditSubjectPrefix + "." + c + "." + batchToken, Data: data, Header: h}, nil
}

// Audit is the append-only decision log in a JetStream stream. Record waits
// for every event's acknowledgement: with the embedded engine an
// acknowledged event survives kill -9 (see gateway/engine).
//
// A transition the store makes with its audit event
// (Store.TransitionManyAudited, Store.TransitionAudited) is written as an
// intent: the event first, acknowledged, then the user's compare-and-set,
// whose record carries the event's stream sequence in migrate.User.Audit,
// while the event carries (in a header, or per user in a batch intent,
// see hdrBatch) the Audit of the record it replaces. So a committed
// transition always has its event (the event was durable before the write
// could land), and the events whose writes landed form, per user, a chain
// from the current record's Audit back through the events' headers:
// every write of a user either sets Audit to its own intent, whose header
// names the Audit it replaced, or keeps Audit as it was. Query keeps an
// intent only when it is on its user's chain, and drops the others: their
// compare-and-set lost, failed, or never went out because the writer died.
// A batch intent is not on any user's subject: a query by user finds the
// batches on the user's chain by following it, one message read per link.
// This was chosen over writing the event after the compare-and-set and
// reconciling on start, because with one revision kept per key a record
// overwritten before the reconciliation would take its transition's only
// trace with it; it costs no extra write, and reading, not writing, pays
// for the check (one record read per user in the answer).
type Audit struct {
	js     jetstream.JetStream
	st     jetstream.Stream // the stream's handle, for reads by sequence
	stream string
	// bucket is the users bucket whose records tell which intents landed.
	bucket string
	// campaigns is the campaign bucket, whose records do the same for
	// the intents on campaigns' chains and the freeze's.
	campaigns string
	// policies and revocations are the policy and revocation buckets,
	// whose records do the same for the intents on version policies' and
	// revocations' chains.
	policies, revocations string
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
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
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
	return &Audit{js: js, st: st, stream: stream, bucket: DefaultBucket, campaigns: DefaultCampaignBucket, policies: DefaultPolicyBucket, revocations: DefaultRevocationBucket}, nil
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
// cur's phase, with cur.Audit as its previous link (see chainIntentMsg).
func intentMsg(ev migrate.AuditEvent, cur migrate.User) (*nats.Msg, error) {
	ev.User = cur.ID
	ev.From = string(cur.Phase)
	return chainIntentMsg(ev, cur.Audit, "")
}

// chainIntentMsg is the intent ev with prev as its previous link, on the
// chain named by chain (hdrChain's value; "" for the user's). It carries no message
// id for the stream's duplicate window: a resent intent is one more intent,
// and of two intents over one revision at most one can be on the chain
// (only one write lands over a revision), so the chain, not the window,
// keeps each transition to one event.
func chainIntentMsg(ev migrate.AuditEvent, prev uint64, chain string) (*nats.Msg, error) {
	subject, data, err := encodeEvent(ev)
	if err != nil {
		return nil, err
	}
	h := nats.Header{hdrPrev: []string{strconv.FormatUint(prev, 10)}}
	if chain != "" {
		h.Set(hdrChain, chain)
	}
	return &nats.Msg{Subject: subject, Data: data, Header: h}, nil
}

// intend writes the intent of one compare-and-set (see intentMsg) and
// returns its sequence, for the record's Audit.
func (a *Audit) intend(ctx context.Context, ev *migrate.AuditEvent, cur migrate.User) (uint64, error) {
	msg, err := intentMsg(*ev, cur)
	if err != nil {
		return 0, err
	}
	return a.publishIntent(ctx, msg)
}

// intendOn writes ev as the intent of a compare-and-set of a record that
// is not a user's (a campaign's, the freeze's or a version policy's: chain
// is hdrChain's value) whose Audit is prev, and returns its sequence, for
// the record's Audit.
func (a *Audit) intendOn(ctx context.Context, chain string, ev migrate.AuditEvent, prev uint64) (uint64, error) {
	msg, err := chainIntentMsg(ev, prev, chain)
	if err != nil {
		return 0, err
	}
	return a.publishIntent(ctx, msg)
}

// recentOps is how many of a record's latest changes appliedBefore checks
// an operation id against.
const recentOps = 8

// appliedBefore reports whether opID is the operation of one of the
// recentOps latest changes on the chain whose head is head (a record's
// Audit): a command retried late, after another change of the record,
// which must not apply a second time. user names the chain's owner when
// it is a user's, whose links may be batch intents (see hdrBatch); "" for
// the other chains. A chain whose events have aged out of the log ends
// there.
func (a *Audit) appliedBefore(ctx context.Context, head uint64, opID, user string) (bool, error) {
	if head == 0 || opID == "" {
		return false, nil
	}
	for l, n := head, 0; l != 0 && n < recentOps; n++ {
		event, prev, ok, err := a.readLink(ctx, a.st, l, user)
		if err != nil {
			return false, err
		}
		var ev struct {
			OpID string `json:"op_id"`
		}
		if event != nil {
			if err := json.Unmarshal(event, &ev); err != nil {
				return false, fmt.Errorf("migratestore: audit event %d: %w", l, err)
			}
		}
		if ev.OpID == opID {
			return true, nil
		}
		if !ok || prev >= l {
			return false, nil // the chain's start, or not a chain link
		}
		l = prev
	}
	return false, nil
}

// publishIntent writes an intent, waiting for its acknowledgement, and
// returns its sequence.
func (a *Audit) publishIntent(ctx context.Context, msg *nats.Msg) (uint64, error) {
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
//
// To tell which intents landed, it follows the chains of their owners
// back from the owners' records. A query by user reads at most
// maxChainReads links that are not among the matching events; one that
// needs more fails with ErrChainTooLong (nothing is returned rather than
// an answer that cannot tell landed changes from lost ones), and a
// narrower Since shortens the walk. A link that is not older than the one
// naming it fails the query with an error naming the chain and both
// events.
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
	// A query only reads, so one that meets a cluster changing leaders
	// (a server lost, a consumer placed on it) is simply asked again. A
	// request lost with a leader must fail in the client's API timeout, not
	// wait out ctx's deadline, so each attempt runs without that deadline
	// (but ends when ctx does).
	for attempt := 1; ; attempt++ {
		actx, done := withoutDeadline(ctx)
		evs, err := a.query(actx, q)
		done()
		if err == nil || ctx.Err() != nil || attempt == queryAttempts || !transient(err) {
			return evs, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(time.Duration(attempt) * queryRetryPause):
		}
	}
}

// withoutDeadline returns a context that ends when ctx does but has no
// deadline, so that the jetstream client puts its own API timeout on each
// request made with it.
func withoutDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	return c, func() { stop(); cancel() }
}

// A query that meets a transient cluster error (see transient) is made
// queryAttempts times in all, the k-th retry after k×queryRetryPause: about
// 5 s of pauses, longer than a JetStream leader election takes.
const (
	queryAttempts   = 7
	queryRetryPause = 250 * time.Millisecond
)

// transient reports whether err is one a JetStream cluster gives while it
// elects a new leader for a stream, a consumer or its meta layer: nobody
// answers a request yet, a request times out, a pull gets no heartbeat,
// or the API says it is unavailable (503).
func transient(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &api) && api.Code == 503
}

// query is one attempt of Query, on a q already checked.
func (a *Audit) query(ctx context.Context, q AuditQuery) ([]migrate.AuditEvent, error) {
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
	var seqs []uint64 // the stream sequence of each of out
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
		if q.User != "" {
			return a.userChain(ctx, s, &chainWalk{}, q, out, seqs, intents)
		}
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
			md, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("migratestore: audit event metadata: %w", err)
			}
			pending = md.NumPending
			if v := m.Headers().Get(hdrBatch); v != "" {
				b, evs, err := readBatchIntent(md.Sequence.Stream, v, m.Data())
				if err != nil {
					return nil, err
				}
				for i, ev := range evs {
					intents = append(intents, intentRef{at: len(out), seq: md.Sequence.Stream, prev: b.Prev[i], owner: ev.User})
					out = append(out, ev)
					seqs = append(seqs, md.Sequence.Stream)
				}
				continue
			}
			var ev migrate.AuditEvent
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				return nil, fmt.Errorf("migratestore: decode audit event: %w", err)
			}
			if h := m.Headers().Get(hdrPrev); h != "" {
				prev, err := strconv.ParseUint(h, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("migratestore: audit event %d: header %s: %w", md.Sequence.Stream, hdrPrev, err)
				}
				intents = append(intents, intentRef{at: len(out), seq: md.Sequence.Stream, prev: prev, owner: chainOwner(ev, m.Headers().Get(hdrChain))})
			}
			out = append(out, ev)
			seqs = append(seqs, md.Sequence.Stream)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, fmt.Errorf("migratestore: audit fetch: %w", err)
		}
		if n == 0 || pending == 0 {
			break
		}
	}
	if q.User != "" {
		return a.userChain(ctx, s, &chainWalk{}, q, out, seqs, intents)
	}
	out, err = a.landed(ctx, s, out, intents)
	if err != nil {
		return nil, err
	}
	return out[:min(len(out), q.Limit)], nil
}

// readBatchIntent decodes the batch intent at stream sequence seq, whose
// hdrBatch header is version.
func readBatchIntent(seq uint64, version string, data []byte) (batchIntent, []migrate.AuditEvent, error) {
	if version != batchIntentVersion {
		return batchIntent{}, nil, fmt.Errorf("migratestore: audit event %d: batch intent version %q unknown", seq, version)
	}
	b, evs, err := decodeBatchIntent(data)
	if err != nil {
		return batchIntent{}, nil, fmt.Errorf("migratestore: audit event %d: %w", seq, err)
	}
	return b, evs, nil
}

// intentRef is an intent among Query's results: out[at], the event at
// stream sequence seq, whose previous link is prev, on owner's chain (see
// chainOwner).
type intentRef struct {
	at        int
	seq, prev uint64
	owner     string
}

// chainOwner names the chain of the intent ev, whose hdrChain header is
// chain: the user's id, or for a campaign's chain and the freeze's their
// keys in the campaign bucket ("c." + name, freezeKey), or for a version
// policy's or a revocation's chain the header itself (policyChain,
// revocationChain), none of which a user id can be: ids have no dot (see
// ownerRecord).
func chainOwner(ev migrate.AuditEvent, chain string) string {
	switch kind, _, _ := strings.Cut(chain, "."); {
	case chain == chainCampaign:
		return campaignKeyPrefix + ev.Campaign
	case chain == chainFreeze:
		return freezeKey
	case kind == chainPolicy, kind == chainRevocation:
		return chain
	}
	return ev.User
}

// ownerRecord returns the bucket and key of the chain owner's record when
// it is not a user's: a campaign's or the freeze's in the campaign bucket,
// a version policy's in the policy bucket, a revocation's in the
// revocation bucket. ok is false for a user.
func (a *Audit) ownerRecord(owner string) (bucket, key string, ok bool) {
	if owner == freezeKey || strings.HasPrefix(owner, campaignKeyPrefix) {
		return a.campaigns, owner, true
	}
	if platform, found := strings.CutPrefix(owner, chainPolicy+"."); found {
		return a.policies, policyKeyPrefix + platform, true
	}
	if peer, found := strings.CutPrefix(owner, chainRevocation+"."); found {
		return a.revocations, revocationKeyPrefix + peer, true
	}
	return "", "", false
}

// link is one link of a chain: its owner (see chainOwner) and the sequence
// of the intent (alone, or a batch naming the user).
type link struct {
	owner string
	seq   uint64
}

// userChain is Query's answer for one user: out (the events on the user's
// subject, at stream sequences seqs) without the intents off the user's
// chain, plus the events of the batch intents on the chain, which are not
// on the user's subject: it follows the chain from the user's record back
// to its start (or to an event older than q.Since, or gone), and returns
// everything in stream order, at most q.Limit.
func (a *Audit) userChain(ctx context.Context, s jetstream.Stream, w *chainWalk, q AuditQuery, out []migrate.AuditEvent, seqs []uint64, intents []intentRef) ([]migrate.AuditEvent, error) {
	kv, err := a.js.KeyValue(ctx, a.bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("migratestore: audit: users bucket: %w", err)
	}
	var head uint64
	if kv != nil {
		cur, found, err := loadFrom(ctx, kv, q.User)
		if err != nil {
			return nil, err
		}
		if found {
			head = cur.Audit
		}
	}
	// The user's events on a campaign's chain (exemptions) are judged on
	// that chain; the rest on the user's.
	prevOf := make(map[uint64]uint64, len(intents))
	var others []intentRef
	for _, r := range intents {
		if r.owner != q.User {
			others = append(others, r)
			continue
		}
		prevOf[r.seq] = r.prev
	}
	onOther, err := a.onChains(ctx, s, w, others)
	if err != nil {
		return nil, err
	}
	onChain := map[uint64]bool{}
	type found struct {
		seq uint64
		ev  migrate.AuditEvent
	}
	var batched []found
	for l := head; l != 0; {
		prev, ok := prevOf[l]
		if ok {
			onChain[l] = true
		} else {
			if err := w.read(q.User, l); err != nil {
				return nil, err
			}
			m, err := s.GetMsg(ctx, l)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break // aged out: the chain ends here
			}
			if err != nil {
				return nil, fmt.Errorf("migratestore: audit event %d: %w", l, err)
			}
			if !q.Since.IsZero() && m.Time.Before(q.Since) {
				break // the rest of the chain is older still
			}
			if v := m.Header.Get(hdrBatch); v != "" {
				b, evs, err := readBatchIntent(l, v, m.Data)
				if err != nil {
					return nil, err
				}
				i := slices.Index(b.Users, q.User)
				if i < 0 {
					return nil, fmt.Errorf("migratestore: audit event %d: the chain of %s leads to a batch without it", l, q.User)
				}
				if q.Campaign == "" || evs[i].Campaign == q.Campaign {
					batched = append(batched, found{seq: l, ev: evs[i]})
				}
				prev = b.Prev[i]
			} else if _, prev, ok, err = a.readLink(ctx, s, l, q.User); err != nil {
				return nil, err
			} else if !ok {
				break
			}
		}
		if prev >= l {
			return nil, notOlder(q.User, l, prev)
		}
		l = prev
	}
	all := make([]found, 0, len(out)+len(batched))
	next := 0
	for i, ev := range out {
		if next < len(intents) && intents[next].at == i {
			r := intents[next]
			next++
			if r.owner == q.User && !onChain[r.seq] || r.owner != q.User && !onOther[link{r.owner, r.seq}] {
				continue
			}
		}
		all = append(all, found{seq: seqs[i], ev: ev})
	}
	all = append(all, batched...)
	slices.SortStableFunc(all, func(x, y found) int { return cmp.Compare(x.seq, y.seq) })
	kept := make([]migrate.AuditEvent, 0, min(len(all), q.Limit))
	for _, f := range all[:min(len(all), q.Limit)] {
		kept = append(kept, f.ev)
	}
	return kept, nil
}

// landed returns out without the intents whose compare-and-set never
// landed: those not on their owner's chain (see Audit and onChains).
func (a *Audit) landed(ctx context.Context, s jetstream.Stream, out []migrate.AuditEvent, intents []intentRef) ([]migrate.AuditEvent, error) {
	if len(intents) == 0 {
		return out, nil
	}
	onChain, err := a.onChains(ctx, s, nil, intents) // not capped: the walks end at the oldest intent judged
	if err != nil {
		return nil, err
	}
	kept := out[:0]
	next := 0
	for i, ev := range out {
		if next < len(intents) && intents[next].at == i {
			r := intents[next]
			next++
			if !onChain[link{r.owner, r.seq}] {
				continue
			}
		}
		kept = append(kept, ev)
	}
	return kept, nil
}

// onChains returns which of intents are on their owner's chain, which it
// follows from the owner's current record (a user's, or a campaign's, see
// chainOwner) back through the intents' previous links, reading the links
// not among intents from the stream, down to the oldest intent to judge.
func (a *Audit) onChains(ctx context.Context, s jetstream.Stream, w *chainWalk, intents []intentRef) (map[link]bool, error) {
	onChain := make(map[link]bool, len(intents))
	if len(intents) == 0 {
		return onChain, nil
	}
	prevOf := make(map[link]uint64, len(intents))
	oldest := map[string]uint64{} // per owner, the oldest intent to judge
	for _, r := range intents {
		prevOf[link{r.owner, r.seq}] = r.prev
		if o, ok := oldest[r.owner]; !ok || r.seq < o {
			oldest[r.owner] = r.seq
		}
	}
	heads, err := a.chainHeads(ctx, oldest)
	if err != nil {
		return nil, err
	}
	for owner, head := range heads {
		floor := oldest[owner]
		for l := head; l >= floor && l != 0; {
			onChain[link{owner, l}] = true
			prev, ok := prevOf[link{owner, l}]
			if !ok {
				if err := w.read(owner, l); err != nil {
					return nil, err
				}
				if _, prev, ok, err = a.readLink(ctx, s, l, owner); err != nil {
					return nil, err
				}
				if !ok {
					break
				}
			}
			if prev >= l {
				return nil, notOlder(owner, l, prev)
			}
			l = prev
		}
	}
	return onChain, nil
}

// chainReaders is how many records chainHeads reads at once.
const chainReaders = 16

// chainHeads reads the current record of every owner in owners (the keys,
// see chainOwner: users from the users bucket, campaigns and the freeze
// from the campaign bucket, version policies from the policy bucket) and
// returns its Audit, the head of the owner's chain; an owner without a
// record (or bucket) is left out, so no change of it stands. It reads
// chainReaders records at a time: a campaign's answer may name thousands
// of users, each one read.
func (a *Audit) chainHeads(ctx context.Context, owners map[string]uint64) (map[string]uint64, error) {
	users, err := a.js.KeyValue(ctx, a.bucket)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("migratestore: audit: users bucket: %w", err)
	}
	// The other owners' buckets, opened once each (nil: no such bucket).
	records := map[string]jetstream.KeyValue{}
	for owner := range owners {
		bucket, _, ok := a.ownerRecord(owner)
		if _, open := records[bucket]; !ok || open {
			continue
		}
		kv, err := a.js.KeyValue(ctx, bucket)
		if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("migratestore: audit: bucket %s: %w", bucket, err)
		}
		records[bucket] = kv
	}
	head := func(ctx context.Context, owner string) (uint64, bool, error) {
		if bucket, key, ok := a.ownerRecord(owner); ok {
			kv := records[bucket]
			if kv == nil {
				return 0, false, nil
			}
			e, err := kv.Get(ctx, key)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0, false, nil
			}
			if err != nil {
				return 0, false, fmt.Errorf("migratestore: read %s: %w", key, err)
			}
			// Every such record (migrate.Campaign, Freeze,
			// migrate.VersionPolicy, Revocation) keeps its head in
			// "audit".
			var r struct {
				Audit uint64 `json:"audit"`
			}
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return 0, false, fmt.Errorf("migratestore: decode %s: %w", key, err)
			}
			return r.Audit, true, nil
		}
		if users == nil {
			return 0, false, nil
		}
		cur, found, err := loadFrom(ctx, users, owner)
		return cur.Audit, found, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	todo := make(chan string)
	var (
		mu    sync.Mutex
		heads = make(map[string]uint64, len(owners))
		errs  []error
		wg    sync.WaitGroup
	)
	for range min(chainReaders, len(owners)) {
		wg.Go(func() {
			for owner := range todo {
				h, found, err := head(ctx, owner)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, err)
					cancel()
				case found:
					heads[owner] = h
				}
				mu.Unlock()
			}
		})
	}
feed:
	for owner := range owners {
		select {
		case todo <- owner:
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

// readLink reads user's intent at seq from the stream (alone, or in a
// batch): its event (raw JSON) and its previous link. event is nil when
// the message is gone (aged out) or is a batch without the user; ok is
// false when there is no previous link to follow (also when the message
// is not an intent).
func (a *Audit) readLink(ctx context.Context, s jetstream.Stream, seq uint64, user string) (event json.RawMessage, prev uint64, ok bool, err error) {
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("migratestore: audit event %d: %w", seq, err)
	}
	if v := m.Header.Get(hdrBatch); v != "" {
		if v != batchIntentVersion {
			return nil, 0, false, fmt.Errorf("migratestore: audit event %d: batch intent version %q unknown", seq, v)
		}
		event, prev, ok, err = batchLink(m.Data, user)
		if err != nil {
			return nil, 0, false, fmt.Errorf("migratestore: audit event %d: %w", seq, err)
		}
		return event, prev, ok, nil
	}
	h := m.Header.Get(hdrPrev)
	if h == "" {
		return m.Data, 0, false, nil
	}
	prev, err = strconv.ParseUint(h, 10, 64)
	if err != nil {
		return nil, 0, false, fmt.Errorf("migratestore: audit event %d: header %s: %w", seq, hdrPrev, err)
	}
	return m.Data, prev, true, nil
}
