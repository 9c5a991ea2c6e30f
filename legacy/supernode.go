package legacy

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// DefaultRecordTTL is SupernodeConfig.RecordTTL when zero.
const DefaultRecordTTL = 10 * time.Minute

// MaxRecordAddrs is the most addresses a device may register.
const MaxRecordAddrs = 16

// SupernodeConfig configures a Supernode. Authority is required; the other
// fields have defaults.
type SupernodeConfig struct {
	// Authority is the key device certificates and route records must be
	// signed by.
	Authority ed25519.PublicKey
	// RecordTTL is how long a registration lives unless refreshed; default
	// DefaultRecordTTL.
	RecordTTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives the supernode's logs, tagged component=legacy.supernode;
	// nil discards them.
	Logger *slog.Logger
	// OnRegister, when set, is called after each valid registration, on the
	// stream's goroutine: it must not block for long.
	OnRegister func(rec legacywire.DeviceRecord)
	// Admit, when set, decides whether a device with a valid certificate may
	// register (the client-version policy): a non-empty code refuses the
	// registration with that refusal code and notice, a human-readable text
	// for the user. It runs on the stream's goroutine: it must not block for
	// long.
	Admit func(cert legacywire.Certificate) (code, notice string)
	// Revocations is the supernode's revocation list; nil makes a fresh one.
	// Share it with chat handlers on the same process (ChatConfig) so that
	// they refuse what the supernode learns.
	Revocations *Revocations
	// OfflineTTL is how long a message is held for a recipient with no live
	// device; default DefaultOfflineTTL.
	OfflineTTL time.Duration
	// MaxOfflinePerUser bounds each recipient's offline queue; default
	// DefaultMaxOfflinePerUser.
	MaxOfflinePerUser int
	// Limiter, when set, rate-limits directory requests per peer: a request
	// over the limit is refused with legacywire.CodeRateLimited. Give it its
	// own PeerLimiter (not the chat handler's).
	Limiter *PeerLimiter
	// Peers are the other supernodes of the directory: every accepted
	// registration, route and revocation is replicated to them (see
	// replicate.go). Cert is required with Peers.
	Peers []peer.AddrInfo
	// Cert is the supernode's own certificate, carrying
	// legacywire.CapSupernode: it is what peers check before taking a
	// replicated change.
	Cert *legacywire.Certificate
}

// Validate reports whether the config can build a supernode.
func (c SupernodeConfig) Validate() error {
	if len(c.Authority) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: supernode needs an ed25519 authority key", ErrInvalidConfig)
	}
	if c.OfflineTTL < 0 || c.MaxOfflinePerUser < 0 {
		return fmt.Errorf("%w: negative offline store limits", ErrInvalidConfig)
	}
	if len(c.Peers) > 0 && (c.Cert == nil || !c.Cert.Has(legacywire.CapSupernode)) {
		return fmt.Errorf("%w: replicating to peers needs a certificate with capability %q", ErrInvalidConfig, legacywire.CapSupernode)
	}
	if c.RecordTTL < 0 {
		return fmt.Errorf("%w: RecordTTL %v is negative", ErrInvalidConfig, c.RecordTTL)
	}
	return nil
}

// Supernode serves the directory protocol: device registrations (keyed by
// user, then peer ID) and route records (one per user, highest Seq wins).
type Supernode struct {
	h   host.Host
	cfg SupernodeConfig
	log *slog.Logger

	mu      sync.Mutex
	devices map[string]map[string]legacywire.DeviceRecord // user → peer ID → record
	routes  map[string]legacywire.RouteRecord             // user → highest-Seq record, withdrawn ones included
	mirrors map[string]legacywire.RouteRecord             // user → highest-Seq shadow route (RouteMirror), withdrawn ones included
	revoked *Revocations
	offline map[string][]heldMessage // user → held messages, oldest first
	// handedOver keeps the expiry of held messages being handed over
	// (handedKey), so a failed hand-over requeues them with it.
	handedOver map[string]time.Time
	known      map[string]struct{}        // users that ever registered a device here
	expired    int64                      // held messages dropped at expiry
	reports    map[string][]pendingReport // sender → undeliverable reports, oldest first
	reported   int64                      // reports handed to a sender's device
	stopped    bool
	repl       *replicator           // nil without Peers
	streams    sync.WaitGroup        // stream handlers in flight
	lookups    atomic.Uint64         // lookups answered
	certs      *legacywire.CertCache // every request carries its sender's certificate
}

