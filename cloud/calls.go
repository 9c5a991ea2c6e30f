package cloud

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Calls. The node whose session sent the invite owns the call: it keeps the
// call's state in memory, runs its timers, and answers the other
// requests on the core NATS subject cloud.call.<call id>, whichever node
// the requesting session is on. States go to every session of the caller
// and the callee as live frames (presence.go). Each state is also
// recorded in the bucket cloud_calls with the owner's node id, so that a
// call id is taken once across nodes and, when the owner dies, the nodes
// that outlive it end its calls for both parties (reapCalls).
const (
	callPrefix = "cloud.call."
	// callsBucket holds the calls in progress: key the call id, value a
	// callRecord; an ended call's key is deleted.
	callsBucket = "cloud_calls"
	// callRecordAge bounds how long a call's record (or its deletion
	// marker) is kept: a call that lasts longer is not ended for its
	// parties when its owner dies.
	callRecordAge = 24 * time.Hour
	// devicesBucket keeps every device's last activity: key
	// "<user token>.<device token>", value a deviceRecord.
	devicesBucket = "cloud_devices"
	// touchEvery bounds how often a session records activity on sends.
	touchEvery = 10 * time.Second
)

// Defaults for the call timers.
const (
	DefaultRingDelay   = 3 * time.Second
	DefaultRingTimeout = 45 * time.Second
)

// deviceRecord is a device's last activity and presence (stored JSON).
type deviceRecord struct {
	// At is the device's last activity: it orders ringing.
	At     time.Time `json:"at"`
	Online bool      `json:"online"`
	// State is the device's presence (active or idle while online) and
	// Since when it was set; records written before protocol 6 have
	// neither, and read as active since At.
	State string    `json:"state,omitempty"`
	Since time.Time `json:"since,omitzero"`
	// Node is the node that wrote the record (its lease, presence.go):
	// an online device of a node whose lease expired is offline. Empty
	// in records written before leases.
	Node string `json:"node,omitempty"`
	// Platform and ClientVersion are set in the records of the legacy
	// devices the bridge carries for cloud-home users (bridgedevice.go):
	// platform "legacy".
	Platform      string `json:"platform,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
}

// touchDevice records that device of user was active at at (or went
// offline).
func (st *store) touchDevice(ctx context.Context, user, device string, online bool, at time.Time) error {
	state := cloudwire.PresenceActive
	if !online {
		state = cloudwire.PresenceOffline
	}
	return st.putDevice(ctx, user, device, deviceRecord{At: at, Online: online, State: state, Since: at})
}

func (st *store) putDevice(ctx context.Context, user, device string, r deviceRecord) error {
	r.Node = st.nodeOf()
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := st.devices.Put(ctx, subjectToken(user)+"."+subjectToken(device), data); err != nil {
		return fmt.Errorf("cloud: record device activity: %w", err)
	}
	return nil
}

// onlineDevices returns user's online devices that take calls (not the
// legacy devices the bridge shows, bridgedevice.go), the most recently
// active first.
func (st *store) onlineDevices(ctx context.Context, user string) ([]string, error) {
	devs, err := st.userDevices(ctx, user, 0)
	if err != nil {
		return nil, err
	}
	devs = slices.DeleteFunc(devs, func(d userDevice) bool { return d.rec.Platform == BridgedPlatform })
	slices.SortFunc(devs, func(a, b userDevice) int {
		if c := b.rec.At.Compare(a.rec.At); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	out := make([]string, len(devs))
	for i, d := range devs {
		out[i] = d.id
	}
	return out, nil
}

// touch records this session's device as active now; on sends at most
// every touchEvery. Called from the handler goroutine.
func (s *session) touch(force bool) {
	now := s.svc.cfg.Now()
	if !force && now.Sub(s.touchedAt) < touchEvery {
		return
	}
	s.touchedAt = now
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	if err := s.svc.store.touchDevice(ctx, s.user, s.device, true, now); err != nil {
		s.log.Warn("device activity not recorded", "err", err)
	}
}

// callOp is a request to a call's owner (stored JSON on the wire between
// nodes).
type callOp struct {
	Op      string `json:"op"`
	User    string `json:"user"`
	Device  string `json:"device"`
	Session string `json:"session"`
	// Reason, on a reject or a cancel, is the reason the call ends with
	// instead of rejected or cancelled: only the bridge sets it
	// (bridgecalls.go), for a callee whose devices take no calls
	// (unavailable) and a legacy caller's ring timeout (timeout).
	Reason string `json:"reason,omitempty"`
}

// callReply answers a callOp; Code is empty on success.
type callReply struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// call is one call owned by this node.
type call struct {
	svc     *Service
	mu      sync.Mutex
	st      cloudwire.CallState
	devices []string // the callee's online devices at invite, most recent first
	sub     *nats.Subscription
	timers  []*time.Timer
	ended   bool
}

// callRecord is a call in progress as stored in cloud_calls (JSON).
type callRecord struct {
	Node  string              `json:"node"`
	State cloudwire.CallState `json:"state"`
}

// record stores the call's state, with this node as its owner, or
// creates its record when create is set: errConflict or a duplicate
// then says the id was taken (on any node). c.mu is held (or c is not
// shared yet). A store without lease (BridgeCalls') records nothing.
func (c *call) record(create bool) (dup bool, err error) {
	l := c.svc.store.lease
	if l == nil {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	data, err := json.Marshal(callRecord{Node: l.self, State: c.st})
	if err != nil {
		return false, err
	}
	if !create {
		_, err = l.calls.Put(ctx, c.st.CallID, data)
		return false, err
	}
	_, err = l.calls.Create(ctx, c.st.CallID, data)
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, err
	}
	e, err := l.calls.Get(ctx, c.st.CallID)
	if err != nil {
		return false, fmt.Errorf("cloud: call record: %w", err)
	}
	var prev callRecord
	if err := json.Unmarshal(e.Value(), &prev); err != nil || prev.State.From != c.st.From {
		return false, fmt.Errorf("%w: call id %s", errConflict, c.st.CallID)
	}
	return true, nil
}

// forget deletes an ended call's record. c.mu is held.
func (c *call) forget() {
	l := c.svc.store.lease
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := l.calls.Delete(ctx, c.st.CallID); err != nil {
		c.svc.log.Warn("call record not deleted", "err", err)
	}
}

// save records the call's current state (for reapCalls). c.mu is held.
func (c *call) save() {
	if _, err := c.record(false); err != nil {
		c.svc.log.Warn("call state not recorded", "err", err)
	}
}

// reapCalls ends, for both parties, the calls owned by nodes dead
// reports. Each record is deleted by compare-and-set on its revision, so
// one node ends each call.
func (s *Service) reapCalls(ctx context.Context, dead func(node string) bool) {
	l := s.store.lease
	keys, err := keysUnder(ctx, nil, l.callKeys, callsBucket, "")
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("call records not listed", "err", err)
		}
		return
	}
	for _, k := range keys {
		e, err := l.calls.Get(ctx, k)
		if err != nil {
			continue // ended meanwhile (deleted), or unreadable
		}
		var r callRecord
		if json.Unmarshal(e.Value(), &r) != nil || r.Node == l.self || !dead(r.Node) {
			continue
		}
		if err := l.calls.Delete(ctx, k, jetstream.LastRevision(e.Revision())); err != nil {
			continue // changed meanwhile: another node ended it
		}
		st := r.State
		st.State, st.Ringing, st.Reason, st.At = cloudwire.CallEnded, nil, cloudwire.ReasonUnavailable, s.cfg.Now()
		b, err := cloudwire.Encode(st)
		if err == nil {
			err = s.publishLive(participants(st.From, st.To), b, "", "")
		}
		if err != nil {
			s.log.Warn("end of a dead node's call not sent", "err", err)
			continue
		}
		s.m.callsReaped.Inc()
	}
}

// calls is the registry of the calls this node owns.
type calls struct {
	mu sync.Mutex
	m  map[string]*call
}

// startCall creates and owns a call and rings the callee's first device.
// dup is set when the call id is already one of this node's calls.
func (s *Service) startCall(st cloudwire.CallState, devices []string) (dup bool, err error) {
	// Lock order: a call's mu before the registry's (end takes both).
	c := &call{svc: s, st: st, devices: devices}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dup, err := c.record(true); dup || err != nil {
		return dup, err
	}
	s.calls.mu.Lock()
	if prev, ok := s.calls.m[st.CallID]; ok {
		s.calls.mu.Unlock()
		if prev.st.From != st.From { // From never changes
			return false, fmt.Errorf("%w: call id %s", errConflict, st.CallID)
		}
		return true, nil
	}
	sub, err := s.cfg.JS.Conn().Subscribe(callPrefix+st.CallID, c.serve)
	if err != nil {
		s.calls.mu.Unlock()
		c.forget()
		return false, fmt.Errorf("cloud: call subscription: %w", err)
	}
	c.sub = sub
	s.calls.m[st.CallID] = c
	s.calls.mu.Unlock()
	if len(devices) == 0 {
		c.end(cloudwire.ReasonUnavailable)
		return false, nil
	}
	c.st.State, c.st.Ringing = cloudwire.CallRinging, devices[:1]
	c.emit()
	if len(devices) > 1 {
		c.timers = append(c.timers, time.AfterFunc(s.cfg.RingDelay, c.ringAll))
	}
	c.timers = append(c.timers, time.AfterFunc(s.cfg.RingTimeout, c.timeout))
	return false, nil
}

func (c *call) ringAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.st.State != cloudwire.CallRinging {
		return
	}
	c.st.Ringing = c.devices
	c.emit()
}

func (c *call) timeout() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended && c.st.State == cloudwire.CallRinging {
		c.end(cloudwire.ReasonTimeout)
	}
}

// emit sends the current state to every session of both users. c.mu is
// held.
func (c *call) emit() {
	c.st.At = c.svc.cfg.Now()
	b, err := cloudwire.Encode(c.st)
	if err != nil {
		c.svc.log.Error("call state not encodable", "err", err)
		return
	}
	if err := c.svc.publishLive(participants(c.st.From, c.st.To), b, "", ""); err != nil {
		c.svc.log.Warn("call state not published", "err", err)
	}
	if !c.ended {
		c.save()
	}
}

// end ends the call with reason, tells everyone and forgets it. c.mu is
// held.
func (c *call) end(reason string) {
	c.ended = true
	c.st.State, c.st.Ringing, c.st.Reason = cloudwire.CallEnded, nil, reason
	c.emit()
	c.forget()
	for _, t := range c.timers {
		t.Stop()
	}
	_ = c.sub.Unsubscribe()
	c.svc.calls.mu.Lock()
	delete(c.svc.calls.m, c.st.CallID)
	c.svc.calls.mu.Unlock()
}

// serve answers a callOp from a session on any node.
func (c *call) serve(m *nats.Msg) {
	var op callOp
	var reply callReply
	if err := json.Unmarshal(m.Data, &op); err != nil {
		reply = callReply{Code: cloudwire.CodeBadRequest, Message: "bad call request"}
	} else if err := c.apply(op); err != nil {
		reply = callReply{Code: errorCode(err), Message: err.Error()}
	}
	b, _ := json.Marshal(reply)
	_ = m.Respond(b)
}

// apply runs one request on the call's state machine.
func (c *call) apply(op callOp) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return fmt.Errorf("%w: call %s has ended", errNotFound, c.st.CallID)
	}
	caller, callee := op.User == c.st.From, op.User == c.st.To
	ringing := c.st.State == cloudwire.CallRinging
	if op.Op == cloudwire.CallHangup && ringing {
		// Hanging up a call nobody answered is cancelling or rejecting it.
		op.Op = cloudwire.CallCancel
		if callee && !caller {
			op.Op = cloudwire.CallReject
		}
	}
	switch {
	case op.Op == cloudwire.CallAnswer && callee && ringing:
		c.answered(op)
	case op.Op == cloudwire.CallReject && callee && ringing:
		c.end(cmp.Or(op.Reason, cloudwire.ReasonRejected))
	case op.Op == cloudwire.CallCancel && caller && ringing:
		c.end(cmp.Or(op.Reason, cloudwire.ReasonCancelled))
	case op.Op == cloudwire.CallHangup && (caller || callee):
		c.end(cloudwire.ReasonHangup)
	case !caller && !callee:
		return fmt.Errorf("%w: not a party to call %s", errForbidden, c.st.CallID)
	default:
		return fmt.Errorf("%w: cannot %s call %s while it is %s", errBadRequest, op.Op, c.st.CallID, c.st.State)
	}
	return nil
}

// answered makes the call active on the answering device: it and the
// caller's sessions are told "answered", the callee's other sessions
// "answered elsewhere", so they stop ringing. c.mu is held.
func (c *call) answered(op callOp) {
	for _, t := range c.timers {
		t.Stop()
	}
	c.st.State, c.st.Ringing, c.st.Device = cloudwire.CallActive, nil, op.Device
	c.st.At = c.svc.cfg.Now()
	here, elsewhere := c.st, c.st
	here.Reason, elsewhere.Reason = cloudwire.ReasonAnswered, cloudwire.ReasonAnsweredElsewhere
	c.st.Reason = cloudwire.ReasonAnswered
	publish := func(st cloudwire.CallState, users []string, exclude, only string) {
		b, err := cloudwire.Encode(st)
		if err == nil {
			err = c.svc.publishLive(users, b, exclude, only)
		}
		if err != nil {
			c.svc.log.Warn("call state not published", "err", err)
		}
	}
	c.save()
	publish(elsewhere, []string{c.st.To}, op.Session, "")
	publish(here, []string{c.st.To}, "", op.Session)
	if c.st.From != c.st.To {
		publish(here, []string{c.st.From}, "", "")
	}
}

// endAll ends every call this node owns (at shutdown).
func (s *Service) endAllCalls(reason string) {
	s.calls.mu.Lock()
	all := make([]*call, 0, len(s.calls.m))
	for _, c := range s.calls.m {
		all = append(all, c)
	}
	s.calls.mu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		if !c.ended {
			c.end(reason)
		}
		c.mu.Unlock()
	}
}

func (s *session) handleCall(f cloudwire.Call) {
	if s.bridge {
		s.pushError(f.Ref, cloudwire.CodeForbidden, "calls are not supported on bridge sessions")
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	ack := cloudwire.Ack{Ref: f.Ref, MsgID: f.CallID, At: s.svc.cfg.Now()}
	var err error
	if f.Op == cloudwire.CallInvite {
		ack.Conv = cloudwire.DirectConversationID(s.user, f.To)
		ack.Duplicate, err = s.invite(ctx, f)
	} else {
		err = s.callRequest(ctx, f)
	}
	if err != nil {
		code := errorCode(err)
		s.pushError(f.Ref, code, s.publicMessage(code, err))
		return
	}
	s.pushFrame(ack)
}

func (s *session) invite(ctx context.Context, f cloudwire.Call) (bool, error) {
	if f.To == s.user {
		return false, fmt.Errorf("%w: cannot call yourself", errBadRequest)
	}
	s.touch(true)
	devices, err := s.svc.calleeDevices(ctx, f.To)
	if err != nil {
		return false, err
	}
	return s.svc.startCall(cloudwire.CallState{
		CallID: f.CallID, From: s.user, FromDevice: s.device, To: f.To, Media: f.Media,
	}, devices)
}

// callRequest sends an answer, reject, cancel or hangup to the call's
// owner, on whatever node it is.
func (s *session) callRequest(ctx context.Context, f cloudwire.Call) error {
	b, err := json.Marshal(callOp{Op: f.Op, User: s.user, Device: s.device, Session: s.id})
	if err != nil {
		return err
	}
	return callRequestBytes(ctx, s.svc.cfg.JS.Conn(), f.CallID, b)
}

// callRequestBytes sends an encoded callOp to the owner of call id.
func callRequestBytes(ctx context.Context, nc *nats.Conn, id string, b []byte) error {
	m, err := nc.RequestWithContext(ctx, callPrefix+id, b)
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("%w: no call %s in progress", errNotFound, id)
	}
	if err != nil {
		return fmt.Errorf("cloud: call request: %w", err)
	}
	var r callReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("cloud: call reply: %w", err)
	}
	switch r.Code {
	case "":
		return nil
	case cloudwire.CodeForbidden:
		return remoteError{errForbidden, r.Message}
	case cloudwire.CodeNotFound:
		return remoteError{errNotFound, r.Message}
	case cloudwire.CodeBadRequest:
		return remoteError{errBadRequest, r.Message}
	}
	return fmt.Errorf("cloud: call %s: %s", r.Code, r.Message)
}

// remoteError is an error another node answered with: its text as sent,
// and the sentinel its code maps back to.
type remoteError struct {
	sentinel error
	msg      string
}

func (e remoteError) Error() string { return e.msg }
func (e remoteError) Unwrap() error { return e.sentinel }
