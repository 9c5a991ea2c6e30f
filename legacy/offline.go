package legacy

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Offline store defaults (SupernodeConfig.OfflineTTL, MaxOfflinePerUser).
const (
	// DefaultOfflineTTL is how long a supernode holds a message for a
	// recipient with no live device.
	DefaultOfflineTTL = 72 * time.Hour
	// DefaultMaxOfflinePerUser bounds one recipient's offline queue.
	DefaultMaxOfflinePerUser = 200
)

// heldMessage is a message in a recipient's offline queue.
type heldMessage struct {
	msg     legacywire.ChatMessage
	expires time.Time
}

// store holds msg for its recipient (OpStore). The caller checked the
// sender's certificate.
func (s *Supernode) store(remote peer.ID, cert legacywire.Certificate, msg *legacywire.ChatMessage) legacywire.DirResponse {
	switch {
	case msg == nil:
		return refusal(legacywire.CodeBadRequest, "store op without a message")
	case msg.ID == "" || len(msg.ID) > MaxMessageIDLen || msg.To == "":
		return refusal(legacywire.CodeBadMessage, "message id or recipient missing")
	case msg.From != cert.User && !cert.Has(legacywire.CapBridge):
		return refusal(legacywire.CodeNotYourUser, fmt.Sprintf("certificate is for %q, message is from %q", cert.User, msg.From))
	}
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.known[msg.To]; !ok {
		return refusal(legacywire.CodeUnknownUser, fmt.Sprintf("no device of %q ever registered here", msg.To))
	}
	q := s.dropExpiredLocked(msg.To, now)
	if slices.ContainsFunc(q, func(h heldMessage) bool { return h.msg.ID == msg.ID }) {
		return legacywire.DirResponse{OK: true} // a retry: held once
	}
	if len(q) >= s.cfg.MaxOfflinePerUser {
		return refusal(legacywire.CodeQueueFull, fmt.Sprintf("%d messages already held for %q", len(q), msg.To))
	}
	s.offline[msg.To] = append(q, heldMessage{msg: *msg, expires: now.Add(s.cfg.OfflineTTL)})
	s.log.Debug("held message offline", "peer", remote, "depth", len(q)+1)
	return legacywire.DirResponse{OK: true}
}

// takeHeld removes and returns user's live held messages, oldest first.
func (s *Supernode) takeHeld(user string) []legacywire.ChatMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.dropExpiredLocked(user, s.cfg.Now())
	delete(s.offline, user)
	out := make([]legacywire.ChatMessage, 0, len(q))
	for _, h := range q {
		out = append(out, h.msg)
		s.handedOver[handedKey(user, h.msg.ID)] = h.expires
	}
	return out
}

// handedKey keys a message being handed over in Supernode.handedOver.
func handedKey(user, id string) string { return user + "\x00" + id }

// handedOverDone forgets the expiries of messages whose hand-over was
// written.
func (s *Supernode) handedOverDone(user string, msgs []legacywire.ChatMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		delete(s.handedOver, handedKey(user, m.ID))
	}
}

// requeue puts back messages whose hand-over failed, ahead of anything
// stored meanwhile, keeping their original expiry when still known. Beyond
// MaxOfflinePerUser the oldest are dropped and counted with the expired.
func (s *Supernode) requeue(user string, msgs []legacywire.ChatMessage) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	back := make([]heldMessage, 0, len(msgs)+len(s.offline[user]))
	for _, m := range msgs {
		k := handedKey(user, m.ID)
		expires, ok := s.handedOver[k]
		if !ok {
			expires = now.Add(s.cfg.OfflineTTL)
		}
		delete(s.handedOver, k)
		back = append(back, heldMessage{msg: m, expires: expires})
	}
	s.offline[user] = append(back, s.offline[user]...)
	q := s.dropExpiredLocked(user, now)
	if over := len(q) - s.cfg.MaxOfflinePerUser; over > 0 {
		for _, h := range q[:over] {
			s.reportLocked(h.msg, legacywire.ReasonOverflow, now)
		}
		s.offline[user] = q[over:]
		s.expired += int64(over)
	}
}

// dropExpiredLocked removes user's expired held messages, counting them
// and reporting each to its sender, and returns the queue.
func (s *Supernode) dropExpiredLocked(user string, now time.Time) []heldMessage {
	q := s.offline[user]
	live := q[:0]
	for _, h := range q {
		if now.Before(h.expires) {
			live = append(live, h)
		} else {
			s.expired++
			s.reportLocked(h.msg, legacywire.ReasonExpired, now)
		}
	}
	if len(live) == 0 {
		delete(s.offline, user)
		return nil
	}
	s.offline[user] = live
	return live
}

// sweepOfflineLocked drops every expired held message (reporting each to
// its sender) and every report past its own expiry.
func (s *Supernode) sweepOfflineLocked(now time.Time) {
	for user := range s.offline {
		s.dropExpiredLocked(user, now)
	}
	for sender, rs := range s.reports {
		rs = slices.DeleteFunc(rs, func(r pendingReport) bool { return !now.Before(r.expires) })
		if len(rs) == 0 {
			delete(s.reports, sender)
		} else {
			s.reports[sender] = rs
		}
	}
}

// pendingReport is an undeliverable report waiting for a device of the
// message's sender.
type pendingReport struct {
	report  legacywire.Undeliverable
	expires time.Time
}

// reportLocked queues an undeliverable report of msg for its sender, kept
// for OfflineTTL and at most MaxOfflinePerUser per sender (the oldest go
// first).
func (s *Supernode) reportLocked(msg legacywire.ChatMessage, reason string, now time.Time) {
	rs := append(s.reports[msg.From], pendingReport{
		report:  legacywire.Undeliverable{MsgID: msg.ID, From: msg.From, To: msg.To, Reason: reason, At: now.UTC().Truncate(time.Millisecond)},
		expires: now.Add(s.cfg.OfflineTTL),
	})
	if over := len(rs) - s.cfg.MaxOfflinePerUser; over > 0 {
		rs = slices.Delete(rs, 0, over)
	}
	s.reports[msg.From] = rs
}

// takeReports removes and returns the live undeliverable reports for
// sender, oldest first (OpReports).
func (s *Supernode) takeReports(sender string) []legacywire.Undeliverable {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []legacywire.Undeliverable
	for _, r := range s.reports[sender] {
		if now.Before(r.expires) {
			out = append(out, r.report)
		}
	}
	delete(s.reports, sender)
	s.reported += int64(len(out))
	return out
}

// requeueReports puts back reports whose hand-over failed, ahead of newer
// ones.
func (s *Supernode) requeueReports(sender string, rs []legacywire.Undeliverable) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	back := make([]pendingReport, 0, len(rs)+len(s.reports[sender]))
	for _, r := range rs {
		back = append(back, pendingReport{report: r, expires: now.Add(s.cfg.OfflineTTL)})
	}
	s.reports[sender] = append(back, s.reports[sender]...)
	s.reported -= int64(len(rs))
}

// UndeliverableStats reports the undeliverable reports: waiting for a
// device of their sender now, and handed to one so far.
func (s *Supernode) UndeliverableStats() (pending int, reported int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range s.reports {
		pending += len(rs)
	}
	return pending, s.reported
}

// OfflineStats reports the offline store: messages held now, and messages
// dropped because they expired before a device of their recipient
// registered (or overflowed MaxOfflinePerUser when a failed hand-over put
// them back).
func (s *Supernode) OfflineStats() (held int, expired int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, q := range s.offline {
		held += len(q)
	}
	return held, s.expired
}
