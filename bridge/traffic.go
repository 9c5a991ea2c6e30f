package bridge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Refusal codes the bridge puts in a chat ack. A legacy client retries
// "unavailable" later and looks the user up again after "not_here".
const (
	CodeNotHere     = legacy.CodeNotHere
	CodeUnavailable = "unavailable"
)

// Directions and results, as metric label values.
const (
	dirLegacyToCloud = "legacy_to_cloud"
	dirCloudToLegacy = "cloud_to_legacy"

	resultOK            = "ok"
	resultQueued        = "queued"
	resultRefused       = "refused"
	resultError         = "error"
	resultUndeliverable = "undeliverable"
)

// Link reconnection backoff and the link's event buffer.
const (
	linkBackoffMin  = 100 * time.Millisecond
	linkBackoffMax  = 5 * time.Second
	linkEventBuffer = 8192
)

// errNoLink is returned while the cloud link is down.
var errNoLink = errors.New("bridge: cloud link is down")

// fromLegacy handles a chat message a legacy device sent to the bridge,
// because the recipient's route record points here. The device is
// acknowledged only after the cloud has stored the message; any failure is a
// refusal the device can retry with the same message id.
func (b *Bridge) fromLegacy(ctx context.Context, from legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck {
	start := b.now()
	refuse := func(code, text, result string) legacywire.ChatAck {
		b.metrics.messages.WithLabelValues(dirLegacyToCloud, result).Inc()
		b.metrics.items.WithLabelValues(dirLegacyToCloud, kindMsg, result).Inc()
		return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: code, Error: text}
	}
	u, ok := b.cfg.State.Get(msg.To)
	if !ok || !u.CloudHome() {
		b.decide(kindMsg, pathEscalation)
		return refuse(CodeNotHere, "recipient is not served by the bridge; look the user up again", resultRefused)
	}
	send := cloudwire.Send{To: msg.To, MsgID: msg.ID, Text: msg.Text}
	if no := b.sendAs(from, &send, kindMsg); no != nil {
		b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultRefused).Inc()
		b.metrics.items.WithLabelValues(dirLegacyToCloud, kindMsg, resultRefused).Inc()
		return *no
	}
	if send.Device != "" {
		b.devices.seen(from) // it just reached the bridge: show it
	}
	// A text waits for the files its sender offered before it (files.go),
	// so that the cloud has them in the order they were sent, whether the
	// text then goes to the cloud or into a flipping recipient's hold.
	wctx, wcancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	err := b.files.waitSender(wctx, msg.From)
	wcancel()
	if err != nil {
		return refuse(CodeUnavailable, "an earlier file of yours is still on its way; retry", resultError)
	}
	if b.holding(msg.To) {
		// The recipient is flipping, or what was held for them has not
		// drained yet: queue behind it (flip.go) instead of refusing.
		b.decide(kindMsg, pathEscalation)
		return b.holdFromLegacy(ctx, msg, send.Device)
	}
	b.decide(kindMsg, pathInterop)
	link, lerr := b.linkAs(ctx, msg.From)
	if lerr != nil {
		return refuse(CodeUnavailable, linkRefusal(lerr), resultError)
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	if _, err := link.Send(ctx, send); err != nil {
		b.log.Warn("legacy to cloud", "msg_id", msg.ID, "err", err)
		if send.Device != "" {
			b.own.items.WithLabelValues(kindMsg, resultError).Inc()
		}
		return refuse(CodeUnavailable, "cloud did not store the message", resultError)
	}
	if send.Device != "" {
		b.own.items.WithLabelValues(kindMsg, resultOK).Inc()
	}
	b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultOK).Inc()
	b.metrics.items.WithLabelValues(dirLegacyToCloud, kindMsg, resultOK).Inc()
	b.metrics.latency.WithLabelValues(dirLegacyToCloud).Observe(b.now().Sub(start).Seconds())
	b.live.watch(msg.From)
	return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusDelivered}
}

// runLink keeps one cloud link of the pool up: it dials (the feed link
// with the stored cursor, handling the feed in order) and reconnects with
// backoff when the link drops. Each link has its own backoff and jitter,
// so the links of one bridge do not redial in step either.
func (b *Bridge) runLink(ctx context.Context, l *cloudLink) error {
	backoff := linkBackoffMin
	for {
		err := b.serveLink(ctx, l)
		if ctx.Err() != nil {
			return nil
		}
		if l.state.status().State == LinkConnected {
			backoff = linkBackoffMin // a link that came up starts over
		}
		l.state.down(err)
		if badCredentials(err) {
			// Retrying fast cannot fix a refused token; retrying at all
			// lets a rotated cloud key or token take effect.
			backoff = linkBackoffMax
		}
		// Full jitter: after a cloud restart the links of many bridges do
		// not come back in step.
		wait := time.Duration(rand.Int64N(int64(backoff)) + 1)
		b.log.Warn("cloud link down", "link", l.index, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, linkBackoffMax)
	}
}

