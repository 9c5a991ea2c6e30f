package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Item kinds, as values of the kind label of gateway_bridge_items_total.
const (
	kindMsg      = "msg"
	kindGroupMsg = "group_msg"
	kindReceipt  = "receipt"
	kindTyping   = "typing"
	kindPresence = "presence"
)

// itemKinds are every kind label value, for series created at zero.
var itemKinds = []string{kindMsg, kindGroupMsg, kindReceipt, kindTyping, kindPresence}

// resultUnsupported counts items a legacy device's chat version cannot carry
// (a receipt for a chat v1 device): they are not sent, by design.
const resultUnsupported = "unsupported"

// idsBucket is the bridge's persistent id map: the cloud conversation of a
// group message it carried to a legacy device ("conv.<msg id>"), so that the
// device's receipt, which names only the message, finds its conversation;
// and how far cumulative cloud receipts have been forwarded to legacy
// senders ("upto.<hash>").
const idsBucket = "ferry_bridge_ids"

// historyPage is how many entries the bridge reads per history request when
// it expands a cumulative receipt into per-message receipts.
const historyPage = 100

// ledger is the bridge's id map and group-name cache.
type ledger struct {
	kv jetstream.KeyValue

	mu     sync.Mutex
	groups map[string]string // group conv → name, learned from events and history
}

func newLedger(ctx context.Context, js jetstream.JetStream, replicas int) (*ledger, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      idsBucket,
		Description: "Ferry bridge: message id to conversation, forwarded receipt watermarks",
		History:     1,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: id map bucket: %w", err)
	}
	return &ledger{kv: kv, groups: map[string]string{}}, nil
}

// rememberConv records that msgID belongs to conv. Message ids are
// [A-Za-z0-9_-], which NATS KV keys allow as they are.
func (l *ledger) rememberConv(ctx context.Context, msgID, conv string) error {
	if _, err := l.kv.Put(ctx, "conv."+msgID, []byte(conv)); err != nil {
		return fmt.Errorf("bridge: remember conversation of %s: %w", msgID, err)
	}
	return nil
}

// convOf returns the conversation the bridge recorded for msgID, or "".
func (l *ledger) convOf(ctx context.Context, msgID string) (string, error) {
	e, err := l.kv.Get(ctx, "conv."+msgID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("bridge: conversation of %s: %w", msgID, err)
	}
	return string(e.Value()), nil
}

func watermarkKey(user, conv, by, status string) string {
	h := sha256.Sum256([]byte(user + "\n" + conv + "\n" + by + "\n" + status))
	return "upto." + hex.EncodeToString(h[:16])
}

func (l *ledger) watermark(ctx context.Context, key string) (uint64, error) {
	e, err := l.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("bridge: read receipt watermark: %w", err)
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}

func (l *ledger) setWatermark(ctx context.Context, key string, v uint64) error {
	if _, err := l.kv.Put(ctx, key, []byte(strconv.FormatUint(v, 10))); err != nil {
		return fmt.Errorf("bridge: save receipt watermark: %w", err)
	}
	return nil
}

// maxGroupNames caps the group-name cache. When a new name would pass it
// the cache starts over: a name dropped is read again from the group's
// history when next needed.
const maxGroupNames = 10000

func (l *ledger) setGroupName(conv, name string) {
	l.mu.Lock()
	if _, ok := l.groups[conv]; !ok && len(l.groups) >= maxGroupNames {
		clear(l.groups)
	}
	l.groups[conv] = name
	l.mu.Unlock()
}

func (l *ledger) groupName(conv string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.groups[conv]
	return n, ok
}

// groupName returns the display name of a group, from the events the bridge
// has seen or, after a restart, from the group's first history entry (its
// creation), read as member.
func (b *Bridge) groupName(ctx context.Context, member, conv string) string {
	if n, ok := b.ledger.groupName(conv); ok {
		return n
	}
	fallback := "group " + conv[:min(len(conv), 9)]
	link, lerr := b.linkAs(ctx, member)
	if lerr != nil {
		return fallback
	}
	hctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	page, err := link.History(hctx, cloudwire.History{As: member, Conv: conv, After: 0, Limit: 1})
	if err != nil || len(page.Msgs) == 0 {
		b.log.Debug("group name", "conv", conv, "err", err)
		return fallback
	}
	first := page.Msgs[0]
	if first.Kind != cloudwire.KindGroup || first.Op != cloudwire.GroupCreate {
		return fallback
	}
	name := first.Name
	if name == "" {
		name = fallback
	}
	b.ledger.setGroupName(conv, name)
	return name
}

// groupText is how a group message reads on a chat v1/v2 device, which has
// no groups: the group's name in brackets, then the text.
func groupText(name, text string) string {
	return "[" + name + "] " + text
}

