package cloud

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Storage names; doc.go describes what each holds.
const (
	convStreamName  = "CLOUD_CONV"
	convPrefix      = "cloud.conv."
	inboxStreamName = "CLOUD_INBOX"
	inboxPrefix     = "cloud.inbox."
	inboxAll        = inboxPrefix + ">"
	sendsBucket     = "cloud_sends"
)

const (
	// dupWindow is the streams' Nats-Msg-Id duplicate window: a redo of a
	// write interrupted by a crash is deduplicated within it.
	dupWindow = 10 * time.Minute
	// redoWithin is the age under which a resend of a recorded send
	// redoes its log append and inbox writes (store.send): well inside
	// dupWindow, so that the log still answers the append as a
	// duplicate even across nodes whose clocks differ a little.
	redoWithin = dupWindow / 2
	// maxStoredMsg bounds one stored record (a frame is at most 64 KiB).
	maxStoredMsg = 256 << 10
	// maxAppendAttempts bounds retries of a conversation append that lost
	// the race against another node.
	maxAppendAttempts = 16
	// maxCachedConvs bounds the per-conversation state kept between sends.
	maxCachedConvs = 1 << 16
	// replayPoll is how long a replay waits for the next message before
	// asking the server whether anything is left.
	replayPoll = time.Second
	// replayInactive lets the server drop an abandoned replay consumer.
	replayInactive = 30 * time.Second
	// directReplayMax is how many events a user's replay reads by direct
	// get before it opens a consumer for the rest (replayDirect).
	directReplayMax = 32
	// dropTimeout bounds deleting a finished replay's consumer.
	dropTimeout = 2 * time.Second
	// lookupRetries and lookupBackoff bound how long a receipt waits for the
	// idempotency record of a message whose send is still completing (its
	// inbox events are written before the record).
	lookupRetries = 5
	lookupBackoff = 20 * time.Millisecond
)

// errKept is returned by appendAndFanOutAlong when its check kept what
// was stored (store.send answers with the idempotency record).
var errKept = errors.New("cloud: send already recorded")

// errCopyRemoved: the duplicate window remembers a message id whose copy
// was removed again (a resend of a recorded send past the window); the
// send record answers it.
var errCopyRemoved = errors.New("cloud: the remembered copy was removed")

// logRecord is one message of the conversation log (stored JSON).
type logRecord struct {
	MsgID      string `json:"msg_id"`
	Conv       string `json:"conv"`
	Seq        uint64 `json:"seq"`
	From       string `json:"from"`
	FromDevice string `json:"from_device,omitempty"`
	To         string `json:"to"`
	Text       string `json:"text"`
	// Kind is empty for messages and KindGroup for group changes, which
	// carry Op, Members (the users the change names: everyone for create),
	// All (the members after the change) and Name.
	Kind    string    `json:"kind,omitempty"`
	Op      string    `json:"op,omitempty"`
	Members []string  `json:"members,omitempty"`
	All     []string  `json:"all,omitempty"`
	Name    string    `json:"name,omitempty"`
	At      time.Time `json:"at"`

	// File is a message's attachment (files.go).
	File *cloudwire.File `json:"file,omitempty"`
}

// sendRecord is the idempotency record of a send (stored JSON): enough to
// answer a resend with the original ack and to check receipts.
type sendRecord struct {
	MsgID string    `json:"msg_id"`
	Conv  string    `json:"conv"`
	Seq   uint64    `json:"seq"`
	At    time.Time `json:"at"`
	From  string    `json:"from"`
	To    string    `json:"to"`
}

func (r sendRecord) ack(ref string, duplicate bool) cloudwire.Ack {
	return cloudwire.Ack{Ref: ref, MsgID: r.MsgID, Conv: r.Conv, Seq: r.Seq, At: r.At, Duplicate: duplicate}
}

