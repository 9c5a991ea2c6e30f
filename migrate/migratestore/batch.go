package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// batchWindow is how many compare-and-set publishes TransitionMany keeps in
// flight: well under the client's limit on pending asynchronous publishes
// (4000 by default), so a publish never stalls, and large enough that the
// server always has work queued while the oldest acknowledgement comes back.
const batchWindow = 2000

// intentChunk is how many moves one batch intent of TransitionManyAudited
// carries at most, and intentBytes about how many bytes of events: one
// audit message (one stored message, one acknowledgement) per chunk
// instead of one per move, well under the server's payload limit (1 MiB
// by default).
const (
	intentChunk = 256
	intentBytes = 256 << 10
)

// applyChunk is how many acknowledged records TransitionMany puts into the
// State at once: the State's transaction size, so each Put is one
// transaction.
const applyChunk = 500

// TransitionMany applies ops like Transition would, one by one, but writes
// them together: each record is read from the State (not from the bucket),
// changed, and published asynchronously to the bucket's subject with the
// read revision as the expected last sequence of that subject (the
// compare-and-set kv.Update does, without a round trip per user).
//
// The publishes are pipelined: up to batchWindow are in flight at once, and
// the next one goes out as soon as the oldest is acknowledged, so there is
// no round trip per window. Acknowledged records go into the State in
// transactions of at most applyChunk. Each write is noted for the watch as
// it is published (see localWrites), so that the watch skips it instead of
// decoding and applying it a second time.
//
// A user the State does not have, or whose revision in the State is behind
// the bucket's (the publish fails with a wrong last sequence), takes the
// one-by-one path of Transition, which reads the bucket. The result has one
// entry per op: nil when the op was applied, migrate.ErrRepeated when it
// was a repeat (nothing written), else what Transition would have
// returned. Ops for the same user in one batch are
// not supported: the second sees a stale revision and takes the slow path.
func (s *Store) TransitionMany(ctx context.Context, ops []migrate.UserOp) []error {
	return s.transitionMany(ctx, ops, nil)
}

// TransitionManyAudited is TransitionMany writing events[i], the audit event
// of ops[i], to the audit log (Config.AuditStream) as the intent of each
// compare-and-set it sends, before sending it (migrate.AuditedMover). The
// intents of up to intentChunk moves of one campaign go in one batch intent
// (see hdrBatch), pipelined like the writes; the chunk's writes go out when
// it is acknowledged, each record carrying the batch's sequence in Audit.
// No transition can so commit without its event; Audit.Query drops the
// events whose write did not land (see Audit). An op that needs no write (a
// repeat, a refusal) writes no event. Each event gets the user and the
// phase the user is moved from. A user already in the chunk being filled
// takes the one-by-one path, with an intent of its own.
func (s *Store) TransitionManyAudited(ctx context.Context, ops []migrate.UserOp, events []migrate.AuditEvent) []error {
	if len(events) != len(ops) {
		errs := make([]error, len(ops))
		for i := range errs {
			errs[i] = fmt.Errorf("migratestore: %d audit events for %d ops", len(events), len(ops))
		}
		return errs
	}
	return s.transitionMany(ctx, ops, events)
}

var _ migrate.AuditedMover = (*Store)(nil)

