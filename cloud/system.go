package cloud

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// System notes are history the service writes itself (event kind
// cloudwire.KindSystem): a note in every conversation of a user who moved
// between the classic app and the new one, and notices from
// cloudwire.SystemContact (notice.go). Each is a log record with a sequence
// of its own, written to its readers' inboxes like a message, and
// idempotent by a message id derived from what it is about, so that a
// replayed phase watch or a reconnecting client writes nothing twice.
const (
	// noteQueueLen bounds the phase moves waiting to be noted.
	noteQueueLen = 4096
	// noteAttempts and noteBackoff bound the retries of one phase note
	// whose writes failed (the engine was unavailable).
	noteAttempts = 5
	noteBackoff  = time.Second
	// maxNotedConvs bounds the conversations one phase move is noted in.
	maxNotedConvs = maxContacts
)

// phaseNote is one phase move waiting to be noted.
type phaseNote struct {
	user, opID string
	toCloud    bool
}

// PhaseNoteText is the system note of user's move: to the new app (the
// cloud became the user's home) or back to the classic app.
func PhaseNoteText(user string, toCloud bool) string {
	if toCloud {
		return user + " moved to the new app"
	}
	return user + " is back on the classic app"
}

// systemMsgID derives a system record's message id from what it is about:
// prefix and the first 32 hex digits of sha256 over parts, which fits
// cloudwire.ValidMsgID and names the same note on every node.
func systemMsgID(prefix string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return prefix + hex.EncodeToString(sum[:16])
}

// NotePhaseMove queues the system note of user's move between the overlay
// and the cloud as inbound home (toCloud: ready→cloud; otherwise a
// rollback), made by the transition opID. It does not block: Run writes
// the note into every conversation of the user. It reports false when the
// queue is full (the note is dropped and logged).
func (s *Service) NotePhaseMove(user, opID string, toCloud bool) bool {
	select {
	case s.notes <- phaseNote{user: user, opID: opID, toCloud: toCloud}:
		return true
	default:
		s.log.Warn("phase note queue full; note dropped", "user", user, "op", opID)
		return false
	}
}

// runNotes writes queued phase notes until ctx ends, retrying each a few
// times while the engine fails.
func (s *Service) runNotes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case n := <-s.notes:
			for attempt := 1; ; attempt++ {
				wctx, cancel := context.WithTimeout(ctx, opTimeout)
				_, err := s.PostPhaseNote(wctx, n.user, n.opID, n.toCloud)
				cancel()
				if err == nil || ctx.Err() != nil {
					break
				}
				if attempt == noteAttempts {
					s.log.Error("phase note not written", "user", n.user, "op", n.opID, "err", err)
					break
				}
				t := time.NewTimer(time.Duration(attempt) * noteBackoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
	}
}

// PostPhaseNote writes the system note of user's move (PhaseNoteText)
// into every conversation user is a member of, and returns how many
// conversations have it. Each note's message id is derived from the user,
// opID and the conversation: calling it again for the same move writes
// nothing new, on any node.
func (s *Service) PostPhaseNote(ctx context.Context, user, opID string, toCloud bool) (int, error) {
	if !cloudwire.ValidID(user) || opID == "" {
		return 0, fmt.Errorf("%w: phase note needs a user and an op id", errBadRequest)
	}
	convs, err := s.store.conversationsOf(ctx, user)
	if err != nil {
		return 0, err
	}
	text := PhaseNoteText(user, toCloud)
	at := s.cfg.Now().UTC().Truncate(time.Millisecond)
	var errs []error
	noted := 0
	for _, c := range convs {
		lr := logRecord{MsgID: systemMsgID("sys", user, opID, c.conv), Conv: c.conv, Kind: cloudwire.KindSystem,
			From: user, To: c.other, Text: text, At: at}
		var readers func() ([]string, error) // a direct conversation: its two participants
		if cloudwire.IsGroupID(c.conv) {
			readers = func() ([]string, error) { return s.store.members(ctx, c.conv) }
		}
		if _, _, err := s.store.postSystem(ctx, lr, readers); err != nil {
			errs = append(errs, fmt.Errorf("note in %s: %w", c.conv, err))
			continue
		}
		noted++
	}
	return noted, errors.Join(errs...)
}

