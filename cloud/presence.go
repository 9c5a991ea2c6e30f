package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

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
	// Sending to someone not among them, or a group change, looks them up
	// again at once; a new conversation someone else started reaches this
	// session's contacts within contactsTTL.
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

// kvStreamPrefix names the stream under a key-value bucket.
const kvStreamPrefix = "KV_"

// keysUnder returns the keys of bucket (whose stream is kvs) that start
// with prefix and have one more token, sorted. It reads the stream's
// subjects (one stream info request, paged by the server) instead of
// KeyValue.ListKeysFiltered, which creates a consumer per call: one per
// session opening and presence change ran into the server's consumer
// limit during reconnect storms. Keys deleted but not purged are listed
// too; callers check what they read.
//
// kvs may be nil (a store put together without it, as BridgeLive's): the
// stream is then looked up through js first.
func keysUnder(ctx context.Context, js jetstream.JetStream, kvs jetstream.Stream, bucket, prefix string) ([]string, error) {
	if kvs == nil {
		var err error
		if kvs, err = js.Stream(ctx, kvStreamPrefix+bucket); err != nil {
			return nil, fmt.Errorf("cloud: bucket %s stream: %w", bucket, err)
		}
	}
	subjPrefix := "$KV." + bucket + "."
	info, err := kvs.Info(ctx, jetstream.WithSubjectFilter(subjPrefix+prefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("cloud: list %s keys: %w", bucket, err)
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, subjPrefix))
	}
	slices.Sort(keys)
	return keys, nil
}