func (s *Store) transitionMany(ctx context.Context, ops []migrate.UserOp, events []migrate.AuditEvent) []error {
	if s.cfg.Bulk != nil {
		defer s.cfg.Bulk()()
	}
	b := batch{s: s, ops: ops, events: events, errs: make([]error, len(ops)), debug: s.log.Enabled(ctx, slog.LevelDebug)}
	b.startApplier()
	next := 0
	for next < len(ops) && ctx.Err() == nil {
		if b.inFlight() >= batchWindow {
			if !b.settle(ctx) {
				break
			}
			continue
		}
		b.publish(next)
		next++
	}
	if ctx.Err() == nil {
		b.sendChunk()
	}
	for b.inFlight() > 0 && b.settle(ctx) {
	}
	b.abandon(ctx)
	b.flush()
	b.stopApplier()
	for i := next; i < len(ops); i++ {
		b.errs[i] = fmt.Errorf("migratestore: user %s: %w", ops[i].User, ctx.Err())
	}
	if b.written > 0 {
		s.log.Info("users moved in a batch", "written", b.written, "of", len(ops))
	}
	for _, i := range b.slow {
		if err := ctx.Err(); err != nil {
			b.errs[i] = fmt.Errorf("migratestore: user %s: %w", ops[i].User, err)
			continue
		}
		var ev *migrate.AuditEvent
		if events != nil {
			ev = &events[i]
		}
		var repeated bool
		_, repeated, b.errs[i] = s.transition(ctx, ops[i].User, ops[i].Op, ev)
		if repeated && b.errs[i] == nil {
			b.errs[i] = fmt.Errorf("migratestore: user %s: %w", ops[i].User, migrate.ErrRepeated)
		}
	}
	return b.errs
}

// batch is the progress of one TransitionMany.
type batch struct {
	s      *Store
	ops    []migrate.UserOp
	events []migrate.AuditEvent // nil: not audited
	errs   []error
	slow   []int // indices of ops for the one-by-one path, in order
	// chunk is the moves of the batch intent being filled (audited
	// batches), not yet sent; iq the batch intents in flight, oldest
	// first, and iqMoves how many moves they carry.
	chunk   intentFill
	iq      []*intentFill
	iqMoves int
	q       ring // compare-and-sets in flight, oldest first
	acked   []migrate.User
	// written counts the records put into the State.
	written int
	debug   bool
	// applyQ carries chunks of acknowledged records to the goroutine that
	// puts them into the State, so that settling acknowledgements (and
	// noting them for the watch) never waits for a memdb transaction.
	applyQ  chan []migrate.User
	applied chan struct{}
}

// pending is one asynchronous compare-and-set, or its intent, in flight.
type pending struct {
	i     int
	from  migrate.Phase
	after uint64 // the revision the compare-and-set replaces
	next  migrate.User
	f     jetstream.PubAckFuture
	note  *localWrite // for the watch; nil when not noted
}

// intentFill is one batch intent: its moves, their encoded events and
// previous links, and, once sent, its acknowledgement.
type intentFill struct {
	campaign string
	moves    []pending
	users    []string
	prev     []uint64
	events   []json.RawMessage
	bytes    int
	seen     map[string]struct{} // users
	f        jetstream.PubAckFuture
}

// has reports whether the chunk holds a move of user.
func (c *intentFill) has(user string) bool {
	_, ok := c.seen[user]
	return ok
}

// inFlight is how many moves wait for an acknowledgement: of their
// intent (sent or being filled) or of their compare-and-set.
func (b *batch) inFlight() int { return len(b.chunk.moves) + b.iqMoves + b.q.len() }

// publish starts the compare-and-set of ops[i], or settles it at once when
// it needs no write, takes the slow path or cannot be written.
func (b *batch) publish(i int) {
	s := b.s
	id, op := b.ops[i].User, b.ops[i].Op
	if err := migrate.CheckUserID(id); err != nil {
		b.errs[i] = err
		return
	}
	if op.At.IsZero() {
		op.At = s.cfg.Now()
	}
	op.At = stamp(op.At)
	b.ops[i].Op.At = op.At // the slow path stamps the same time
	cur, ok := s.st.Get(id)
	if !ok || cur.Revision == 0 {
		b.slow = append(b.slow, i)
		return
	}
	next, err := migrate.Apply(cur, op)
	if err != nil {
		b.errs[i] = fmt.Errorf("migratestore: user %s: %w", id, err)
		return
	}
	if op.ID != "" && op.ID == cur.OpID {
		b.errs[i] = fmt.Errorf("migratestore: user %s: %w", id, migrate.ErrRepeated) // nothing to write
		return
	}
	p := pending{i: i, from: cur.Phase, after: cur.Revision, next: next}
	if b.events == nil {
		b.write(p)
		return
	}
	ev := b.events[i]
	ev.User, ev.From = id, string(cur.Phase)
	if b.chunk.has(id) {
		b.slow = append(b.slow, i) // one link per user and batch
		return
	}
	_, data, err := encodeEvent(ev)
	if err != nil {
		b.errs[i] = fmt.Errorf("migratestore: user %s: %w", id, err)
		return
	}
	if len(b.chunk.moves) > 0 && (ev.Campaign != b.chunk.campaign || b.chunk.bytes+len(data) > intentBytes) {
		b.sendChunk()
	}
	c := &b.chunk
	c.campaign = ev.Campaign
	c.moves = append(c.moves, p)
	if c.seen == nil {
		c.seen = make(map[string]struct{}, intentChunk)
	}
	c.seen[id] = struct{}{}
	c.users = append(c.users, id)
	c.prev = append(c.prev, cur.Audit)
	c.events = append(c.events, data)
	c.bytes += len(data)
	if len(c.moves) == intentChunk {
		b.sendChunk()
	}
}