// onFrame is the bridge's ChatConfig.OnFrame: chat v2 frames from legacy
// devices to cloud-home users. A read or delivered receipt becomes a cloud
// receipt acting for the reader; one from a cloud-home reader's own legacy
// device (for a mirror copy) is the reader's, from that device
// (Receipt.Device, v11): the cloud takes it once per message (its inbox
// ids), and the bridge's feed carries no receipt to a cloud-home user's
// legacy devices, so it is not echoed back. Typing, presence and presence
// subscriptions go to liveFromLegacy (live.go).
func (b *Bridge) onFrame(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	refuse := func(code, text string) legacywire.ChatAck {
		return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: code, Error: text}
	}
	if f.Type != legacywire.FrameReceipt {
		return b.liveFromLegacy(ctx, from, f)
	}
	r := *f.Receipt
	count := func(result string) {
		b.metrics.receipts.WithLabelValues(dirLegacyToCloud, result).Inc()
		b.metrics.items.WithLabelValues(dirLegacyToCloud, kindReceipt, result).Inc()
	}
	if u, ok := b.cfg.State.Get(r.Sender); !ok || !u.CloudHome() {
		b.decide(kindReceipt, pathEscalation)
		count(resultRefused)
		return refuse(CodeNotHere, "the message's sender is not served by the bridge; look the user up again")
	}
	if r.Status != legacywire.ReceiptDelivered && r.Status != legacywire.ReceiptRead {
		count(resultRefused)
		return refuse(legacywire.CodeBadFrame, "unknown receipt status")
	}
	// A cloud-home reader's own legacy device (a mirror copy it showed,
	// mirror.go) gives the receipt as one of the reader's devices.
	device, refusal := b.ownDevice(from, f.ID, kindReceipt)
	if refusal != nil {
		count(resultRefused)
		return *refusal
	}
	link, lerr := b.linkAs(ctx, r.Reader)
	if lerr != nil {
		count(resultError)
		return refuse(CodeUnavailable, linkRefusal(lerr))
	}
	conv, err := b.ledger.convOf(ctx, r.MsgID)
	if err != nil {
		count(resultError)
		return refuse(CodeUnavailable, "id map unavailable")
	}
	if conv == "" {
		conv = cloudwire.DirectConversationID(r.Reader, r.Sender)
	}
	status := cloudwire.StatusDelivered
	if r.Status == legacywire.ReceiptRead {
		status = cloudwire.StatusRead
	}
	rctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	if err := link.Receipt(rctx, cloudwire.Receipt{As: r.Reader, Device: device, Conv: conv, MsgID: r.MsgID, Status: status}); err != nil {
		b.log.Warn("legacy receipt to cloud", "msg_id", r.MsgID, "err", err)
		if device != "" && refusedForGood(err) {
			// The cloud will never take it (a message it does not hold,
			// one not to this user): a retry would not help.
			count(resultRefused)
			b.own.items.WithLabelValues(kindReceipt, resultRefused).Inc()
			return refuse(legacywire.CodeBadRequest, "the cloud does not take this receipt")
		}
		count(resultError)
		if device != "" {
			b.own.items.WithLabelValues(kindReceipt, resultError).Inc()
		}
		return refuse(CodeUnavailable, "cloud did not take the receipt")
	}
	count(resultOK)
	if device != "" {
		b.own.items.WithLabelValues(kindReceipt, resultOK).Inc()
		b.devices.seen(from)
	}
	b.decide(kindReceipt, pathInterop)
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

// receiptToLegacy forwards a cloud receipt that a cloud user gave for a
// legacy-home sender's message to the sender's chat v2 devices. Chat v1
// devices cannot show receipts and get nothing (counted as unsupported).
// Receipts are best effort: one that no device takes is counted, not queued,
// and a failure never stops the cloud feed.
func (b *Bridge) receiptToLegacy(ctx context.Context, ev cloudwire.Event) error {
	if ev.By == "" || ev.By == ev.User {
		return nil // the legacy user's own receipt, given through the bridge
	}
	switch ev.Kind {
	case cloudwire.KindReceipt:
		if ev.From != "" && ev.From != ev.User {
			return nil // a receipt of a message the legacy user did not send
		}
		b.sendReceipt(ctx, ev.User, ev.By, ev.MsgID, ev.Status)
		return nil
	case cloudwire.KindReceiptUpTo:
		if err := b.expandUpTo(ctx, ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// Never stall the feed on a receipt: count it and go on.
			b.metrics.receipts.WithLabelValues(dirCloudToLegacy, resultError).Inc()
			b.metrics.items.WithLabelValues(dirCloudToLegacy, kindReceipt, resultError).Inc()
			b.log.Warn("cumulative receipt to legacy", "conv", ev.Conv, "err", err)
		}
	}
	return nil
}