// contacts returns the users who share a conversation with user (user
// excluded), at most maxContacts of them.
func (st *store) contacts(ctx context.Context, user string) ([]string, error) {
	seen := map[string]bool{user: true}
	var out []string
	err := st.eachConversation(ctx, user, func(_ string, members []string) bool {
		for _, m := range members {
			if !seen[m] && len(out) < maxContacts {
				seen[m] = true
				out = append(out, m)
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// eachConversation calls fn with each conversation user is a member of
// now and its members, from the member index (checked against each
// conversation: a removed member's index key may linger), until fn
// returns false.
func (st *store) eachConversation(ctx context.Context, user string, fn func(conv string, members []string) bool) error {
	prefix := subjectToken(user) + "."
	keys, err := keysUnder(ctx, st.js, st.memberKeys, memberBucket, prefix)
	if err != nil {
		return err
	}
	for _, k := range keys {
		conv := untoken(strings.TrimPrefix(k, prefix))
		members, err := st.members(ctx, conv)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !slices.Contains(members, user) {
			continue // left the group: its index key was deleted
		}
		if !fn(conv, members) {
			return nil
		}
	}
	return nil
}

// userDevice is one of a user's devices and its record.
type userDevice struct {
	id  string
	rec deviceRecord
}

// userDevices returns user's online devices, by id: every one, or the
// first limit when limit is positive (a user with many devices costs a
// snapshot no more than the snapshot can hold).
func (st *store) userDevices(ctx context.Context, user string, limit int) ([]userDevice, error) {
	prefix := subjectToken(user) + "."
	keys, err := keysUnder(ctx, st.js, st.deviceKeys, devicesBucket, prefix)
	if err != nil {
		return nil, err
	}
	var devs []userDevice
	for _, k := range keys {
		e, err := st.devices.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cloud: read device: %w", err)
		}
		var r deviceRecord
		if json.Unmarshal(e.Value(), &r) != nil || !r.Online || !st.lease.alive(ctx, r.Node) {
			continue // offline, or its node died (runLease marks it offline)
		}
		if r.State == "" {
			r.State, r.Since = cloudwire.PresenceActive, r.At
		}
		devs = append(devs, userDevice{untoken(strings.TrimPrefix(k, prefix)), r})
		if len(devs) == limit {
			break
		}
	}
	return devs, nil
}

// presenceSnapshot returns the presence of the online devices of users
// (in that order, skipping the device except of user self), at most
// cloudwire.MaxSnapshotPresences of them.
func (st *store) presenceSnapshot(ctx context.Context, self, except string, users []string) (cloudwire.PresenceSnapshot, error) {
	snap := cloudwire.PresenceSnapshot{Presences: []cloudwire.Presence{}}
	for _, u := range users {
		// One more than there is room for: the session's own device may
		// be among them.
		devs, err := st.userDevices(ctx, u, cloudwire.MaxSnapshotPresences-len(snap.Presences)+1)
		if err != nil {
			return snap, err
		}
		for _, d := range devs {
			if u == self && d.id == except {
				continue
			}
			if len(snap.Presences) == cloudwire.MaxSnapshotPresences {
				return snap, nil
			}
			snap.Presences = append(snap.Presences, cloudwire.Presence{User: u, Device: d.id, State: d.rec.State, At: d.rec.Since})
		}
	}
	return snap, nil
}

// sendPresenceSnapshot queues the presence snapshot of the session's
// user's other devices and contacts (protocol 6), unless none is online. Called from the reader
// goroutine, after announce looked up the contacts.
func (s *session) sendPresenceSnapshot(ctx context.Context) error {
	contacts, err := s.sessionContacts(ctx)
	if err != nil {
		return err
	}
	snap, err := s.svc.store.presenceSnapshot(ctx, s.user, s.device, append([]string{s.user}, contacts...))
	if err != nil || len(snap.Presences) == 0 {
		return err // nobody online: the client's default, no frame needed
	}
	s.pushFrame(snap)
	return nil
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
	p := cloudwire.Presence{User: s.user, Device: s.device, State: state, At: s.svc.cfg.Now()}
	return s.svc.publishPresence(append([]string{s.user}, contacts...), p, s.id)
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
	} else {
		s.recordIdle()
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

// recordIdle records the session's device as idle since now, keeping its
// last activity (the ringing order). Called from the handler goroutine.
func (s *session) recordIdle() {
	now := s.svc.cfg.Now()
	ctx, cancel := context.WithTimeout(s.ctx, opTimeout)
	defer cancel()
	r := deviceRecord{At: s.touchedAt, Online: true, State: cloudwire.PresenceIdle, Since: now}
	if err := s.svc.store.putDevice(ctx, s.user, s.device, r); err != nil {
		s.log.Warn("device presence not recorded", "err", err)
	}
}

// Node leases. Every node heartbeats a key of its own in cloud_nodes, a
// bucket whose entries expire after the lease, and writes its id into the
// device records of its sessions. A node that dies without closing its
// sessions (kill -9, a lost machine) stops heartbeating: once its key has
// expired, snapshots and ringing no longer count its devices as online,
// and the surviving nodes mark them offline and tell their contacts
// (runLease).
const (
	// nodesBucket holds one key per live node: its id, refreshed every
	// lease/3 and expiring after the lease.
	nodesBucket = "cloud_nodes"
	// DefaultNodeLease is how long a silent node's devices stay online.
	DefaultNodeLease = 15 * time.Second
	// minNodeLease keeps heartbeats (lease/3) well apart.
	minNodeLease = time.Second
)

// lease is this node's view of which nodes are alive.
type lease struct {
	self string // this node's id
	kv   jetstream.KeyValue
	keys jetstream.Stream // the stream under kv, listed by keysUnder
	ttl  time.Duration
	// calls and callKeys are the bucket of calls in progress and its
	// stream (calls.go): what a dead node leaves to be ended.
	calls    jetstream.KeyValue
	callKeys jetstream.Stream

	mu   sync.Mutex
	live map[string]bool // as of the last listing or lookup
}

// openLease creates or binds the nodes bucket (in memory: liveness need
// not survive a restart of the engine) and the calls bucket, and
// heartbeats a fresh node id.
func openLease(ctx context.Context, js jetstream.JetStream, replicas int, ttl time.Duration) (*lease, error) {
	kv, keys, err := openListedBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: nodesBucket, Description: "Ferry cloud nodes: one key per live node, expiring after the node lease.",
		History: 1, TTL: ttl, Storage: jetstream.MemoryStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, err
	}
	calls, callKeys, err := openListedBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket: callsBucket, Description: "Ferry cloud calls in progress: state and owning node, ended by the other nodes when the owner dies.",
		History: 1, TTL: callRecordAge, Storage: jetstream.FileStorage, Replicas: replicas,
	})
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("cloud: node id: %w", err)
	}
	l := &lease{self: id.String(), kv: kv, keys: keys, ttl: ttl, calls: calls, callKeys: callKeys, live: map[string]bool{}}
	if err := l.heartbeat(ctx); err != nil {
		return nil, err
	}
	if _, err := l.refresh(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// openListedBucket creates or binds a bucket and the stream under it,
// whose subjects list its keys (keysUnder).
func openListedBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, jetstream.Stream, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud: bucket %s: %w", cfg.Bucket, err)
	}
	st, err := js.Stream(ctx, kvStreamPrefix+cfg.Bucket)
	if err != nil {
		return nil, nil, fmt.Errorf("cloud: bucket %s stream: %w", cfg.Bucket, err)
	}
	return kv, st, nil
}

func (l *lease) heartbeat(ctx context.Context) error {
	if _, err := l.kv.Put(ctx, l.self, nil); err != nil {
		return fmt.Errorf("cloud: node heartbeat: %w", err)
	}
	return nil
}

// refresh lists the live nodes and returns those that were live at the
// previous listing and are not any more.
func (l *lease) refresh(ctx context.Context) (gone []string, err error) {
	keys, err := keysUnder(ctx, nil, l.keys, nodesBucket, "")
	if err != nil {
		return nil, err
	}
	now := make(map[string]bool, len(keys))
	for _, k := range keys {
		now[k] = true
	}
	now[l.self] = true
	l.mu.Lock()
	defer l.mu.Unlock()
	for n := range l.live {
		if !now[n] {
			gone = append(gone, n)
		}
	}
	l.live = now
	return gone, nil
}

// alive reports whether node holds a lease. A node not seen at the last
// listing (one that started since) is looked up. A record without a node
// (written before leases) counts as alive; so does a node whose lookup
// fails for another reason than its absence, so that a storage hiccup
// does not show everyone offline.
func (l *lease) alive(ctx context.Context, node string) bool {
	if l == nil || node == "" || node == l.self {
		return true
	}
	l.mu.Lock()
	live, known := l.live[node]
	l.mu.Unlock()
	if known {
		return live
	}
	_, err := l.kv.Get(ctx, node)
	switch {
	case err == nil:
		l.mu.Lock()
		l.live[node] = true
		l.mu.Unlock()
		return true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false
	}
	return true
}

// count is how many nodes held a lease at the last listing, bridges
// showing devices (bridgedevice.go) left out.
func (l *lease) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for node, live := range l.live {
		if live && !strings.HasPrefix(node, bridgeNodePrefix) {
			n++
		}
	}
	return n
}