// sendChunk publishes the batch intent being filled, if it holds a move.
func (b *batch) sendChunk() {
	c := b.chunk
	b.chunk = intentFill{}
	if len(c.moves) == 0 {
		return
	}
	msg, err := batchIntentMsg(c.campaign, c.users, c.prev, c.events)
	if err == nil {
		c.f, err = b.s.js.PublishMsgAsync(msg)
	}
	if err != nil {
		for _, p := range c.moves {
			b.errs[p.i] = fmt.Errorf("migratestore: user %s: audit intent: %w", p.next.ID, err)
		}
		return
	}
	b.iq = append(b.iq, &c)
	b.iqMoves += len(c.moves)
}

// write publishes p's compare-and-set.
func (b *batch) write(p pending) {
	s := b.s
	id := p.next.ID
	p.next.Revision = 0 // the KV entry carries the revision
	data, err := json.Marshal(p.next)
	if err != nil {
		b.errs[p.i] = fmt.Errorf("migratestore: encode user %s: %w", id, err)
		return
	}
	p.note = s.local.publishing(id, p.after, data)
	msg := &nats.Msg{Subject: s.subject(id), Data: data, Header: nats.Header{}}
	p.f, err = s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(p.after))
	if err != nil {
		b.failed(&p)
		b.errs[p.i] = fmt.Errorf("migratestore: write user %s: %w", id, err)
		return
	}
	b.q.push(p)
}

// settle waits for the oldest intent or the oldest compare-and-set in
// flight, whichever is acknowledged first, and records its outcome (an
// acknowledged intent sends its compare-and-set); it returns false, leaving
// both in flight, when ctx ends first.
func (b *batch) settle(ctx context.Context) bool {
	if len(b.iq) == 0 && b.q.len() == 0 {
		b.sendChunk() // nothing else to wait for
		if len(b.iq) == 0 {
			return true // it failed: nothing is in flight
		}
	}
	var intentOk, writeOk <-chan *jetstream.PubAck
	var intentErr, writeErr <-chan error
	if len(b.iq) > 0 {
		f := b.iq[0].f
		intentOk, intentErr = f.Ok(), f.Err()
	}
	if b.q.len() > 0 {
		f := b.q.peek().f
		writeOk, writeErr = f.Ok(), f.Err()
	}
	select {
	case ack := <-intentOk:
		c := b.popIntent()
		for _, p := range c.moves {
			p.next.Audit = ack.Sequence
			b.write(p)
		}
	case err := <-intentErr:
		c := b.popIntent()
		for _, p := range c.moves {
			b.errs[p.i] = fmt.Errorf("migratestore: user %s: audit intent: %w", p.next.ID, err)
		}
	case ack := <-writeOk:
		p := b.q.peek()
		p.next.Revision = ack.Sequence
		b.s.local.acked(p.next.ID, p.note, ack.Sequence)
		b.acked = append(b.acked, p.next)
		if b.debug {
			b.s.log.Debug("user phase changed", "user", p.next.ID, "from", p.from, "to", p.next.Phase,
				"op", p.next.OpID, "reason", p.next.Reason, "revision", ack.Sequence)
		}
		if len(b.acked) == applyChunk {
			b.flush()
		}
		b.q.pop()
	case err := <-writeErr:
		p := b.q.peek()
		b.failed(p)
		if wrongLastSequence(err) {
			b.s.log.Debug("compare-and-set lost; retrying alone", "user", p.next.ID)
			b.slow = append(b.slow, p.i)
		} else {
			b.errs[p.i] = fmt.Errorf("migratestore: write user %s: %w", p.next.ID, err)
		}
		b.q.pop()
	case <-ctx.Done():
		return false
	}
	return true
}

