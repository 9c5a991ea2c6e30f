package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// System notes on legacy devices. When a participant of a conversation
// moves between the apps, the cloud writes a system note into each of
// their conversations (cloud.Service.PostPhaseNote), read by every
// member: a legacy-home member's copy reaches the bridge on its feed like
// a message, and the bridge carries it to the member's legacy devices as
// a chat message from the system contact legacywire.NoticesUser
// ("ferry-notices"), with the note's own id (derived by the cloud from
// the mover, the move and the conversation), its text (a group's note
// prefixed with the group's name, as group messages are) and its time.
// It goes through the member's outbox queue, behind what is waiting
// there, so it keeps its place among the conversation's messages, and
// no receipt goes back (clients do not receipt notes).
//
// Once per conversation and change: the note's id and the recipient are
// marked in the id map once the note is handed to a device or queued, and
// a marked note is not carried again, so neither a replay after a restart
// nor a second bridge following the same inboxes sends it twice (two
// bridges racing on the same event leave the device's duplicate filter,
// keyed by the same id, to drop the second). Notices from the system
// contact (the cloud's version notices) are for cloud devices and are not
// carried; neither is a mover's own note.

// noteKey is the id map key marking that note msgID was carried to user.
func noteKey(msgID, user string) string {
	h := sha256.Sum256([]byte(msgID + "\n" + user))
	return "note." + hex.EncodeToString(h[:16])
}

// noted reports whether the note key was carried before.
func (l *ledger) noted(ctx context.Context, key string) (bool, error) {
	_, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("bridge: read note mark: %w", err)
	}
	return true, nil
}

// markNoted records that the note key was carried.
func (l *ledger) markNoted(ctx context.Context, key string) error {
	if _, err := l.kv.Put(ctx, key, []byte{1}); err != nil {
		return fmt.Errorf("bridge: mark note: %w", err)
	}
	return nil
}

// noteToLegacy carries a system note in a legacy-home user's inbox to
// their legacy devices, once (see above). An error stops the feed, whose
// cursor then stays before the note.
func (b *Bridge) noteToLegacy(ctx context.Context, ev cloudwire.Event) error {
	if ev.From == ev.User || ev.From == cloudwire.SystemContact || ev.Text == "" {
		return nil
	}
	key := noteKey(ev.MsgID, ev.User)
	if done, err := b.ledger.noted(ctx, key); err != nil || done {
		return err
	}
	handed := false
	if !b.queueFirst(ev.User) {
		done, err := b.carryNote(ctx, ev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !done {
			b.log.Debug("system note: legacy device unreachable; queued", "msg_id", ev.MsgID, "err", err)
		}
		handed = done
	}
	if !handed {
		if err := b.outbox.addEntry(ctx, outboxEntry{Event: ev, Note: true}); err != nil {
			return err
		}
		b.flow.notes.WithLabelValues(resultQueued).Inc()
	}
	return b.ledger.markNoted(ctx, key)
}

// carryNote makes one attempt to hand a system note to one of the
// recipient's legacy devices, as a message from the system contact.
func (b *Bridge) carryNote(ctx context.Context, ev cloudwire.Event) (done bool, err error) {
	msg, err := b.legacyCopy(ctx, ev)
	if err != nil {
		return false, err
	}
	msg.From = legacywire.NoticesUser
	ack, err := b.deliverOnce(ctx, msg)
	if err != nil {
		return false, err
	}
	if !ack.Delivered() {
		b.log.Warn("legacy device refused a system note", "msg_id", ev.MsgID, "code", ack.Code)
	}
	b.flow.notes.WithLabelValues(ackResult(ack)).Inc()
	return true, nil
}
