package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// batchWindow is how many compare-and-set publishes TransitionMany has in
// flight at once: well under the client's limit on pending asynchronous
// publishes (4000 by default), so a publish never stalls, and large enough
// that one round of acknowledgements (one grouped fsync) covers many users.
const batchWindow = 2000

// TransitionMany applies ops like Transition would, one by one, but writes
// them together: each record is read from the State (not from the bucket),
// changed, and published asynchronously to the bucket's subject with the
// read revision as the expected last sequence of that subject (the
// compare-and-set kv.Update does, without a round trip per user); then
// TransitionMany waits for every acknowledgement and puts the written
// records into the State in transactions of at most 500.
//
// A user the State does not have, or whose revision in the State is behind
// the bucket's (the publish fails with a wrong last sequence), takes the
// one-by-one path of Transition, which reads the bucket. The result has one
// entry per op, nil when the op was applied (or was a repeat), else what
// Transition would have returned. Ops for the same user in one batch are
// not supported: the second sees a stale revision and takes the slow path.
func (s *Store) TransitionMany(ctx context.Context, ops []migrate.UserOp) []error {
	errs := make([]error, len(ops))
	var slow []int
	done := 0
	for ; done < len(ops) && ctx.Err() == nil; done += batchWindow {
		slow = s.transitionWindow(ctx, ops, errs, done, min(done+batchWindow, len(ops)), slow)
	}
	for i := done; i < len(ops); i++ {
		errs[i] = fmt.Errorf("migratestore: user %s: %w", ops[i].User, ctx.Err())
	}
	for _, i := range slow {
		if err := ctx.Err(); err != nil {
			errs[i] = fmt.Errorf("migratestore: user %s: %w", ops[i].User, err)
			continue
		}
		_, errs[i] = s.Transition(ctx, ops[i].User, ops[i].Op)
	}
	return errs
}

// pending is one asynchronous compare-and-set in flight.
type pending struct {
	i    int
	cur  migrate.User
	next migrate.User
	f    jetstream.PubAckFuture
}

// transitionWindow publishes ops[start:end], waits for their
// acknowledgements, records results in errs and returns slow with the
// indices that must take the one-by-one path appended.
func (s *Store) transitionWindow(ctx context.Context, ops []migrate.UserOp, errs []error, start, end int, slow []int) []int {
	inflight := make([]pending, 0, end-start)
	for i := start; i < end; i++ {
		id, op := ops[i].User, ops[i].Op
		if err := migrate.CheckUserID(id); err != nil {
			errs[i] = err
			continue
		}
		if op.At.IsZero() {
			op.At = s.cfg.Now()
		}
		op.At = stamp(op.At)
		ops[i].Op.At = op.At // the slow path stamps the same time
		cur, ok := s.st.Get(id)
		if !ok || cur.Revision == 0 {
			slow = append(slow, i)
			continue
		}
		next, err := migrate.Apply(cur, op)
		if err != nil {
			errs[i] = fmt.Errorf("migratestore: user %s: %w", id, err)
			continue
		}
		if op.ID != "" && op.ID == cur.OpID {
			continue // a repeat: nothing to write
		}
		next.Revision = 0 // the KV entry carries the revision
		data, err := json.Marshal(next)
		if err != nil {
			errs[i] = fmt.Errorf("migratestore: encode user %s: %w", id, err)
			continue
		}
		msg := &nats.Msg{Subject: s.subject(id), Data: data, Header: nats.Header{}}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(cur.Revision))
		if err != nil {
			errs[i] = fmt.Errorf("migratestore: write user %s: %w", id, err)
			continue
		}
		inflight = append(inflight, pending{i: i, cur: cur, next: next, f: f})
	}
	written := make([]migrate.User, 0, len(inflight))
	for k, p := range inflight {
		select {
		case ack := <-p.f.Ok():
			p.next.Revision = ack.Sequence
			written = append(written, p.next)
			s.log.Debug("user phase changed", "user", p.next.ID, "from", p.cur.Phase, "to", p.next.Phase,
				"op", p.next.OpID, "reason", p.next.Reason, "revision", ack.Sequence)
		case err := <-p.f.Err():
			if wrongLastSequence(err) {
				s.log.Debug("compare-and-set lost; retrying alone", "user", p.next.ID)
				slow = append(slow, p.i)
				continue
			}
			errs[p.i] = fmt.Errorf("migratestore: write user %s: %w", p.next.ID, err)
		case <-ctx.Done():
			// Unacknowledged writes may or may not have landed; the
			// watch will tell the State, and op ids make a retry safe.
			for _, q := range inflight[k:] {
				errs[q.i] = fmt.Errorf("migratestore: write user %s: %w", q.next.ID, ctx.Err())
			}
			s.st.Put(written...)
			return slow
		}
	}
	s.st.Put(written...)
	if len(written) > 0 {
		s.log.Info("users moved in a batch", "written", len(written), "of", end-start)
	}
	return slow
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