// serveLink runs one session of link l: the feed link serves the feed
// until the session ends; a request-only link (hello no_feed) waits for
// its end.
func (b *Bridge) serveLink(ctx context.Context, l *cloudLink) error {
	hello := cloudwire.Hello{
		Device:        "bridge-" + b.cfg.Host.ID().ShortString(),
		Platform:      "bridge",
		ClientVersion: b.cfg.ClientVersion,
	}
	events := linkEventBuffer
	if l.feed {
		hello.Cursor = b.cursor.load()
	} else {
		hello.Device += "-" + strconv.Itoa(l.index)
		hello.NoFeed, events = true, 1
	}
	dctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	c, err := cloud.Dial(dctx, cloud.ClientConfig{
		URL: b.cfg.CloudURL, Token: b.cfg.CloudToken, Hello: hello,
		Logger: b.log, EventBuffer: events,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("dial cloud: %w", err)
	}
	defer c.Close()
	b.setLink(l, c)
	defer b.setLink(l, nil)
	l.state.set(LinkConnected, nil)
	if !l.feed {
		b.log.Info("cloud link up", "link", l.index)
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return c.Err()
		}
	}
	cursor := b.cursor.load()
	b.log.Info("cloud link up", "link", l.index, "cursor", cursor)
	// On a failed event the cursor stays before it: the next link resumes
	// there (feed.go).
	closed, err := b.feed.serve(ctx, cursor, c.Events())
	if closed && err == nil {
		return c.Err()
	}
	return err
}

