package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// refusedForGood reports whether err is the cloud's refusal of the request
// itself (forbidden, conflict, bad request...), which no retry changes.
func refusedForGood(err error) bool {
	var se *cloud.ServerError
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case cloudwire.CodeInternal, cloudwire.CodeUnavailable, cloudwire.CodeRateLimited:
		return false
	}
	return true
}

// Undeliverable reports travel back to a message's origin, the way mirror
// copies travel back to a user's legacy devices: when one of the bridge's
// queues drops a message unread after its expiry (recipient never
// reachable), the sender is told, on their own side.
//
//   - A cloud sender gets a cloudwire.KindUndeliverable event (PROTOCOL.md
//     v8) in their synced history, naming the message, its conversation
//     and sequence, the recipient and the reason, written once per message
//     and recipient by the cloud (cloud.BridgeLive.PostUndeliverable), so
//     each of their devices gets it once, live or at its next sync, and
//     marks the message. It replaces the notice message of v5 to v7: no
//     text is sent in the conversation any more.
//   - A legacy sender (of a flip-hold entry, or of a cloud group message a
//     legacy member did not get) gets a notice as a chat message on their
//     devices, or, none being reachable, held for them at the supernode's
//     offline store (op store; it reaches them at their next
//     registration): chat has no "undeliverable" frame. The supernode's
//     own reports (op reports) cannot carry it: only the supernode writes
//     those, and no op lets the bridge add one.
//
// The notice's id is derived from the message's, so a report retried after
// a failure or a restart is taken once.
const noticeNamespace = "ferry.bridge.undeliverable"

var noticeSpace = uuid.NewSHA1(uuid.NameSpaceURL, []byte(noticeNamespace))

// noticeID is the id of the undeliverable notice for message msgID.
func noticeID(msgID string) string {
	return uuid.NewSHA1(noticeSpace, []byte(msgID)).String()
}

// noticeText is what a sender reads about their undelivered message.
func noticeText(msgID, to string, ttl string) string {
	return fmt.Sprintf("Ferry: your message %s to %s was not delivered: no device of %s could be reached for %s.", msgID, to, to, ttl)
}

// reportToCloudSender tells the sender of an expired outbox entry,
// unless the recipient has flipped to the cloud meanwhile: the message is
// in their cloud inbox, their home (home is then true). A cloud-home
// sender gets an undeliverable event in their history; a legacy-home one
// (the sender of a group message) a notice on their legacy devices. An
// error keeps the entry for a later attempt.
func (b *Bridge) reportToCloudSender(ctx context.Context, e outboxEntry) (home bool, err error) {
	ev := e.Event
	if u, ok := b.cfg.State.Get(ev.User); ok && u.CloudHome() {
		return true, nil
	}
	if ev.From == "" || ev.From == ev.User {
		return false, nil
	}
	if u, ok := b.cfg.State.Get(ev.From); ok && !u.CloudHome() {
		return b.reportToLegacySender(ctx, e)
	}
	pctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	_, err = b.live.cloud.PostUndeliverable(pctx, ev.MsgID, ev.User, cloudwire.UndeliverableExpired, b.now())
	switch {
	case errors.Is(err, cloud.ErrUnknownMessage):
		b.flow.reports.WithLabelValues(originCloud, resultError).Inc()
		b.log.Warn("undeliverable report refused by the cloud; dropped", "msg_id", ev.MsgID, "err", err)
		return false, nil
	case err != nil:
		b.flow.reports.WithLabelValues(originCloud, resultError).Inc()
		return false, fmt.Errorf("undeliverable report to the cloud: %w", err)
	}
	b.flow.reports.WithLabelValues(originCloud, resultOK).Inc()
	return false, nil
}

// reportToLegacySender tells the legacy sender of an expired flip-hold
// entry: on a device of theirs, or through the supernode's offline store.
func (b *Bridge) reportToLegacySender(ctx context.Context, e outboxEntry) (home bool, err error) {
	ev := e.Event
	notice := legacywire.ChatMessage{
		ID: noticeID(ev.MsgID), From: ev.User, To: ev.From,
		Text: noticeText(ev.MsgID, ev.User, b.cfg.OutboxTTL.String()), SentAt: b.now().UTC(),
	}
	ack, err := b.deliverOnce(ctx, notice)
	if err == nil && ack.Delivered() {
		b.flow.reports.WithLabelValues(originLegacy, resultOK).Inc()
		return false, nil
	}
	sctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	if serr := b.dir.Store(sctx, notice); serr != nil {
		b.flow.reports.WithLabelValues(originLegacy, resultError).Inc()
		if errors.Is(serr, legacy.ErrRefused) {
			// The supernode will not hold it (unknown sender, queue full).
			b.log.Warn("undeliverable notice refused by the supernode; dropped", "msg_id", ev.MsgID, "err", serr)
			return false, nil
		}
		return false, fmt.Errorf("undeliverable notice to the sender's devices (%v) or the supernode: %w", err, serr)
	}
	b.flow.reports.WithLabelValues(originLegacy, resultStored).Inc()
	return false, nil
}