// NewSupernode registers the directory stream handler on h. The handler
// serves until Run's context ends.
func NewSupernode(h host.Host, cfg SupernodeConfig) (*Supernode, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RecordTTL == 0 {
		cfg.RecordTTL = DefaultRecordTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Supernode{
		h:          h,
		cfg:        cfg,
		log:        componentLogger(cfg.Logger, "legacy.supernode"),
		devices:    make(map[string]map[string]legacywire.DeviceRecord),
		routes:     make(map[string]legacywire.RouteRecord),
		mirrors:    make(map[string]legacywire.RouteRecord),
		revoked:    cfg.Revocations,
		certs:      legacywire.NewCertCache(0),
		offline:    make(map[string][]heldMessage),
		handedOver: make(map[string]time.Time),
		known:      make(map[string]struct{}),
		reports:    make(map[string][]pendingReport),
	}
	if s.cfg.OfflineTTL == 0 {
		s.cfg.OfflineTTL = DefaultOfflineTTL
	}
	if s.cfg.MaxOfflinePerUser == 0 {
		s.cfg.MaxOfflinePerUser = DefaultMaxOfflinePerUser
	}
	if s.revoked == nil {
		s.revoked = NewRevocations(cfg.Authority)
	}
	if len(cfg.Peers) > 0 {
		s.repl = newReplicator(s)
	}
	h.SetStreamHandler(protocol.ID(legacywire.DirectoryProtocolID), s.handle)
	return s, nil
}

// Run sweeps expired registrations until ctx is done, then removes the
// stream handler, waits for the streams in flight (bounded by
// DirectoryStreamTimeout) and returns nil. With Peers, it also replicates
// accepted changes to them until ctx is done.
func (s *Supernode) Run(ctx context.Context) error {
	replDone := make(chan struct{})
	go func() { defer close(replDone); s.repl.run(ctx) }()
	defer func() { <-replDone }()
	tick := time.NewTicker(min(max(s.cfg.RecordTTL/4, time.Second), time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			s.h.RemoveStreamHandler(protocol.ID(legacywire.DirectoryProtocolID))
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
			s.streams.Wait()
			return nil
		case <-tick.C:
			if n := s.sweep(); n > 0 {
				s.log.Debug("swept expired registrations", "count", n)
			}
		}
	}
}

// sweep drops expired device records and returns how many it dropped. Route
// records are kept: their Seq must survive so that a replayed older record
// cannot come back. It also drops expired held messages, reporting them to
// their senders (sweepOfflineLocked).
func (s *Supernode) sweep() int {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepOfflineLocked(now)
	n := 0
	for user, devs := range s.devices {
		for id, rec := range devs {
			if !now.Before(rec.Expires) {
				delete(devs, id)
				n++
			}
		}
		if len(devs) == 0 {
			delete(s.devices, user)
		}
	}
	return n
}

// Lookup returns the supernode's own view of user: its live device records,
// sorted by peer ID, and its route record when one is live.
func (s *Supernode) Lookup(user string) ([]legacywire.DeviceRecord, *legacywire.RouteRecord) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var devs []legacywire.DeviceRecord
	for _, rec := range s.devices[user] {
		if now.Before(rec.Expires) && !s.revoked.Revoked(rec.Cert.PeerID) {
			devs = append(devs, rec)
		}
	}
	slices.SortFunc(devs, func(a, b legacywire.DeviceRecord) int { return cmp.Compare(a.Cert.PeerID, b.Cert.PeerID) })
	var route *legacywire.RouteRecord
	if r, ok := s.routes[user]; ok && r.Live(now) {
		route = &r
	}
	return devs, route
}

// Mirror returns user's shadow route (legacywire.RouteMirror) when one is
// live: the bridge mirroring what the user receives into the cloud.
func (s *Supernode) Mirror(user string) *legacywire.RouteRecord {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.mirrors[user]; ok && r.Live(now) {
		return &r
	}
	return nil
}

// Devices returns the number of live device records.
func (s *Supernode) Devices() int {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, devs := range s.devices {
		for _, rec := range devs {
			if now.Before(rec.Expires) {
				n++
			}
		}
	}
	return n
}

// LiveDevice reports whether id is a device registered here now: a live
// record whose certificate has not expired nor been revoked. RelayAccess
// asks it before a peer may use the relay. It scans the registrations
// (the relay asks once per reservation or circuit, not per packet).
func (s *Supernode) LiveDevice(id peer.ID) bool {
	now, key := s.cfg.Now(), id.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, devs := range s.devices {
		if rec, ok := devs[key]; ok && now.Before(rec.Expires) && now.Before(rec.Cert.NotAfter) {
			return !s.revoked.Revoked(key)
		}
	}
	return false
}

// enter admits a stream handler unless Run has stopped the supernode.
func (s *Supernode) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.streams.Add(1)
	return true
}

