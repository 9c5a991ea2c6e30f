package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// feedRetry is the pause before the live feed reconnects after an error.
const feedRetry = time.Second

// delivery is one inbox event on its way to the sessions of a node, encoded
// once for all of them.
type delivery struct {
	cursor uint64
	frame  []byte
}

// hub dispatches the node's live feed to its sessions: user sessions get
// their user's inbox, bridge sessions get every inbox. Sessions are keyed
// by the inbox subject token so that events nobody here wants are skipped
// without being decoded. A user's sessions are a slice rather than a set:
// most users have one or two, and a slice of one costs a pointer where a
// map costs a few hundred bytes per idle session.
type hub struct {
	mu      sync.RWMutex
	byToken map[string][]*session
	bridges map[*session]struct{}
}

func newHub() *hub {
	return &hub{byToken: make(map[string][]*session), bridges: make(map[*session]struct{})}
}

func (h *hub) add(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.bridge {
		h.bridges[s] = struct{}{}
		return
	}
	if !slices.Contains(h.byToken[s.token], s) {
		h.byToken[s.token] = append(h.byToken[s.token], s)
	}
}

func (h *hub) remove(s *session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.bridge {
		delete(h.bridges, s)
		return
	}
	set := h.byToken[s.token]
	i := slices.Index(set, s)
	switch {
	case i < 0:
	case len(set) == 1:
		delete(h.byToken, s.token)
	default:
		h.byToken[s.token] = slices.Delete(set, i, i+1)
	}
}

// wants reports whether any session here takes events of the inbox token.
func (h *hub) wants(token string) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.bridges) > 0 || len(h.byToken[token]) > 0
}

func (h *hub) dispatch(token string, d delivery) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.byToken[token] {
		s.deliverLive(d)
	}
	for s := range h.bridges {
		s.deliverLive(d)
	}
}

// dispatchEphemeral hands a live-only frame (presence, typing) to the user
// sessions of token but origin, the session it comes from (or only to the
// session only). A session whose queue is full misses it: such frames
// are superseded by the next one, and are not worth closing a session for.
func (h *hub) dispatchEphemeral(token string, frame []byte, origin, only string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.byToken[token] {
		if s.id == origin || (only != "" && s.id != only) || !s.welcomeSent.Load() {
			continue
		}
		s.enqueue(frame)
	}
}

// eventFrame encodes the stored inbox event at cursor (on subject) as an
// event frame, once for every session that gets it, and returns it with
// the event's time. A record that cannot be read or encoded becomes a
// KindPlaceholder event carrying what could be read, and is counted: the
// device's cursor still moves past it, and it can fetch the message with
// history. frame is nil only when not even the placeholder encodes.
func (s *Service) eventFrame(cursor uint64, subject string, data []byte) (frame []byte, at time.Time) {
	var rec inboxRecord
	err := json.Unmarshal(data, &rec)
	return s.recordFrame(cursor, subject, rec, err)
}

// recordFrame is eventFrame of a record already decoded; err is what
// decoding it returned.
func (s *Service) recordFrame(cursor uint64, subject string, rec inboxRecord, err error) (frame []byte, at time.Time) {
	reason := ""
	if err != nil {
		reason = "corrupt"
		s.log.Error("corrupt inbox record; sending a placeholder", "cursor", cursor, "err", err)
		rec = inboxRecord{User: untoken(strings.TrimPrefix(subject, inboxPrefix))}
	} else if frame, err := cloudwire.Encode(rec.event(cursor)); err == nil {
		return frame, rec.At
	} else {
		reason = "unencodable"
		s.log.Error("inbox event not encodable; sending a placeholder", "cursor", cursor, "kind", rec.Kind, "err", err)
	}
	s.m.placeholders.WithLabelValues(reason).Inc()
	ph := cloudwire.Event{Cursor: cursor, User: rec.User, Kind: cloudwire.KindPlaceholder, Conv: rec.Conv, Seq: rec.Seq, MsgID: rec.MsgID, At: rec.At}
	if !cloudwire.ValidID(ph.User) || (ph.Conv != "" && !cloudwire.ValidID(ph.Conv)) || (ph.MsgID != "" && !cloudwire.ValidMsgID(ph.MsgID)) {
		ph.Conv, ph.Seq, ph.MsgID = "", 0, ""
	}
	frame, err = cloudwire.Encode(ph)
	if err != nil {
		s.log.Error("placeholder not encodable; event skipped", "cursor", cursor, "err", err)
		return nil, time.Time{}
	}
	return frame, rec.At
}

// feed runs one ordered consumer over every inbox from s.feedNext and
// dispatches each event to the hub, until ctx ends or the consumer fails.
func (s *Service) feed(ctx context.Context) error {
	cons, err := s.cfg.JS.OrderedConsumer(ctx, inboxStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{inboxAll},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    s.feedNext.Load(),
	})
	if err != nil {
		return fmt.Errorf("cloud: live feed consumer: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("cloud: live feed: %w", err)
	}
	defer it.Stop()
	var frames frameCache // one encoding per fan-out (store.go)
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("cloud: live feed: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("cloud: live feed: %w", err)
		}
		cursor := meta.Sequence.Stream
		token := strings.TrimPrefix(msg.Subject(), inboxPrefix)
		if s.hub.wants(token) {
			if frame, at := frames.frameOf(s, cursor, msg.Subject(), msg.Data()); frame != nil {
				if !at.IsZero() {
					s.m.liveLag.Observe(s.cfg.Now().Sub(at).Seconds())
				}
				s.hub.dispatch(token, delivery{cursor: cursor, frame: frame})
			}
		}
		s.feedNext.Store(cursor + 1)
	}
}
