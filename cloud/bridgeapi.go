package cloud

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// BridgeLive is the bridge's way into and out of the cloud's live-only
// traffic (presence and typing) for users whose home is the overlay.
// Bridge sessions refuse presence and typing frames (PROTOCOL.md, v4) and
// get none: the bridge acts for many users at once, so it publishes and
// listens on the live subjects (core NATS, see presence.go) that it shares
// with the service instead, reaching the sessions on every node exactly as
// a user session's frames do. Deciding who may publish (the side that is
// authoritative for the user) is the bridge's job, not this type's. It
// also writes the bridge's undeliverable reports (PostUndeliverable).
type BridgeLive struct {
	js jetstream.JetStream

	mu sync.Mutex
	st *store // opened on first use: the service may start after the bridge
}

// NewBridgeLive returns a BridgeLive on js, the JetStream context of the
// cloud service's NATS.
func NewBridgeLive(js jetstream.JetStream) *BridgeLive { return &BridgeLive{js: js} }

// store binds to the service's conversation log and member buckets. It
// never creates them: their settings (replicas) are the service's.
func (l *BridgeLive) store(ctx context.Context) (*store, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.st != nil {
		return l.st, nil
	}
	conv, err := l.js.Stream(ctx, convStreamName)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge live: stream %s: %w", convStreamName, err)
	}
	groups, err := l.js.KeyValue(ctx, groupsBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge live: bucket %s: %w", groupsBucket, err)
	}
	member, err := l.js.KeyValue(ctx, memberBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge live: bucket %s: %w", memberBucket, err)
	}
	sends, err := l.js.KeyValue(ctx, sendsBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge live: bucket %s: %w", sendsBucket, err)
	}
	l.st = &store{js: l.js, conv: conv, groups: groups, member: member, sends: sends, files: bindFileStore(l.js)}
	return l.st, nil
}

// PublishTyping sends t, with User, Device, Conv and Typing set by the
// caller, to the sessions of the users in to.
func (l *BridgeLive) PublishTyping(t cloudwire.Typing, to []string) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if t.User == "" {
		return fmt.Errorf("%w: typing without user", errBadRequest)
	}
	return l.publish(t, to)
}

// PublishPresence sends p, with User, Device, State and At set, to the
// sessions of the users who share a conversation with p.User (the same
// fan-out as a device's own presence) and returns how many users that was.
func (l *BridgeLive) PublishPresence(ctx context.Context, p cloudwire.Presence) (int, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	if p.User == "" || p.Device == "" {
		return 0, fmt.Errorf("%w: presence without user or device", errBadRequest)
	}
	st, err := l.store(ctx)
	if err != nil {
		return 0, err
	}
	contacts, err := st.contacts(ctx, p.User)
	if err != nil {
		return 0, err
	}
	return len(contacts), l.publish(p, contacts)
}

func (l *BridgeLive) publish(f cloudwire.Frame, to []string) error {
	b, err := cloudwire.Encode(f)
	if err != nil {
		return err
	}
	nc := l.js.Conn()
	for _, u := range to {
		if err := nc.Publish(livePrefix+subjectToken(u), b); err != nil {
			return fmt.Errorf("cloud: bridge live: publish: %w", err)
		}
	}
	return nil
}

// PostUndeliverable tells the sender of msgID, in their synced history,
// that the bridge gave up on it for recipient to (a legacy-home user: in
// a group, one of its legacy members) for reason
// (cloudwire.Undeliverable*), at at: one cloudwire.KindUndeliverable
// event in the sender's inbox, which every device of theirs gets live or
// at its next sync. It is written once per message and recipient; dup
// reports that it had been written before. A message the service does
// not know, or that was not sent to to, is ErrUnknownMessage.
//
// Like the live traffic it writes through the service's JetStream rather
// than the bridge's session: the report is the bridge's, not something
// a user said, so no session request carries it.
func (l *BridgeLive) PostUndeliverable(ctx context.Context, msgID, to, reason string, at time.Time) (dup bool, err error) {
	st, err := l.store(ctx)
	if err != nil {
		return false, err
	}
	return st.postUndeliverable(ctx, msgID, to, reason, at)
}

// SubscribeLive calls fn with every presence and typing frame the service
// (on any node) sends to a user; user is the recipient, which for
// presence includes the user's own copy (how a cloud user's presence is
// learned). fn runs on NATS's delivery goroutine and must not block.
// Unsubscribe the result when done.
func (l *BridgeLive) SubscribeLive(fn func(user string, f cloudwire.Frame)) (*nats.Subscription, error) {
	sub, err := l.js.Conn().Subscribe(liveAll, func(m *nats.Msg) {
		if m.Header.Get(onlyHeader) != "" {
			return // meant for one session (calls), never a user's live state
		}
		user := untoken(strings.TrimPrefix(m.Subject, livePrefix))
		f, err := cloudwire.Decode(m.Data)
		if err != nil {
			return // the service encoded it: nothing a bridge could fix
		}
		switch f.(type) {
		case cloudwire.Presence, cloudwire.Typing:
			fn(user, f)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("cloud: bridge live: subscribe: %w", err)
	}
	return sub, nil
}