func (s *Supernode) handle(str network.Stream) {
	if !s.enter() {
		_ = str.Reset()
		return
	}
	defer s.streams.Done()
	_ = str.SetDeadline(time.Now().Add(DirectoryStreamTimeout))

	var req legacywire.DirRequest
	r := getReader(str)
	err := legacywire.ReadFrame(r, &req)
	putReader(r) // one request per stream
	if err != nil {
		code := frameCode(err)
		if code == "" {
			s.log.Debug("read directory request", "peer", str.Conn().RemotePeer(), "err", err)
			_ = str.Reset()
			return
		}
		refuseAndReset(str, legacywire.DirResponse{Code: code, Error: err.Error()}, s.log)
		return
	}
	var resp legacywire.DirResponse
	if s.cfg.Limiter.Allow(str.Conn().RemotePeer()) {
		resp = s.serve(str.Conn().RemotePeer(), str.Conn().RemoteMultiaddr(), req)
	} else {
		resp = refusal(legacywire.CodeRateLimited, "too many directory requests from this peer")
	}
	if err := legacywire.WriteFrame(str, resp); err != nil {
		s.log.Debug("write directory response", "peer", str.Conn().RemotePeer(), "err", err)
		if len(resp.Messages) > 0 {
			s.requeue(req.Cert.User, resp.Messages)
		}
		if len(resp.Undeliverable) > 0 {
			s.requeueReports(req.Cert.User, resp.Undeliverable)
		}
		_ = str.Reset()
		return
	}
	if len(resp.Messages) > 0 {
		s.handedOverDone(req.Cert.User, resp.Messages)
	}
	_ = str.Close()
}

// serve answers one request from remote, whose connection comes from
// remoteAddr.
func (s *Supernode) serve(remote peer.ID, remoteAddr ma.Multiaddr, req legacywire.DirRequest) legacywire.DirResponse {
	switch req.Op {
	case legacywire.OpRegister:
		return s.register(remote, remoteAddr, req)
	case legacywire.OpLookup:
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		devs, route := s.Lookup(req.User)
		s.lookups.Add(1)
		return legacywire.DirResponse{OK: true, Devices: devs, Route: route, Mirror: s.Mirror(req.User)}
	case legacywire.OpRoute:
		if req.Route == nil {
			return refusal(legacywire.CodeBadRequest, "route op without a route record")
		}
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		return s.storeRoute(req.Route)
	case legacywire.OpRevoke:
		if req.Revocation == nil {
			return refusal(legacywire.CodeBadRequest, "revoke op without a revocation")
		}
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		if err := s.Revoke(*req.Revocation); err != nil {
			return refusal(legacywire.CodeBadRevocation, err.Error())
		}
		return legacywire.DirResponse{OK: true}
	case legacywire.OpStore:
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		return s.store(remote, *req.Cert, req.Message)
	case legacywire.OpReports:
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		return legacywire.DirResponse{OK: true, Undeliverable: s.takeReports(req.Cert.User)}
	case legacywire.OpRevocations:
		if resp, ok := s.checkCert(remote, req.Cert); !ok {
			return resp
		}
		return legacywire.DirResponse{OK: true, Revocations: s.revoked.List(s.cfg.Now())}
	default:
		if req.Op == legacywire.OpReplicate {
			return s.acceptReplica(remote, req)
		}
		return refusal(legacywire.CodeUnknownOp, fmt.Sprintf("unknown op %q", req.Op))
	}
}

// checkCert verifies that cert is signed by the authority, names remote and
// is live; otherwise it returns the refusal to send.
func (s *Supernode) checkCert(remote peer.ID, cert *legacywire.Certificate) (legacywire.DirResponse, bool) {
	if cert == nil {
		return refusal(legacywire.CodeNoCertificate, "the request needs the sender's certificate"), false
	}
	if code, err := verifyPeerCert(s.certs, *cert, s.cfg.Authority, remote.String(), s.cfg.Now(), s.revoked); err != nil {
		s.log.Info("refused certificate", "peer", remote, "user", cert.User, "err", err)
		return refusal(code, err.Error()), false
	}
	return legacywire.DirResponse{}, true
}