// handleEvent carries one cloud inbox event to the overlay when its owner's
// inbound home is the overlay. Everything else (cloud users' own inboxes, a
// legacy user's copy of what they sent, receipts chat v1 cannot show) stays
// in the cloud. A message that cannot be delivered now goes to the outbox,
// as does every message for a recipient who already has some waiting there;
// an error means the event is not safely handled and the feed must stop.
//
// The feed (feed.go) calls it on one worker per inbox owner, in the feed's
// order for that owner; a group's name was kept as its event was read.
func (b *Bridge) handleEvent(ctx context.Context, ev cloudwire.Event) error {
	if u, ok := b.cfg.State.Get(ev.User); ok && u.CloudHome() {
		if ev.Kind == cloudwire.KindMsg && ev.From != ev.User && b.live.cloudHome(ev.From) {
			b.decide(msgKind(ev), pathNative) // a legacy sender's was counted as it crossed
		}
		return b.mirrorEvent(ctx, u, ev)
	}
	switch ev.Kind {
	case cloudwire.KindReceipt, cloudwire.KindReceiptUpTo:
		return b.receiptToLegacy(ctx, ev)
	case cloudwire.KindSystem:
		return b.noteToLegacy(ctx, ev)
	}
	if ev.Kind != cloudwire.KindMsg || ev.From == ev.User {
		return nil
	}
	if copied, err := b.shadow.suppress(ctx, ev); copied || err != nil {
		return err // a shadow copy: delivered natively on the overlay
	}
	if !b.queueFirst(ev.User) {
		done, err := b.carry(ctx, ev)
		if done {
			b.decide(msgKind(ev), pathInterop)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Debug("recipient unreachable; queued", "msg_id", ev.MsgID, "err", err)
	}
	if err := b.outbox.add(ctx, ev); err != nil {
		return err
	}
	b.decide(msgKind(ev), pathEscalation)
	b.metrics.messages.WithLabelValues(dirCloudToLegacy, resultQueued).Inc()
	b.metrics.items.WithLabelValues(dirCloudToLegacy, msgKind(ev), resultQueued).Inc()
	return nil
}

// queueFirst reports whether a cloud event for user goes to the outbox
// without a delivery attempt: something waits there for user already (it
// must go first), or user's device is so slow that events pile up behind
// the current one in the feed (feed.go), where the outbox's retries keep
// them instead of the feed.
func (b *Bridge) queueFirst(user string) bool {
	return b.outbox.pending(user) || b.feed.backlogged(user)
}

// msgKind is the kind label of a cloud message event.
func msgKind(ev cloudwire.Event) string {
	if cloudwire.IsGroupID(ev.Conv) {
		return kindGroupMsg
	}
	return kindMsg
}

// carry makes one attempt to deliver a cloud message to one of the
// recipient's legacy devices and, once a device has acknowledged it, turns
// the ack into a delivery receipt in the cloud. done is true when the message
// needs no further attempt: delivered, or refused by the device for good.
func (b *Bridge) carry(ctx context.Context, ev cloudwire.Event) (done bool, err error) {
	start := b.now()
	kind := msgKind(ev)
	ack, err := b.deliverCopy(ctx, ev)
	if err != nil {
		return false, err
	}
	if ack.Status != legacywire.StatusDelivered {
		b.metrics.messages.WithLabelValues(dirCloudToLegacy, resultRefused).Inc()
		b.metrics.items.WithLabelValues(dirCloudToLegacy, kind, resultRefused).Inc()
		b.log.Warn("legacy device refused", "msg_id", ev.MsgID, "code", ack.Code)
		return true, nil
	}
	b.metrics.messages.WithLabelValues(dirCloudToLegacy, resultOK).Inc()
	b.metrics.items.WithLabelValues(dirCloudToLegacy, kind, resultOK).Inc()
	b.metrics.latency.WithLabelValues(dirCloudToLegacy).Observe(b.now().Sub(start).Seconds())
	b.live.watch(ev.User)

	link, lerr := b.linkAs(ctx, ev.User)
	if lerr != nil {
		b.metrics.receipts.WithLabelValues(dirLegacyToCloud, resultError).Inc()
		b.log.Warn("delivery receipt lost", "msg_id", ev.MsgID, "err", lerr)
		return true, nil
	}
	rctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	err = link.Receipt(rctx, cloudwire.Receipt{As: ev.User, Conv: ev.Conv, MsgID: ev.MsgID, Status: cloudwire.StatusDelivered})
	b.metrics.receipts.WithLabelValues(dirLegacyToCloud, resultOf(err)).Inc()
	if err != nil {
		b.log.Warn("delivery receipt", "msg_id", ev.MsgID, "err", err)
	}
	return true, nil
}

// legacyCopy is the chat message a cloud message event becomes on the
// recipient's legacy devices. Chat v1 and v2 have no groups: a group
// message keeps its id and sender, and its text says which group it
// belongs to; the id map lets the device's receipt find the group again.
func (b *Bridge) legacyCopy(ctx context.Context, ev cloudwire.Event) (legacywire.ChatMessage, error) {
	msg := legacywire.ChatMessage{ID: ev.MsgID, From: ev.From, To: ev.User, Text: ev.Text, SentAt: ev.At}
	if msgKind(ev) == kindGroupMsg {
		msg.Text = groupText(b.groupName(ctx, ev.User, ev.Conv), ev.Text)
		if err := b.ledger.rememberConv(ctx, ev.MsgID, ev.Conv); err != nil {
			return msg, err
		}
	}
	return msg, nil
}

// deliverCopy makes one attempt to hand ev's legacyCopy to one of the
// recipient's legacy devices.
func (b *Bridge) deliverCopy(ctx context.Context, ev cloudwire.Event) (legacywire.ChatAck, error) {
	if ev.File != nil { // an offer or a notice with a link (files.go)
		return b.files.deliverFile(ctx, ev)
	}
	msg, err := b.legacyCopy(ctx, ev)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	return b.deliverOnce(ctx, msg)
}

func (b *Bridge) deliverOnce(ctx context.Context, msg legacywire.ChatMessage) (legacywire.ChatAck, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	targets, err := b.devicesOf(ctx, msg.To)
	if err != nil {
		return legacywire.ChatAck{}, err
	}
	var last error
	for _, t := range targets {
		ack, err := legacy.SendChat(ctx, b.cfg.Host, b.cert, t, msg)
		if err == nil && ack.Code == legacywire.CodeRateLimited {
			// The device's abuse limit is pacing the bridge: back-pressure,
			// not a refusal for good. The caller keeps the message (the
			// outbox retries it later, in order) instead of dropping it.
			err = fmt.Errorf("device %s rate-limited the bridge: %s", t.ID, ack.Error)
		}
		if err == nil {
			return ack, nil
		}
		last = err
	}
	return legacywire.ChatAck{}, last
}

// devicesOf looks up the live devices of a legacy-home user; an error when
// there is none. The user is legacy-home, so its devices are the targets
// even if a stale route record (pointing here) has not expired yet.
func (b *Bridge) devicesOf(ctx context.Context, user string) ([]peer.AddrInfo, error) {
	look, err := b.dir.Lookup(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", user, err)
	}
	targets, err := legacy.Lookup{Devices: look.Devices}.Targets()
	if err != nil {
		return nil, fmt.Errorf("devices of %s: %w", user, err)
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("no live device for %s", user)
	}
	return targets, nil
}