// nodeOf is the node to record in a device record written by this node.
func (st *store) nodeOf() string {
	if st.lease == nil {
		return ""
	}
	return st.lease.self
}

// runLease heartbeats this node until ctx ends and, whenever a node's
// lease has expired, marks that node's devices offline and ends its
// calls.
func (s *Service) runLease(ctx context.Context) {
	l := s.store.lease
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	// Devices left online by nodes whose lease expired before this one
	// started.
	s.m.nodes.Set(float64(l.count()))
	notAlive := func(n string) bool { return !l.alive(ctx, n) }
	s.reapDevices(ctx, notAlive)
	s.reapCalls(ctx, notAlive)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.heartbeat(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("node heartbeat failed", "err", err)
		}
		gone, err := l.refresh(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("node lease listing failed", "err", err)
			}
			continue
		}
		s.m.nodes.Set(float64(l.count()))
		if len(gone) > 0 {
			s.log.Info("node leases expired; marking their devices offline and ending their calls", "nodes", gone)
			isGone := func(n string) bool { return slices.Contains(gone, n) }
			s.reapDevices(ctx, isGone)
			s.reapCalls(ctx, isGone)
		}
	}
}

// reapDevices marks offline every online device recorded by a node dead
// reports, and tells the device's user and contacts. Each record is
// changed by compare-and-set on its revision: when several nodes reap at
// once, or the device has meanwhile reconnected elsewhere, one change
// wins and one offline presence goes out. It reads every device record:
// a node dies rarely, and the devices bucket has no index by node.
func (s *Service) reapDevices(ctx context.Context, dead func(node string) bool) {
	st := s.store
	info, err := st.deviceKeys.Info(ctx, jetstream.WithSubjectFilter("$KV."+devicesBucket+".>"))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("device records not listed", "err", err)
		}
		return
	}
	prefix := "$KV." + devicesBucket + "."
	for subj := range info.State.Subjects {
		if ctx.Err() != nil {
			return
		}
		key := strings.TrimPrefix(subj, prefix)
		user, device, ok := strings.Cut(key, ".")
		if !ok {
			continue
		}
		e, err := st.devices.Get(ctx, key)
		if err != nil {
			continue // deleted meanwhile, or unreadable: nothing to reap
		}
		var r deviceRecord
		if json.Unmarshal(e.Value(), &r) != nil || !r.Online || r.Node == "" || r.Node == st.nodeOf() || !dead(r.Node) {
			continue
		}
		now := s.cfg.Now()
		r.Online, r.State, r.Since = false, cloudwire.PresenceOffline, now
		data, err := json.Marshal(r)
		if err != nil {
			continue
		}
		if _, err := st.devices.Update(ctx, key, data, e.Revision()); err != nil {
			continue // changed meanwhile: someone else reaped it, or it reconnected
		}
		s.m.reaped.Inc()
		user, device = untoken(user), untoken(device)
		contacts, err := st.contacts(ctx, user)
		if err == nil {
			err = s.publishPresence(append([]string{user}, contacts...), cloudwire.Presence{User: user, Device: device, State: cloudwire.PresenceOffline, At: now}, "")
		}
		if err != nil {
			s.log.Warn("offline presence of a dead node's device not sent", "err", err)
		}
	}
}

// publishPresence sends p to the sessions of users on every node, except
// the session exclude.
func (s *Service) publishPresence(users []string, p cloudwire.Presence, exclude string) error {
	b, err := cloudwire.Encode(p)
	if err != nil {
		return err
	}
	return s.publishLive(users, b, exclude, "")
}