func (s *Supernode) register(remote peer.ID, remoteAddr ma.Multiaddr, req legacywire.DirRequest) legacywire.DirResponse {
	if resp, ok := s.checkCert(remote, req.Cert); !ok {
		return resp
	}
	var notice string // told to an admitted device (DirResponse.Notice)
	if s.cfg.Admit != nil {
		code, text := s.cfg.Admit(*req.Cert)
		if code != "" {
			s.log.Info("registration refused", "peer", remote, "code", code)
			return refusal(code, text)
		}
		notice = text
	}
	addrs := req.Addrs
	if len(addrs) > MaxRecordAddrs {
		return refusal(legacywire.CodeBadRequest, fmt.Sprintf("%d addresses, at most %d", len(addrs), MaxRecordAddrs))
	}
	for _, a := range addrs {
		if _, err := ma.NewMultiaddr(a); err != nil {
			return refusal(legacywire.CodeBadRequest, fmt.Sprintf("address %q: %v", a, err))
		}
	}
	if len(addrs) == 0 && remoteAddr != nil {
		addrs = []string{remoteAddr.String()}
	}
	rec := legacywire.DeviceRecord{
		Cert:    *req.Cert,
		Addrs:   slices.Clone(addrs),
		Expires: s.cfg.Now().Add(s.cfg.RecordTTL).UTC().Truncate(time.Millisecond),
	}
	s.mu.Lock()
	devs := s.devices[rec.Cert.User]
	if devs == nil {
		devs = make(map[string]legacywire.DeviceRecord)
		s.devices[rec.Cert.User] = devs
	}
	devs[rec.Cert.PeerID] = rec
	s.known[rec.Cert.User] = struct{}{}
	s.mu.Unlock()
	s.repl.push(legacywire.DirRequest{Record: &rec})

	s.log.Debug("registered device", "peer", remote, "user", rec.Cert.User,
		"platform", rec.Cert.Platform, "version", rec.Cert.ClientVersion)
	if s.cfg.OnRegister != nil {
		s.cfg.OnRegister(rec)
	}
	if req.Fetch {
		return legacywire.DirResponse{OK: true, Messages: s.takeHeld(rec.Cert.User), Notice: notice}
	}
	return legacywire.DirResponse{OK: true, Notice: notice}
}

// HoldNotice holds msg, a notice from legacywire.NoticesUser, for its
// recipient like an offline message: the next registration with fetch of
// any of the recipient's devices takes it. The gateway's Admit hook calls
// it once per device and stage, before the registration it answers, so
// that this very registration delivers it. A message already held (same
// id) is held once.
func (s *Supernode) HoldNotice(msg legacywire.ChatMessage) error {
	if msg.From != legacywire.NoticesUser {
		return fmt.Errorf("legacy: a notice comes from %s, not %q", legacywire.NoticesUser, msg.From)
	}
	s.mu.Lock()
	s.known[msg.To] = struct{}{} // the device registering now is the user's
	s.mu.Unlock()
	if resp := s.store("", legacywire.Certificate{User: legacywire.NoticesUser}, &msg); !resp.OK {
		return fmt.Errorf("legacy: hold notice for %s: %s: %s", msg.To, resp.Code, resp.Error)
	}
	return nil
}

func (s *Supernode) storeRoute(r *legacywire.RouteRecord) legacywire.DirResponse {
	if r == nil {
		return refusal(legacywire.CodeBadRequest, "route op without a route record")
	}
	if err := r.Verify(s.cfg.Authority, s.cfg.Now()); err != nil {
		code := legacywire.CodeBadRoute
		if errors.Is(err, legacywire.ErrExpired) {
			code = legacywire.CodeExpired
		}
		return refusal(code, err.Error())
	}
	routes := s.routes
	switch r.Kind {
	case legacywire.RouteHome:
	case legacywire.RouteMirror:
		routes = s.mirrors
	default:
		return refusal(legacywire.CodeBadRoute, fmt.Sprintf("unknown route kind %q", r.Kind))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := routes[r.User]; ok && r.Seq <= old.Seq {
		if r.Seq == old.Seq && slices.Equal(r.Signature, old.Signature) {
			return legacywire.DirResponse{OK: true} // the same record again
		}
		return refusal(legacywire.CodeStaleRoute, fmt.Sprintf("seq %d is not above the stored %d", r.Seq, old.Seq))
	}
	routes[r.User] = *r
	s.repl.push(legacywire.DirRequest{Route: r})
	s.log.Info("stored route", "user", r.User, "bridge", r.PeerID, "seq", r.Seq, "withdrawn", r.Withdrawn, "kind", r.Kind)
	return legacywire.DirResponse{OK: true}
}

// Revoke verifies r against the authority, adds it to the supernode's
// revocation list and drops the revoked device's registration: from then on
// the device is refused at registration and lookup, and no lookup returns it.
func (s *Supernode) Revoke(r legacywire.Revocation) error {
	added, err := s.revoked.Add(r, s.cfg.Now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	if devs := s.devices[r.User]; devs != nil {
		delete(devs, r.PeerID)
		if len(devs) == 0 {
			delete(s.devices, r.User)
		}
	}
	s.mu.Unlock()
	if added {
		s.repl.push(legacywire.DirRequest{Revocation: &r})
		s.log.Info("stored revocation", "peer", r.PeerID, "user", r.User)
	}
	return nil
}

// Revocations returns the supernode's revocation list.
func (s *Supernode) Revocations() *Revocations { return s.revoked }

func refusal(code, msg string) legacywire.DirResponse {
	return legacywire.DirResponse{Code: code, Error: msg}
}
