package bridge

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// mirrors reports whether messages u receives in the cloud are mirrored to
// u's legacy devices: u's home is the cloud but not for good (phase cloud,
// or held or failed on the way back from it; never finalized), and u has a
// legacy device on record (a device id that is an overlay peer id).
func mirrors(u migrate.User) bool {
	if !u.CloudHome() || finalized(u) {
		return false
	}
	for _, d := range u.Devices {
		if _, err := peer.Decode(d.ID); err == nil {
			return true
		}
	}
	return false
}

// mirrorEvent copies a message a cloud-home user received to their legacy
// devices as history: through the outbox queue the user's legacy
// deliveries used before the flip, so the copies follow what was still
// waiting there, in the cloud inbox's order. A copy whose device is not
// reachable waits for it (mirror entries expire without a report: the
// original reached the user's home).
func (b *Bridge) mirrorEvent(ctx context.Context, u migrate.User, ev cloudwire.Event) error {
	if ev.Kind != cloudwire.KindMsg || ev.From == ev.User || !mirrors(u) {
		return nil
	}
	if !b.queueFirst(ev.User) {
		done, err := b.carryMirror(ctx, ev)
		if done {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Debug("mirror: legacy device unreachable; queued", "msg_id", ev.MsgID, "err", err)
	}
	if err := b.outbox.addEntry(ctx, outboxEntry{Event: ev, Mirror: true}); err != nil {
		return err
	}
	b.flow.mirrored.WithLabelValues(resultQueued).Inc()
	return nil
}

// carryMirror makes one attempt to hand a mirror copy to one of the user's
// legacy devices. The copy keeps the message's id, sender and time, so a
// device that already has it (delivered before the flip) drops it as a
// repeat and shows nothing new; no receipt goes back to the cloud, where
// the user's own devices give them.
func (b *Bridge) carryMirror(ctx context.Context, ev cloudwire.Event) (done bool, err error) {
	ack, err := b.deliverCopy(ctx, ev)
	if err != nil {
		return false, err
	}
	b.flow.mirrored.WithLabelValues(ackResult(ack)).Inc()
	if ack.Delivered() {
		b.devices.reached(ev.User) // a device of theirs is reachable (devices.go)
	}
	return true, nil
}

// ackResult is the result label of a legacy device's ack: ok, or refused.
func ackResult(ack legacywire.ChatAck) string {
	if ack.Delivered() {
		return resultOK
	}
	return resultRefused
}