// memberConv is one conversation of a user; other is the other participant
// of a direct conversation ("" for a group).
type memberConv struct{ conv, other string }

// conversationsOf returns the conversations user is a member of now, at
// most maxNotedConvs.
func (st *store) conversationsOf(ctx context.Context, user string) ([]memberConv, error) {
	var out []memberConv
	err := st.eachConversation(ctx, user, func(conv string, members []string) bool {
		c := memberConv{conv: conv}
		if !cloudwire.IsGroupID(conv) {
			for _, m := range members {
				if m != user {
					c.other = m
				}
			}
		}
		out = append(out, c)
		return len(out) < maxNotedConvs
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// postSystem writes a system record like a send: the conversation append
// under its lock, the inbox writes to readers (nil: the direct
// conversation's two participants), then the idempotency record. A record
// whose message id was written before is not written again: its original
// is returned with dup set.
func (st *store) postSystem(ctx context.Context, lr logRecord, readers func() ([]string, error)) (rec sendRecord, dup bool, err error) {
	if prior, ok, err := st.lookup(ctx, lr.MsgID); err != nil {
		return sendRecord{}, false, err
	} else if ok {
		return sameSender(prior, lr.From)
	}
	lr, dup, err = st.appendAndFanOut(ctx, lr, readers)
	if err != nil {
		return sendRecord{}, false, err
	}
	return st.rememberOnce(ctx, sendRecord{MsgID: lr.MsgID, Conv: lr.Conv, Seq: lr.Seq, At: lr.At, From: lr.From, To: lr.To}, dup)
}

// rememberOnce stores rec's idempotency record, or, when another node
// stored one first, returns that one (with dup set) if it is from the same
// sender. (send and group end the same way.)
func (st *store) rememberOnce(ctx context.Context, rec sendRecord, dup bool) (sendRecord, bool, error) {
	err := st.remember(ctx, rec)
	if err == nil {
		return rec, dup, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return sendRecord{}, false, err
	}
	prior, ok, err := st.lookup(ctx, rec.MsgID)
	if err != nil || !ok {
		return sendRecord{}, false, fmt.Errorf("cloud: send record vanished: %v", err)
	}
	return sameSender(prior, rec.From)
}

// postUndeliverable writes a cloudwire.KindUndeliverable event into the
// inbox of the sender of msgID, for recipient to, once: its idempotency
// record (a send record under a message id derived from the message and
// the recipient) makes a repeat, from a retry, a restart or a second
// bridge, write nothing new (dup). The inbox write's own Nats-Msg-Id
// covers two writers racing within the duplicate window.
func (st *store) postUndeliverable(ctx context.Context, msgID, to, reason string, at time.Time) (dup bool, err error) {
	if !cloudwire.ValidMsgID(msgID) || !cloudwire.ValidID(to) || reason == "" {
		return false, fmt.Errorf("%w: undeliverable needs a message id, a recipient and a reason", errBadRequest)
	}
	rec, ok, err := st.lookup(ctx, msgID)
	if err != nil {
		return false, err
	}
	if !ok || rec.From == to || (!cloudwire.IsGroupID(rec.Conv) && rec.To != to) {
		return false, fmt.Errorf("%w: %s to %s", ErrUnknownMessage, msgID, to)
	}
	id := systemMsgID("und", msgID, to)
	if _, ok, err := st.lookup(ctx, id); err != nil || ok {
		return ok, err
	}
	at = at.UTC().Truncate(time.Millisecond)
	ev := inboxRecord{User: rec.From, Kind: cloudwire.KindUndeliverable, Conv: rec.Conv, Seq: rec.Seq,
		MsgID: rec.MsgID, From: rec.From, To: to, Reason: reason, At: at}
	if err := st.fanOut(ctx, []inboxRecord{ev}, cloudwire.KindUndeliverable+"."+subjectToken(to)); err != nil {
		return false, err
	}
	err = st.remember(ctx, sendRecord{MsgID: id, Conv: rec.Conv, Seq: rec.Seq, At: at, From: rec.From, To: to})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true, nil
	}
	return false, err
}