// abandon fails the publishes still in flight with ctx's error: they may or
// may not have landed; the watch will tell the State, and op ids make a
// retry safe.
func (b *batch) abandon(ctx context.Context) {
	unsent := b.chunk
	b.chunk = intentFill{}
	b.iq = append(b.iq, &unsent)
	b.iqMoves += len(unsent.moves)
	for len(b.iq) > 0 {
		c := b.popIntent() // its writes never went out; the intents alone are dropped by Query
		for _, p := range c.moves {
			b.errs[p.i] = fmt.Errorf("migratestore: user %s: %w", p.next.ID, ctx.Err())
		}
	}
	for b.q.len() > 0 {
		p := b.q.pop()
		b.failed(&p)
		b.errs[p.i] = fmt.Errorf("migratestore: write user %s: %w", p.next.ID, ctx.Err())
	}
}

// popIntent takes the oldest batch intent in flight.
func (b *batch) popIntent() *intentFill {
	c := b.iq[0]
	b.iq[0] = nil
	b.iq = b.iq[1:]
	b.iqMoves -= len(c.moves)
	return c
}

// applyQueue is how many chunks may wait for the State: enough to ride out
// a slow transaction, few enough that the State never lags far behind.
const applyQueue = 8

// failed drops the watch's note of a write that failed or was abandoned;
// when the watch met the write (and skipped it) nonetheless, the record goes
// into the State at the revision the watch saw.
func (b *batch) failed(p *pending) {
	if rev := b.s.local.failed(p.next.ID, p.note); rev != 0 {
		u := p.next
		u.Revision = rev
		b.acked = append(b.acked, u)
		if len(b.acked) == applyChunk {
			b.flush()
		}
	}
}

// flush hands the acknowledged records to the applier (settle noted them for
// the watch, which skips them).
func (b *batch) flush() {
	if len(b.acked) == 0 {
		return
	}
	b.applyQ <- b.acked
	b.written += len(b.acked)
	b.acked = make([]migrate.User, 0, applyChunk)
}

// startApplier starts the goroutine that puts flushed chunks into the State.
func (b *batch) startApplier() {
	b.acked = make([]migrate.User, 0, applyChunk)
	b.applyQ = make(chan []migrate.User, applyQueue)
	b.applied = make(chan struct{})
	go func() {
		defer close(b.applied)
		for chunk := range b.applyQ {
			b.s.st.Put(chunk...)
		}
	}()
}

// stopApplier returns once every flushed chunk is in the State.
func (b *batch) stopApplier() {
	close(b.applyQ)
	<-b.applied
}

// ring is a FIFO of pending publishes holding at most batchWindow.
type ring struct {
	buf        []pending
	head, size int
}

func (r *ring) len() int { return r.size }

func (r *ring) push(p pending) {
	if r.buf == nil {
		r.buf = make([]pending, batchWindow)
	}
	r.buf[(r.head+r.size)%len(r.buf)] = p
	r.size++
}

func (r *ring) peek() *pending { return &r.buf[r.head] }

func (r *ring) pop() pending {
	p := r.buf[r.head]
	r.buf[r.head] = pending{}
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return p
}

// subject is the subject of the user's record in the bucket's stream: what
// kv.Update publishes to.
func (s *Store) subject(id string) string {
	return "$KV." + s.cfg.Bucket + "." + id
}

// wrongLastSequence reports a lost compare-and-set: the subject's last
// sequence was not the expected one (10071, or 10164 on replicated streams).
func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