// expandUpTo turns "By has read Conv up to N" into per-message receipts for
// the messages the legacy user sent there that were not receipted before,
// reading the conversation's history as the legacy user. How far it got is
// kept in the id map, so a replayed event sends nothing twice.
func (b *Bridge) expandUpTo(ctx context.Context, ev cloudwire.Event) error {
	link, err := b.linkAs(ctx, ev.User)
	if err != nil {
		return err
	}
	key := watermarkKey(ev.User, ev.Conv, ev.By, ev.Status)
	from, err := b.ledger.watermark(ctx, key)
	if err != nil {
		return err
	}
	// The sender's devices are looked up once, and the first receipt no
	// device takes ends the sending: the rest are counted as not sent, so
	// an unreachable device costs one DeliveryTimeout, not one per message.
	var targets []peer.AddrInfo
	looked, failed := false, false
	for from < ev.UpTo {
		hctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
		page, err := link.History(hctx, cloudwire.History{As: ev.User, Conv: ev.Conv, After: from, Limit: historyPage})
		cancel()
		if err != nil {
			return fmt.Errorf("history of %s: %w", ev.Conv, err)
		}
		if len(page.Msgs) == 0 {
			break
		}
		for _, m := range page.Msgs {
			if m.Seq > ev.UpTo {
				break
			}
			if m.Kind == cloudwire.KindMsg && m.From == ev.User {
				switch {
				case failed:
					b.countReceipt(resultError)
				default:
					if !looked {
						targets, looked = b.receiptTargets(ctx, ev.User), true
					}
					failed = b.sendReceiptTo(ctx, targets, ev.User, ev.By, m.MsgID, ev.Status) == resultError
				}
			}
			from = m.Seq
		}
		if !page.More {
			break
		}
	}
	if from > ev.UpTo {
		from = ev.UpTo
	}
	return b.ledger.setWatermark(ctx, key, from)
}

// sendReceipt sends one receipt frame to each of sender's devices.
func (b *Bridge) sendReceipt(ctx context.Context, sender, reader, msgID, status string) {
	b.sendReceiptTo(ctx, b.receiptTargets(ctx, sender), sender, reader, msgID, status)
}

// receiptTargets looks up the devices of sender that receipts go to; none
// while sender's devices are unreachable (messages wait for them in the
// outbox: do not hold the feed up trying) or the lookup fails.
func (b *Bridge) receiptTargets(ctx context.Context, sender string) []peer.AddrInfo {
	if b.outbox.pending(sender) {
		return nil
	}
	return b.legacyTargets(ctx, sender)
}

// legacyTargets looks up the live devices of a legacy-home user; none when
// the lookup fails (logged at debug: live items are best effort).
func (b *Bridge) legacyTargets(ctx context.Context, user string) []peer.AddrInfo {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	look, err := b.dir.Lookup(ctx, user)
	if err != nil {
		b.log.Debug("legacy targets", "err", err)
		return nil
	}
	targets, err := legacy.Lookup{Devices: look.Devices}.Targets()
	if err != nil {
		return nil
	}
	return targets
}

// countReceipt counts one receipt to a legacy sender with result.
func (b *Bridge) countReceipt(result string) {
	b.metrics.receipts.WithLabelValues(dirCloudToLegacy, result).Inc()
	b.metrics.items.WithLabelValues(dirCloudToLegacy, kindReceipt, result).Inc()
}

// sendReceiptTo sends one receipt frame to each of targets and returns the
// result it counted: resultOK, resultUnsupported or resultError.
func (b *Bridge) sendReceiptTo(ctx context.Context, targets []peer.AddrInfo, sender, reader, msgID, status string) string {
	result := b.deliverReceipt(ctx, targets, sender, reader, msgID, status)
	b.countReceipt(result)
	b.decide(kindReceipt, pathInterop)
	return result
}

func (b *Bridge) deliverReceipt(ctx context.Context, targets []peer.AddrInfo, sender, reader, msgID, status string) string {
	if len(targets) == 0 {
		return resultError
	}
	f := legacywire.ChatFrame{Type: legacywire.FrameReceipt, ID: uuid.Must(uuid.NewV7()).String(), Receipt: &legacywire.Receipt{
		MsgID: msgID, Reader: reader, Sender: sender, Status: status, At: b.now().UTC(),
	}}
	return b.sendFrameTo(ctx, targets, f)
}

// sendFrameTo sends one chat v2 frame to each of targets and returns
// resultOK when a device took it, resultUnsupported when the only devices
// found speak chat v1 (which never get a v2 frame), else resultError.
func (b *Bridge) sendFrameTo(ctx context.Context, targets []peer.AddrInfo, f legacywire.ChatFrame) string {
	if len(targets) == 0 {
		return resultError
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	delivered, unsupported := 0, 0
	for _, t := range targets {
		ack, _, err := legacy.SendChatFrame(ctx, b.cfg.Host, b.cert, t, legacy.LatestChatVersion, f)
		switch {
		case errors.Is(err, legacy.ErrNotSupported):
			unsupported++
		case err != nil:
			b.log.Debug("frame to legacy device", "type", f.Type, "err", err)
		case ack.Status == legacywire.StatusDelivered:
			delivered++
		}
	}
	switch {
	case delivered > 0:
		return resultOK
	case unsupported > 0:
		return resultUnsupported
	default:
		return resultError
	}
}