// inboxRecord is one event of a user's inbox (stored JSON). Its cursor is
// the inbox stream sequence, known only once stored.
type inboxRecord struct {
	User       string    `json:"user"`
	Kind       string    `json:"kind"`
	Conv       string    `json:"conv"`
	Seq        uint64    `json:"seq"`
	MsgID      string    `json:"msg_id"`
	From       string    `json:"from"`
	FromDevice string    `json:"from_device,omitempty"`
	To         string    `json:"to"`
	Text       string    `json:"text,omitempty"`
	Status     string    `json:"status,omitempty"`
	By         string    `json:"by,omitempty"`
	UpTo       uint64    `json:"up_to,omitempty"`
	Op         string    `json:"op,omitempty"`
	Members    []string  `json:"members,omitempty"`
	Name       string    `json:"name,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	At         time.Time `json:"at"`

	// File is a message's attachment (files.go).
	File *cloudwire.File `json:"file,omitempty"`
}

// event converts a stored inbox record to its wire form.
func (r inboxRecord) event(cursor uint64) cloudwire.Event {
	return cloudwire.Event{
		Cursor: cursor, User: r.User, Kind: r.Kind, Conv: r.Conv, Seq: r.Seq,
		MsgID: r.MsgID, From: r.From, FromDevice: r.FromDevice, To: r.To,
		Text: r.Text, Status: r.Status, By: r.By, UpTo: r.UpTo,
		Op: r.Op, Members: r.Members, Name: r.Name, Reason: r.Reason, File: r.File, At: r.At,
	}
}

// store owns the service's JetStream state.
type store struct {
	// lookupFault, set by tests only, fails the idempotency lookup of a
	// send (as a NATS restart would).
	lookupFault atomic.Pointer[func(msgID string) error]

	js    jetstream.JetStream
	conv  jetstream.Stream
	inbox jetstream.Stream
	sends jetstream.KeyValue
	// receipts holds cumulative receipt states (receipts.go).
	receipts jetstream.KeyValue
	// groups holds every group's members (groups.go).
	groups jetstream.KeyValue
	// member indexes conversations by member (presence.go).
	member jetstream.KeyValue
	// devices holds every device's last activity (calls.go).
	devices jetstream.KeyValue
	// memberKeys and deviceKeys are the streams under member and
	// devices, whose subjects list keys by prefix without a consumer
	// (keysUnder).
	memberKeys, deviceKeys jetstream.Stream
	locks                  convLocks
	m                      *metrics
	log                    *slog.Logger

	// lease says which nodes are alive and holds the calls bucket
	// (presence.go, calls.go); nil in a store without sessions
	// (BridgeLive's, BridgeCalls'), where every node counts as alive.
	lease *lease
	// files holds attachments (files.go); nil where files are not served.
	files *fileStore
}

func openStore(ctx context.Context, js jetstream.JetStream, replicas int, ret Retention, m *metrics, log *slog.Logger) (*store, error) {
	conv, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        convStreamName,
		Description: "Ferry cloud conversation log: one subject per conversation, dense sequence per subject.",
		Subjects:    []string{convPrefix + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  dupWindow,
		MaxMsgSize:  maxStoredMsg,
		AllowDirect: true,
		MaxAge:      ret.LogMaxAge,
		MaxBytes:    orUnlimited(ret.LogMaxBytes),
	})
	if err != nil {
		return nil, fmt.Errorf("cloud: stream %s: %w", convStreamName, err)
	}
	inbox, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        inboxStreamName,
		Description: "Ferry cloud per-user inboxes: the synced history every device replays by cursor.",
		Subjects:    []string{inboxAll},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  dupWindow,
		MaxMsgSize:  maxStoredMsg,
		AllowDirect: true,
		MaxAge:      ret.InboxMaxAge,
		MaxBytes:    orUnlimited(ret.InboxMaxBytes),
	})
	if err != nil {
		return nil, fmt.Errorf("cloud: stream %s: %w", inboxStreamName, err)
	}
	// Every bucket keeps one revision per key, on file, replicated like
	// the streams; only the idempotency records expire (Retention).
	ttl := map[string]time.Duration{sendsBucket: ret.SendsMaxAge}
	bucket := func(name, desc string) (jetstream.KeyValue, error) {
		kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: name, Description: desc, History: 1, Storage: jetstream.FileStorage, Replicas: replicas, TTL: ttl[name],
		})
		if err != nil {
			return nil, fmt.Errorf("cloud: bucket %s: %w", name, err)
		}
		return kv, nil
	}
	sends, err := bucket(sendsBucket, "Ferry cloud send idempotency: message id to the original ack.")
	if err != nil {
		return nil, err
	}
	receipts, err := bucket(receiptsBucket, "Ferry cloud cumulative receipts: delivered and read up to N, per conversation, user and device.")
	if err != nil {
		return nil, err
	}
	groups, err := bucket(groupsBucket, "Ferry cloud groups: name and members, as of the group's last change in its log.")
	if err != nil {
		return nil, err
	}
	member, err := bucket(memberBucket, "Ferry cloud conversations by member, for presence fan-out.")
	if err != nil {
		return nil, err
	}
	devices, err := bucket(devicesBucket, "Ferry cloud devices: last activity and whether online, to ring the device in use first.")
	if err != nil {
		return nil, err
	}
	memberKeys, err := js.Stream(ctx, kvStreamPrefix+memberBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bucket %s stream: %w", memberBucket, err)
	}
	deviceKeys, err := js.Stream(ctx, kvStreamPrefix+devicesBucket)
	if err != nil {
		return nil, fmt.Errorf("cloud: bucket %s stream: %w", devicesBucket, err)
	}
	return &store{
		js: js, conv: conv, inbox: inbox, sends: sends, receipts: receipts, groups: groups, member: member, devices: devices,
		memberKeys: memberKeys, deviceKeys: deviceKeys,
		locks: convLocks{m: make(map[string]*convEntry)},
		m:     m, log: log,
	}, nil
}

// orUnlimited maps a zero byte bound to JetStream's "no bound" (-1).
func orUnlimited(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// send stores a one-to-one message from user from (on device) and returns
// its idempotency record; duplicate is set when s.MsgID had been stored
// before. The log append, the inbox writes and the idempotency record are
// all acknowledged by JetStream before it returns.
//
// It takes two JetStream round trips where it used to take four: the
// idempotency lookup runs alongside the log append, and the idempotency
// record is written alongside the inbox writes. What that changes, and
// why every guarantee holds:
//   - A resend is still answered from the record. When the append is not
//     a duplicate although the send is recorded (a resend past the log's
//     duplicate window, or a message id another sender used), the new
//     copy is deleted again before any inbox write (check). A crash in
//     that instant leaves the copy in the log, though in no inbox; the
//     old order had the same window the other way round (a resend past
//     the window after a crash before the record appended twice).
//   - A crash can now leave a record whose inbox events are missing: a
//     resend of a record younger than redoWithin therefore redoes the
//     inbox writes (their Nats-Msg-Id makes them idempotent), exactly as a
//     resend after a crash before the record was written always did.
func (st *store) send(ctx context.Context, from, device string, s cloudwire.Send, now time.Time) (rec sendRecord, duplicate bool, err error) {
	conv := s.Conv
	var recipients func() ([]string, error) // nil: the direct participants
	if cloudwire.IsGroupID(conv) {
		recipients = func() ([]string, error) {
			g, _, err := st.loadGroup(ctx, conv)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(g.Members, from) {
				return nil, fmt.Errorf("%w: %s is not a member of %s", errForbidden, from, conv)
			}
			return g.Members, nil
		}
	} else {
		conv = cloudwire.DirectConversationID(from, s.To)
		if s.Conv != "" && s.Conv != conv {
			return sendRecord{}, false, fmt.Errorf("%w: conv %s is not the conversation of %s and %s", errBadRequest, s.Conv, from, s.To)
		}
	}
	if s.File != nil { // an attachment: the stored copy's fields (files.go)
		if s.File, err = st.files.attach(ctx, from, conv, *s.File); err != nil {
			return sendRecord{}, false, err
		}
	}
	var (
		prior      sendRecord
		recorded   bool
		lookupErr  error
		lookupDone = make(chan struct{})
	)
	go func() {
		defer close(lookupDone)
		prior, recorded, lookupErr = st.lookup(ctx, s.MsgID)
	}()
	defer func() { <-lookupDone }()
	check := func(dup bool) (bool, error) {
		<-lookupDone
		if lookupErr != nil || !recorded {
			return lookupErr == nil, lookupErr
		}
		// Recorded: redo the inbox writes of a young record of this
		// sender's that the log still knows; keep the rest as stored.
		return prior.From == from && dup && now.Sub(prior.At) < redoWithin, nil
	}
	var rememberErr error
	lr, dup, err := st.appendAndFanOutAlong(ctx, logRecord{
		MsgID: s.MsgID, Conv: conv, From: from, FromDevice: device, To: s.To,
		Text: s.Text, File: s.File, At: now.UTC().Truncate(time.Millisecond),
	}, recipients, check, func(lr logRecord) {
		if !recorded { // check has run
			rememberErr = st.remember(ctx, sendRecord{MsgID: lr.MsgID, Conv: lr.Conv, Seq: lr.Seq, At: lr.At, From: lr.From, To: lr.To})
		}
	})
	<-lookupDone
	if recorded && lookupErr == nil && (err == nil || errors.Is(err, errKept) || errors.Is(err, errConflict) || errors.Is(err, errCopyRemoved)) {
		return sameSender(prior, from)
	}
	if err != nil {
		return sendRecord{}, false, err
	}
	rec = sendRecord{MsgID: lr.MsgID, Conv: lr.Conv, Seq: lr.Seq, At: lr.At, From: lr.From, To: lr.To}
	if err := rememberErr; err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return sendRecord{}, false, err
		}
		// Another node finished the same send first.
		prior, ok, err := st.lookup(ctx, s.MsgID)
		if err != nil || !ok {
			return sendRecord{}, false, fmt.Errorf("cloud: send record vanished: %v", err)
		}
		return sameSender(prior, from)
	}
	return rec, dup, nil
}

func sameSender(prior sendRecord, from string) (sendRecord, bool, error) {
	if prior.From != from {
		return sendRecord{}, false, fmt.Errorf("%w: %s", errConflict, prior.MsgID)
	}
	return prior, true, nil
}

// appendAndFanOut appends lr to its conversation under the conversation's
// lock and writes its inbox events, so that one node writes a
// conversation's inbox events in sequence order. When the message id was
// already in the log (a redo after a crash, or a resend racing the first
// attempt), it returns the stored record with dup set and redoes the inbox
// writes, which Nats-Msg-Id makes idempotent.
//
// recipients, when set, is called under the lock and returns the users whose
// inboxes get the message (a group's members); nil means the sender and
// the recipient.
func (st *store) appendAndFanOut(ctx context.Context, lr logRecord, recipients func() ([]string, error)) (logRecord, bool, error) {
	return st.appendAndFanOutAlong(ctx, lr, recipients, nil, nil)
}

// appendAndFanOutAlong is appendAndFanOut that, once lr is in the log,
// runs along (when set) while the inbox writes are in flight: once they
// are all sent and before their acks are awaited. along gets the stored
// record.
//
// check, when set, is called once lr is in the log (dup as append
// reports it) and before any inbox write; when it answers false, what is
// stored stays as it is: a copy the append just made is deleted again,
// nothing is fanned out, and errKept is returned.
func (st *store) appendAndFanOutAlong(ctx context.Context, lr logRecord, recipients func() ([]string, error), check func(dup bool) (bool, error), along func(logRecord)) (logRecord, bool, error) {
	e := st.locks.acquire(lr.Conv)
	defer st.locks.release(lr.Conv, e)
	var users []string
	if recipients != nil {
		var err error
		if users, err = recipients(); err != nil {
			return logRecord{}, false, err
		}
	}
	from := lr.From
	lr, dup, err := st.append(ctx, e, lr)
	if err != nil {
		return logRecord{}, false, err
	}
	if dup && lr.From != from {
		return logRecord{}, false, fmt.Errorf("%w: %s", errConflict, lr.MsgID)
	}
	if check != nil {
		if proceed, err := check(dup); err != nil || !proceed {
			// Only a definite "keep what is stored" removes the new copy.
			// On an error (the lookup failed: NATS restarting) the copy
			// stays: deleted, its id would stay in the duplicate window
			// pointing at nothing, and every resend within it would fail.
			// Kept, the resend finds it (dup) and finishes the send.
			if !dup && err == nil {
				e.known = false
				if derr := st.conv.DeleteMsg(ctx, e.last); derr != nil {
					return logRecord{}, false, fmt.Errorf("cloud: remove the new copy of %s: %w", lr.MsgID, derr)
				}
			}
			return logRecord{}, false, cmp.Or(err, errKept)
		}
	}
	if recipients == nil {
		users = participants(lr.From, lr.To)
		if !e.indexed {
			// Once per conversation and node run: idempotent puts.
			if err := st.indexMembers(ctx, lr.Conv, users); err != nil {
				return logRecord{}, false, err
			}
			e.indexed = true
		}
	}
	var meanwhile func()
	if along != nil {
		meanwhile = func() { along(lr) }
	}
	if err := st.fanOutWith(ctx, lr.events(users), cloudwire.KindMsg, meanwhile); err != nil {
		return logRecord{}, false, err
	}
	return lr, dup, nil
}

// events returns the inbox events of a log record for users.
func (lr logRecord) events(users []string) []inboxRecord {
	kind := lr.Kind
	if kind == "" {
		kind = cloudwire.KindMsg
	}
	events := make([]inboxRecord, 0, len(users))
	for _, u := range users {
		events = append(events, inboxRecord{
			User: u, Kind: kind, Conv: lr.Conv, Seq: lr.Seq, MsgID: lr.MsgID,
			From: lr.From, FromDevice: lr.FromDevice, To: lr.To, Text: lr.Text,
			Op: lr.Op, Members: lr.Members, Name: lr.Name, File: lr.File, At: lr.At,
		})
	}
	return events
}

// append assigns the next conversation sequence and publishes lr, guarded
// by the expected last subject sequence so that two nodes never assign the
// same one. e is locked by the caller.
func (st *store) append(ctx context.Context, e *convEntry, lr logRecord) (logRecord, bool, error) {
	subj := convPrefix + lr.Conv
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		if !e.known {
			raw, err := st.conv.GetLastMsgForSubject(ctx, subj)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				e.last, e.seq = 0, 0
			case err != nil:
				return logRecord{}, false, fmt.Errorf("cloud: read conversation head: %w", err)
			default:
				prev, err := decodeLog(raw.Data)
				if err != nil {
					return logRecord{}, false, err
				}
				if prev.MsgID == lr.MsgID {
					// The last attempt got this far before failing,
					// possibly longer ago than the duplicate window.
					return prev, true, nil
				}
				e.last, e.seq = raw.Sequence, prev.Seq
			}
			e.known = true
		}
		lr.Seq = e.seq + 1
		data, err := json.Marshal(lr)
		if err != nil {
			return logRecord{}, false, err
		}
		ack, err := st.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data},
			jetstream.WithMsgID(lr.MsgID), jetstream.WithExpectLastSequencePerSubject(e.last))
		if wrongLastSequence(err) {
			e.known = false
			st.m.conflicts.Inc()
			continue
		}
		if err != nil {
			e.known = false
			return logRecord{}, false, fmt.Errorf("cloud: append to %s: %w", subj, err)
		}
		if ack.Duplicate {
			e.known = false
			raw, err := st.conv.GetMsg(ctx, ack.Sequence)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				// The copy the window remembers was removed again (a
				// resend of a recorded message past the window: send).
				return logRecord{}, false, fmt.Errorf("%w: %s", errCopyRemoved, lr.MsgID)
			}
			if err != nil {
				return logRecord{}, false, fmt.Errorf("cloud: read original of %s: %w", lr.MsgID, err)
			}
			prev, err := decodeLog(raw.Data)
			if err != nil {
				return logRecord{}, false, err
			}
			return prev, true, nil
		}
		e.last, e.seq = ack.Sequence, lr.Seq
		return lr, false, nil
	}
	return logRecord{}, false, fmt.Errorf("cloud: append to %s: still conflicting after %d attempts", subj, maxAppendAttempts)
}

func wrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

func decodeLog(b []byte) (logRecord, error) {
	var lr logRecord
	if err := json.Unmarshal(b, &lr); err != nil {
		return logRecord{}, fmt.Errorf("cloud: corrupt conversation log record: %w", err)
	}
	return lr, nil
}

// fanOut writes events to their users' inboxes and waits for every ack.
// Each carries a Nats-Msg-Id derived from the message, the inbox owner and
// the kind, so that a redo within the duplicate window writes nothing new.
func (st *store) fanOut(ctx context.Context, events []inboxRecord, kind string) error {
	return st.fanOutWith(ctx, events, kind, nil)
}

// fanOutWith is fanOut calling meanwhile, when set, once every event is
// sent and before the acks are awaited, so that another write overlaps
// with the inbox writes.
func (st *store) fanOutWith(ctx context.Context, events []inboxRecord, kind string, meanwhile func()) error {
	futures := make([]jetstream.PubAckFuture, 0, len(events))
	enc := inboxEncoder{}
	for _, ev := range events {
		data, err := enc.encode(ev)
		if err != nil {
			return err
		}
		id := ev.MsgID + ":" + subjectToken(ev.User) + ":" + kind
		f, err := st.js.PublishMsgAsync(&nats.Msg{Subject: inboxSubject(ev.User), Data: data}, jetstream.WithMsgID(id))
		if err != nil {
			return fmt.Errorf("cloud: inbox write: %w", err)
		}
		futures = append(futures, f)
	}
	if meanwhile != nil {
		meanwhile()
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("cloud: inbox write: %w", err)
		case <-ctx.Done():
			return fmt.Errorf("cloud: inbox write: %w", ctx.Err())
		}
	}
	return nil
}

// inboxEncoder encodes the inbox events of one fan-out. The events of one
// message (or receipt) differ only in their user, so it encodes the first
// without its user once and splices each user into that: a 200-member
// group's send costs one encoding instead of 200. The bytes are those of
// json.Marshal of each event (TestInboxEncoderMatchesMarshal).
type inboxEncoder struct {
	shared inboxRecord // the event the template was made of, User cleared
	tail   []byte      // its encoding after `{"user":""`; nil: no template yet
}

// inboxHead is how every encoded inboxRecord starts: User is its first
// field and is never omitted.
const inboxHead = `{"user":""`

func (enc *inboxEncoder) encode(ev inboxRecord) ([]byte, error) {
	user := ev.User
	ev.User = ""
	if enc.tail == nil || !sameEvent(enc.shared, ev) {
		data, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(data, []byte(inboxHead)) {
			return nil, fmt.Errorf("cloud: inbox record encodes as %.20q", data)
		}
		enc.shared, enc.tail = ev, data[len(inboxHead):]
	}
	out := make([]byte, 0, len(`{"user":""`)+len(user)+len(enc.tail))
	out = cloudwire.AppendString(append(out, `{"user":`...), user)
	return append(out, enc.tail...), nil
}

// frameCache turns the live feed's inbox records into event frames,
// decoding and encoding the records of one fan-out once: inboxEncoder
// wrote them as one encoding with each user spliced in, so a record whose
// bytes after its user equal the last one's differs from it only in its
// user, and its frame is a template made once with its cursor and user
// spliced in. A record unlike the last one is decoded once, kept for the
// template, and costs a copy over eventFrame. The bytes are those of
// Service.eventFrame (TestFrameCacheMatches).
type frameCache struct {
	data    []byte      // a copy of the record that began the run; nil: none
	tail    []byte      // data after its user
	rec     inboxRecord // data decoded
	decoded bool        // data decoded without error
	frame   []byte      // the template for tail after eventHead; nil: not made yet
	bad     bool        // tail makes no template
	at      time.Time   // the time of the template's record
}

// eventHead is how the frame of an event with cursor 0 and no user starts:
// Cursor and User are Event's first fields, never omitted.
const eventHead = `{"type":"event","cursor":0,"user":""`

func (fc *frameCache) frameOf(s *Service, cursor uint64, subject string, data []byte) ([]byte, time.Time) {
	quoted, tail, ok := splitInboxUser(data)
	if !ok {
		fc.data = nil
		return s.eventFrame(cursor, subject, data)
	}
	if fc.data == nil || !bytes.Equal(tail, fc.tail) {
		fc.data = append(fc.data[:0:0], data...)
		fc.tail = fc.data[len(data)-len(tail):]
		fc.frame, fc.bad, fc.rec = nil, false, inboxRecord{}
		err := json.Unmarshal(data, &fc.rec)
		fc.decoded = err == nil
		return s.recordFrame(cursor, subject, fc.rec, err)
	}
	if fc.frame == nil && !fc.bad {
		fc.bad = !fc.makeTemplate()
	}
	user, ok := cloudwire.UnquotePlain(quoted)
	if fc.bad || !ok && json.Unmarshal(quoted, &user) != nil {
		return s.eventFrame(cursor, subject, data)
	}
	if frame, ok := fc.splice(cursor, user); ok {
		return frame, fc.at
	}
	return s.eventFrame(cursor, subject, data)
}

// makeTemplate makes the frame template of the run's first record,
// reporting whether it could. Only a record in the canonical encoding (no
// repeated or unknown keys) makes one: then every record with the same
// tail decodes to it with only the user changed.
func (fc *frameCache) makeTemplate() bool {
	if !fc.decoded {
		return false
	}
	if canon, err := json.Marshal(fc.rec); err != nil || !bytes.Equal(canon, fc.data) {
		return false
	}
	ev := fc.rec.event(0)
	ev.User = ""
	tmpl, err := cloudwire.Encode(ev)
	if err != nil || !bytes.HasPrefix(tmpl, []byte(eventHead)) {
		return false
	}
	fc.frame, fc.at = tmpl[len(eventHead):], fc.rec.At
	return true
}

// splice returns the cached frame for cursor and user, unless it would be
// over cloudwire.MaxFrameSize (eventFrame then makes the placeholder).
func (fc *frameCache) splice(cursor uint64, user string) ([]byte, bool) {
	out := make([]byte, 0, 64+len(user)+len(fc.frame))
	out = append(out, `{"type":"event","cursor":`...)
	out = strconv.AppendUint(out, cursor, 10)
	out = cloudwire.AppendString(append(out, `,"user":`...), user)
	out = append(out, fc.frame...)
	return out, len(out) <= cloudwire.MaxFrameSize
}

// splitInboxUser splits a stored inbox record into its user, still a
// quoted JSON string, and the bytes after it.
func splitInboxUser(data []byte) (quoted, tail []byte, ok bool) {
	const head = `{"user":"`
	if !bytes.HasPrefix(data, []byte(head)) {
		return nil, nil, false
	}
	for i := len(head); i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return data[len(head)-1 : i+1], data[i+1:], true
		}
	}
	return nil, nil, false
}

// sameEvent reports whether a and b encode alike.
func sameEvent(a, b inboxRecord) bool {
	return a.User == b.User && a.Kind == b.Kind && a.Conv == b.Conv && a.Seq == b.Seq && a.MsgID == b.MsgID &&
		a.From == b.From && a.FromDevice == b.FromDevice && a.To == b.To && a.Text == b.Text &&
		a.Status == b.Status && a.By == b.By && a.UpTo == b.UpTo && a.Op == b.Op &&
		slices.Equal(a.Members, b.Members) && a.Name == b.Name && a.Reason == b.Reason && a.File == b.File && a.At.Equal(b.At) &&
		a.At.Location() == b.At.Location()
}

// remember stores the idempotency record; it fails with ErrKeyExists when
// the message id is already recorded.
func (st *store) remember(ctx context.Context, rec sendRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err := st.sends.Create(ctx, rec.MsgID, data); err != nil {
		return fmt.Errorf("cloud: record send %s: %w", rec.MsgID, err)
	}
	return nil
}

// lookup returns the idempotency record of msgID, if any.
func (st *store) lookup(ctx context.Context, msgID string) (sendRecord, bool, error) {
	if f := st.lookupFault.Load(); f != nil {
		if err := (*f)(msgID); err != nil {
			return sendRecord{}, false, err
		}
	}
	entry, err := st.sends.Get(ctx, msgID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return sendRecord{}, false, nil
	}
	if err != nil {
		return sendRecord{}, false, fmt.Errorf("cloud: read send record %s: %w", msgID, err)
	}
	var rec sendRecord
	if err := json.Unmarshal(entry.Value(), &rec); err != nil {
		return sendRecord{}, false, fmt.Errorf("cloud: corrupt send record %s: %w", msgID, err)
	}
	return rec, true, nil
}

// receipt stores a delivery or read receipt by user by (on device) into
// the inboxes of the message's sender and of by. It returns the receipted
// message's record.
func (st *store) receipt(ctx context.Context, by, device string, r cloudwire.Receipt, now time.Time) (sendRecord, error) {
	var rec sendRecord
	found := false
	for i, wait := 0, lookupBackoff; ; i, wait = i+1, wait*2 {
		var err error
		rec, found, err = st.lookup(ctx, r.MsgID)
		if err != nil {
			return sendRecord{}, err
		}
		if found || i == lookupRetries {
			break
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return sendRecord{}, ctx.Err()
		}
	}
	if !found || rec.Conv != r.Conv {
		return sendRecord{}, fmt.Errorf("%w: %s in %s", errNotFound, r.MsgID, r.Conv)
	}
	if cloudwire.IsGroupID(rec.Conv) {
		members, err := st.members(ctx, rec.Conv)
		if err != nil {
			return sendRecord{}, err
		}
		if rec.From == by || !slices.Contains(members, by) {
			return sendRecord{}, fmt.Errorf("%w: only the other members of %s can receipt %s", errForbidden, rec.Conv, r.MsgID)
		}
	} else if rec.To != by {
		return sendRecord{}, fmt.Errorf("%w: only the recipient of %s can receipt it", errForbidden, r.MsgID)
	}
	at := now.UTC().Truncate(time.Millisecond)
	var events []inboxRecord
	for _, u := range participants(rec.From, by) {
		events = append(events, inboxRecord{
			User: u, Kind: cloudwire.KindReceipt, Conv: rec.Conv, Seq: rec.Seq, MsgID: rec.MsgID,
			From: rec.From, FromDevice: device, To: rec.To, Status: r.Status, By: by, At: at,
		})
	}
	kind := cloudwire.KindReceipt + "." + r.Status + "." + subjectToken(by)
	if err := st.fanOut(ctx, events, kind); err != nil {
		return sendRecord{}, err
	}
	return rec, nil
}

// head returns the cursor of the last event in user's inbox, or in every
// inbox when all is set (bridge sessions).
func (st *store) head(ctx context.Context, user string, all bool) (uint64, error) {
	if all {
		info, err := st.inbox.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("cloud: inbox head: %w", err)
		}
		return info.State.LastSeq, nil
	}
	raw, err := st.inbox.GetLastMsgForSubject(ctx, inboxSubject(user))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("cloud: inbox head: %w", err)
	}
	return raw.Sequence, nil
}

// replay calls fn, in cursor order, with the stored events of user's inbox
// (every inbox when all is set) with cursors from from up to at least head. It
// stops early only when the server has nothing left to deliver (events
// removed by retention).
func (st *store) replay(ctx context.Context, user string, all bool, from, head uint64, fn func(cursor uint64, subject string, data []byte) error) error {
	if from > head {
		return nil
	}
	filter := inboxAll
	if !all {
		filter = inboxSubject(user)
		next, done, err := st.replayDirect(ctx, filter, from, head, fn)
		if err != nil || done {
			return err
		}
		from = next
	}
	cons, err := st.js.OrderedConsumer(ctx, inboxStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: replayInactive,
	})
	if err != nil {
		return fmt.Errorf("cloud: replay consumer: %w", err)
	}
	// An ordered consumer outlives its iterator until the server drops it
	// after replayInactive: in a reconnect storm one per session would pile
	// up and hit the stream's consumer limit (1,000 by default), failing
	// every further sync. Delete it as soon as the replay ends.
	defer st.dropConsumer(ctx, cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("cloud: replay: %w", err)
	}
	defer it.Stop()
	for {
		pollCtx, cancel := context.WithTimeout(ctx, replayPoll)
		msg, err := it.Next(jetstream.NextContext(pollCtx))
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("cloud: replay: %w", err)
			}
			if info.NumPending == 0 {
				return nil
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("cloud: replay: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("cloud: replay: %w", err)
		}
		if err := fn(meta.Sequence.Stream, msg.Subject(), msg.Data()); err != nil {
			return err
		}
		if meta.Sequence.Stream >= head || meta.NumPending == 0 {
			return nil
		}
	}
}

// replayDirect reads up to directReplayMax events of subject one by one,
// each the first at or after from (a direct get by subject), and reports
// where the rest starts and whether there is none: head was reached or
// nothing is left. A device that reconnects has usually missed a few
// events, which this reads without the three round trips of a consumer
// (create, pull, delete).
func (st *store) replayDirect(ctx context.Context, subject string, from, head uint64, fn func(cursor uint64, subject string, data []byte) error) (next uint64, done bool, err error) {
	for range directReplayMax {
		raw, err := st.inbox.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return from, true, nil
		}
		if err != nil {
			return from, false, fmt.Errorf("cloud: replay: %w", err)
		}
		if err := fn(raw.Sequence, raw.Subject, raw.Data); err != nil {
			return from, false, err
		}
		from = raw.Sequence + 1
		if raw.Sequence >= head {
			return from, true, nil
		}
	}
	return from, false, nil
}

// dropConsumer deletes the replay's consumer on the server, even when ctx
// has ended (the session is gone), within dropTimeout; failing that, the
// server drops it after replayInactive.
func (st *store) dropConsumer(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
	defer cancel()
	if err := st.js.DeleteConsumer(dctx, inboxStreamName, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		st.log.Debug("replay consumer not deleted; the server drops it when inactive", "err", err)
	}
}

// participants returns the distinct users of a one-to-one exchange (a note
// to self has one).
func participants(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

func inboxSubject(user string) string { return inboxPrefix + subjectToken(user) }

// subjectToken maps a user id to one NATS subject token (and KV-safe
// text): [A-Za-z0-9_-] pass through, every other byte becomes "=XX". The
// mapping is injective because '=' itself is escaped.
func subjectToken(user string) string {
	safe := true
	for i := 0; i < len(user) && safe; i++ {
		safe = tokenSafe(user[i])
	}
	if safe {
		return user
	}
	const hexdig = "0123456789ABCDEF"
	b := make([]byte, 0, len(user)*3)
	for i := 0; i < len(user); i++ {
		c := user[i]
		if tokenSafe(c) {
			b = append(b, c)
			continue
		}
		b = append(b, '=', hexdig[c>>4], hexdig[c&0xf])
	}
	return string(b)
}

func tokenSafe(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// convLocks serializes appends per conversation on this node and caches
// each conversation's head between sends.
type convLocks struct {
	mu sync.Mutex
	m  map[string]*convEntry
}

type convEntry struct {
	mu    sync.Mutex
	refs  int // guarded by convLocks.mu
	known bool
	// indexed is set once this node has indexed the members of a
	// one-to-one conversation (presence.go).
	indexed bool
	last    uint64 // stream sequence of the conversation's last message
	seq     uint64 // its conversation sequence
}

func (l *convLocks) acquire(conv string) *convEntry {
	l.mu.Lock()
	e := l.m[conv]
	if e == nil {
		e = &convEntry{}
		l.m[conv] = e
	}
	e.refs++
	l.mu.Unlock()
	e.mu.Lock()
	return e
}

func (l *convLocks) release(conv string, e *convEntry) {
	e.mu.Unlock()
	l.mu.Lock()
	e.refs--
	if e.refs == 0 && len(l.m) > maxCachedConvs {
		delete(l.m, conv)
	}
	l.mu.Unlock()
}
