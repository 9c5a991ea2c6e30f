package cloud

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Presence and typing are live only: they travel on core NATS subjects
// (cloud.live.<user token>), which every node subscribes to, and are never
// stored or replayed.
const (
	livePrefix = "cloud.live."
	liveAll    = livePrefix + ">"
	// memberBucket indexes conversations by member: key
	// "<user token>.<conv token>", so that a presence change finds the
	// people who share a conversation with its user.
	memberBucket = "cloud_member"
	// contactsTTL is how long a session reuses the contacts it looked up.
	contactsTTL = 30 * time.Second
	// maxContacts bounds the users one presence change is sent to.
	maxContacts = 4096
)

// Defaults for the presence rate limit.
const (
	DefaultPresenceRate  = 2.0
	DefaultPresenceBurst = 10
)

// indexMembers records that users are members of conv.
func (st *store) indexMembers(ctx context.Context, conv string, users []string) error {
	for _, u := range users {
		if _, err := st.member.Put(ctx, subjectToken(u)+"."+subjectToken(conv), nil); err != nil {
			return fmt.Errorf("cloud: index member: %w", err)
		}
	}
	return nil
}

// unindexMembers forgets that users are members of conv.
func (st *store) unindexMembers(ctx context.Context, conv string, users []string) error {
	for _, u := range users {
		err := st.member.Delete(ctx, subjectToken(u)+"."+subjectToken(conv))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("cloud: unindex member: %w", err)
		}
	}
	return nil
}

// contacts returns the users who share a conversation with user (user
// excluded), at most maxContacts of them.
func (st *store) contacts(ctx context.Context, user string) ([]string, error) {
	prefix := subjectToken(user) + "."
	lister, err := st.member.ListKeysFiltered(ctx, prefix+"*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("cloud: list conversations: %w", err)
	}
	var convs []string
	for k := range lister.Keys() {
		convs = append(convs, untoken(strings.TrimPrefix(k, prefix)))
	}
	seen := map[string]bool{user: true}
	var out []string
	for _, conv := range convs {
		members, err := st.members(ctx, conv)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if !seen[m] && len(out) < maxContacts {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// untoken reverses subjectToken.
func untoken(tok string) string {
	if !strings.Contains(tok, "=") {
		return tok
	}
	b := make([]byte, 0, len(tok))
	for i := 0; i < len(tok); i++ {
		if tok[i] == '=' && i+2 < len(tok) {
			var c byte
			if _, err := fmt.Sscanf(tok[i+1:i+3], "%02X", &c); err == nil {
				b = append(b, c)
				i += 2
				continue
			}
		}
		b = append(b, tok[i])
	}
	return string(b)
}

// originHeader names the session a live frame comes from, which does not
// get its own frame back.
const originHeader = "Ferry-Session"

// onlyHeader, when set, names the one session a live frame is for.
const onlyHeader = "Ferry-Only"

// publishLive sends one encoded frame to the sessions of users, on every
// node, except the session exclude, or only to the session only when it is
// not empty.
func (s *Service) publishLive(users []string, frame []byte, exclude, only string) error {
	nc := s.cfg.JS.Conn()
	for _, u := range users {
		m := &nats.Msg{Subject: livePrefix + subjectToken(u), Data: frame, Header: nats.Header{}}
		if exclude != "" {
			m.Header.Set(originHeader, exclude)
		}
		if only != "" {
			m.Header.Set(onlyHeader, only)
		}
		if err := nc.PublishMsg(m); err != nil {
			return fmt.Errorf("cloud: publish live: %w", err)
		}
	}
	return nil
}

// subscribeLive subscribes this node to every live subject and dispatches
// what arrives to the hub. Unsubscribe the result when done.
func (s *Service) subscribeLive() (*nats.Subscription, error) {
	sub, err := s.cfg.JS.Conn().Subscribe(liveAll, func(m *nats.Msg) {
		s.hub.dispatchEphemeral(strings.TrimPrefix(m.Subject, livePrefix), m.Data, m.Header.Get(originHeader), m.Header.Get(onlyHeader))
	})
	if err != nil {
		return nil, fmt.Errorf("cloud: subscribe live: %w", err)
	}
	return sub, nil
}

// tokenBucket limits a session's presence and typing frames. It is used
// by the session's reader goroutine only.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func (b *tokenBucket) allow(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// sessionContacts returns the session user's contacts, looked up at most
// every contactsTTL. Called from the reader goroutine (and at the end).
func (s *session) sessionContacts(ctx context.Context) ([]string, error) {
	now := time.Now()
	if s.contactsAt.IsZero() || now.Sub(s.contactsAt) > contactsTTL {
		c, err := s.svc.store.contacts(ctx, s.user)
		if err != nil {
			return nil, err
		}
		s.contacts, s.contactsAt = c, now
	}
	return s.contacts, nil
}

// announce tells the user's contacts and other devices this device's
// presence.
func (s *session) announce(ctx context.Context, state string) error {
	contacts, err := s.sessionContacts(ctx)
	if err != nil {
		return err
	}
	b, err := cloudwire.Encode(cloudwire.Presence{User: s.user, Device: s.device, State: state, At: s.svc.cfg.Now()})
	if err != nil {
		return err
	}
	return s.svc.publishLive(append([]string{s.user}, contacts...), b, s.id, "")
}

func (s *session) handlePresence(f cloudwire.Presence) {
	if f.State == cloudwire.PresenceOffline || f.User != "" || f.Device != "" {
		s.pushError("", cloudwire.CodeBadRequest, "presence: send state active or idle only")
		return
	}
	if s.bridge {
		s.pushError("", cloudwire.CodeForbidden, "presence: not supported on bridge sessions")
		return
	}
	if !s.limit.allow(time.Now()) {
		s.pushError("", cloudwire.CodeRateLimited, "presence: too many presence and typing frames")
		return
	}
	if f.State == cloudwire.PresenceActive {
		s.touch(true)
	}
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	if err := s.announce(ctx, f.State); err != nil {
		s.pushError("", cloudwire.CodeInternal, s.publicMessage(cloudwire.CodeInternal, err))
	}
}

func (s *session) handleTyping(f cloudwire.Typing) {
	if f.User != "" || f.Device != "" {
		s.pushError("", cloudwire.CodeBadRequest, "typing: send conv and typing only")
		return
	}
	if s.bridge {
		s.pushError("", cloudwire.CodeForbidden, "typing: not supported on bridge sessions")
		return
	}
	if !s.limit.allow(time.Now()) {
		s.pushError("", cloudwire.CodeRateLimited, "typing: too many presence and typing frames")
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	members, err := s.svc.store.members(ctx, f.Conv)
	if err == nil && !slices.Contains(members, s.user) {
		err = fmt.Errorf("%w: %s is not a member of %s", errForbidden, s.user, f.Conv)
	}
	var b []byte
	if err == nil {
		f.User, f.Device = s.user, s.device
		b, err = cloudwire.Encode(f)
	}
	if err == nil {
		err = s.svc.publishLive(members, b, s.id, "")
	}
	if err != nil {
		code := errorCode(err)
		s.pushError("", code, s.publicMessage(code, err))
	}
}
