package legacy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// SyncRevocations fetches the supernode's revocations into the device's
// list, so that its chat handler refuses revoked peers. It returns how many
// were new. Revocations that do not verify are skipped (and counted in the
// error), never trusted.
func (d *Device) SyncRevocations(ctx context.Context) (int, error) {
	revs, err := d.dir.Revocations(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, r := range revs {
		added, err := d.revoked.Add(r, time.Now())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if added {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// Revocations returns the device's revocation list.
func (d *Device) Revocations() *Revocations { return d.revoked }

// SendReceipt tells sender's devices that this device's user has the message
// msgID (status legacywire.ReceiptDelivered) or showed it (ReceiptRead).
// See Signal for the result.
func (d *Device) SendReceipt(ctx context.Context, sender, msgID, status string) (int, error) {
	return d.Signal(ctx, sender, legacywire.ChatFrame{Type: legacywire.FrameReceipt, Receipt: &legacywire.Receipt{
		MsgID: msgID, Reader: d.User(), Sender: sender, Status: status, At: nowMilli(),
	}})
}

// SendTyping tells to's devices that this device's user is (active) or
// stopped typing to them. See Signal for the result.
func (d *Device) SendTyping(ctx context.Context, to string, active bool) (int, error) {
	return d.Signal(ctx, to, legacywire.ChatFrame{Type: legacywire.FrameTyping, Typing: &legacywire.Typing{
		From: d.User(), To: to, Active: active, At: nowMilli(),
	}})
}

// SubscribePresence asks every device of user to publish its presence to
// this device. See Signal for the result.
func (d *Device) SubscribePresence(ctx context.Context, user string) (int, error) {
	return d.Signal(ctx, user, legacywire.ChatFrame{Type: legacywire.FrameSubscribe, Subscribe: &legacywire.Subscribe{User: user}})
}

// PublishPresence sends the device user's presence to every subscribed
// device and returns how many acked it. A subscriber that refuses or cannot
// be reached is dropped.
func (d *Device) PublishPresence(ctx context.Context, status string) (int, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return 0, err
	}
	f := legacywire.ChatFrame{Type: legacywire.FramePresence, ID: id.String(), Presence: &legacywire.Presence{
		User: d.User(), Status: status, At: nowMilli(),
	}}
	d.mu.Lock()
	subs := make([]peer.ID, 0, len(d.subscribers))
	for p := range d.subscribers {
		subs = append(subs, p)
	}
	d.mu.Unlock()
	n := 0
	var errs []error
	for _, p := range subs {
		ai := peer.AddrInfo{ID: p, Addrs: d.cfg.Host.Peerstore().Addrs(p)}
		ack, _, err := SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, ai, d.cfg.MaxChatVersion, f)
		if err == nil && ack.Delivered() {
			n++
			continue
		}
		if err == nil {
			err = &RefusedError{Code: ack.Code, Message: ack.Error}
		}
		errs = append(errs, err)
		d.mu.Lock()
		delete(d.subscribers, p)
		d.mu.Unlock()
	}
	return n, errors.Join(errs...)
}

// Signal sends a chat v2 frame (a receipt, typing indication or presence
// subscription; its ID is assigned here) to every device of user and
// returns how many acked it. Devices that speak only chat v1 are skipped:
// when no device took the frame and some were v1-only, the error matches
// ErrNotSupported, and when none was found at all, ErrNoRoute.
func (d *Device) Signal(ctx context.Context, user string, f legacywire.ChatFrame) (int, error) {
	if d.cfg.MaxChatVersion == 1 {
		return 0, fmt.Errorf("%w: this device speaks chat v1 only", ErrNotSupported)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return 0, err
	}
	f.ID = id.String()
	targets, err := d.targetsOf(ctx, user)
	if err != nil {
		return 0, err
	}
	n, tried := 0, 0
	var errs []error
	for _, t := range targets {
		tried++
		ack, _, err := SendChatFrame(ctx, d.cfg.Host, d.cfg.Cert, t, d.cfg.MaxChatVersion, f)
		switch {
		case err != nil:
			errs = append(errs, err)
		case ack.Delivered():
			n++
		default:
			errs = append(errs, &RefusedError{Code: ack.Code, Message: ack.Error})
		}
	}
	switch {
	case tried == 0:
		return 0, fmt.Errorf("%w: %s", ErrNoRoute, user)
	case n == 0:
		return 0, errors.Join(errs...)
	}
	return n, nil
}

// targetsOf looks user up and returns the peers to send to (Lookup.Targets),
// this device left out.
func (d *Device) targetsOf(ctx context.Context, user string) ([]peer.AddrInfo, error) {
	look, err := d.dir.Lookup(ctx, user)
	if err != nil {
		return nil, err
	}
	targets, err := look.Targets()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(targets, func(t peer.AddrInfo) bool { return t.ID == d.cfg.Host.ID() }), nil
}

// onFrame is the device's ChatConfig.OnFrame: the chat handler has already
// checked that the frame speaks only for the sender's user.
func (d *Device) onFrame(_ context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	wrong := func(to string) legacywire.ChatAck {
		return refusedAck(f.ID, legacywire.CodeWrongRecipient, fmt.Sprintf("this device serves %q, not %q", d.User(), to))
	}
	switch f.Type {
	case legacywire.FrameReceipt:
		if f.Receipt.Sender != d.User() {
			return wrong(f.Receipt.Sender)
		}
		if d.cfg.OnReceipt != nil {
			d.cfg.OnReceipt(*f.Receipt)
		}
	case legacywire.FrameTyping:
		if f.Typing.To != d.User() {
			return wrong(f.Typing.To)
		}
		if d.cfg.OnTyping != nil {
			d.cfg.OnTyping(*f.Typing)
		}
	case legacywire.FramePresence:
		if d.cfg.OnPresence != nil {
			d.cfg.OnPresence(*f.Presence)
		}
	case legacywire.FrameSubscribe:
		if f.Subscribe.User != d.User() {
			return wrong(f.Subscribe.User)
		}
		pid, err := peer.Decode(from.PeerID)
		if err != nil {
			return refusedAck(f.ID, legacywire.CodeBadCertificate, "certificate peer id does not parse")
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if f.Subscribe.Unsubscribe {
			delete(d.subscribers, pid)
		} else {
			if _, ok := d.subscribers[pid]; !ok && len(d.subscribers) >= MaxPresenceSubscribers {
				return refusedAck(f.ID, legacywire.CodeUnavailable, "too many presence subscribers")
			}
			d.subscribers[pid] = from.User
		}
	case legacywire.FrameFileOffer, legacywire.FrameFileDecline:
		return d.onFileFrame(from, f)
	case legacywire.FrameCallInvite, legacywire.FrameCallRinging, legacywire.FrameCallAccept, legacywire.FrameCallReject,
		legacywire.FrameCallCancel, legacywire.FrameCallAnsweredElsewhere, legacywire.FrameCallHangUp:
		return d.onCallFrame(from, f)
	default:
		return refusedAck(f.ID, legacywire.CodeUnsupported, f.Type+" is not served here")
	}
	return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
}

func nowMilli() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }
