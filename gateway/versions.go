package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// admitTimeout bounds the policy read on a registration.
const admitTimeout = 2 * time.Second

// Notices: the version policy's text for an admitted device that must be
// told (warning stage, a known device under a soft block), delivered once
// per device and stage as a message from the system contact.
const (
	// noticesBucket remembers which (network, device, stage) notices
	// were held on the overlay, so that a device registering in a loop,
	// at any supernode of the cluster, gets one. (The cloud's notices are
	// deduplicated by their message id in the cloud's own send records.)
	noticesBucket = "ferry_notices"
	// noticesMaxAge forgets a delivered notice after half a year, as the
	// census forgets devices.
	noticesMaxAge = 180 * 24 * time.Hour
	// maxNoticesSeen bounds the in-memory set in front of the bucket.
	maxNoticesSeen = 100_000
)

// Results of gateway_versions_notices_total.
const (
	noticeDelivered = "delivered"
	noticeRepeat    = "repeat"
	noticeFailed    = "failed"
)

// versionControl is the client-version retirement plane: policies in KV,
// decisions counted, pending counts exported.
type versionControl struct {
	policies  *migratestore.Policies
	decisions *prometheus.CounterVec
	notices   *prometheus.CounterVec
	pending   *prometheus.GaugeVec
	enforced  *prometheus.GaugeVec
	active    *activeDevices
	told      *noticeLog
}

// noticeLog remembers the notices already delivered on the overlay: a KV
// create per (device, stage), with a bounded in-memory set in front so
// that a registration refresh costs no engine round trip.
type noticeLog struct {
	kv   jetstream.KeyValue
	mu   sync.Mutex
	seen map[string]struct{}
}

// first reports whether the notice key is new (and records it): false
// when it was delivered before, on this agent or another.
func (n *noticeLog) first(ctx context.Context, key string) (bool, error) {
	n.mu.Lock()
	_, ok := n.seen[key]
	n.mu.Unlock()
	if ok {
		return false, nil
	}
	_, err := n.kv.Create(ctx, key, nil)
	if err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("notice log: %w", err)
	}
	n.mu.Lock()
	if len(n.seen) >= maxNoticesSeen {
		clear(n.seen)
	}
	n.seen[key] = struct{}{}
	n.mu.Unlock()
	return err == nil, nil
}

// noticeKey names a (network, device, stage) notice as a KV key.
func noticeKey(network, user, device, stage string) string {
	sum := sha256.Sum256([]byte(network + "\n" + user + "\n" + device + "\n" + stage))
	return network + "." + hex.EncodeToString(sum[:16])
}

func (a *agent) startVersions(ctx context.Context) (*versionControl, error) {
	vc := &versionControl{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_versions_decisions_total", Help: "Client-version policy decisions at enforcement points, by platform, stage and outcome.",
		}, []string{"platform", "stage", "outcome"}),
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_versions_pending_devices", Help: "Devices a version policy affects but does not refuse yet (dry-run count), by platform, as of the last report.",
		}, []string{"platform"}),
		enforced: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_versions_enforced_devices", Help: "Devices a version policy affects and already refuses, by platform, as of the last report.",
		}, []string{"platform"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_versions_notices_total", Help: "Version-policy notices for admitted devices, by network and result (delivered once per device and stage as a message from the system contact, repeat, failed).",
		}, []string{"network", "result"}),
		active: newActiveDevices(),
	}
	a.reg.MustRegister(vc.decisions, vc.notices, vc.pending, vc.enforced, vc.active)
	var err error
	if vc.policies, err = migratestore.NewPolicies(ctx, a.eng.JS, "", a.cfg.NatsReplicas); err != nil {
		return nil, err
	}
	kv, err := a.eng.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      noticesBucket,
		Description: "Ferry version notices held on the overlay (key: network and a hash of user, device and stage)",
		History:     1,
		TTL:         noticesMaxAge,
		Replicas:    max(a.cfg.NatsReplicas, 1),
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", noticesBucket, err)
	}
	vc.told = &noticeLog{kv: kv, seen: make(map[string]struct{})}
	return vc, nil
}

// admitLegacy is the supernode's Admit hook: the version decision for a
// registering device, with the user's phase and whether the device is
// already linked taken from the migration state. A refusal is
// CodeUpgradeRequired with the notice; an admitted device that must be told
// (warning stage, or a known device under a soft block) gets an empty code
// and the notice, with the next stage's date, which the supernode puts in
// its answer; the notice is also held at the supernode, once per device
// and stage, as a message from legacywire.NoticesUser that this
// registration delivers. A new device of a user whose home is the cloud
// that is not cloud-capable is refused like a soft-blocked one
// (decideVersion, migrate.GuardLink); a certificate for the system
// contact's id is refused as a bad certificate.
func (a *agent) admitLegacy(cert legacywire.Certificate) (code, notice string) {
	if errors.Is(migrate.CheckUserID(cert.User), migrate.ErrReservedUserID) {
		// No certificate is issued for the system contact; one that exists
		// anyway must not let a device speak as it.
		return legacywire.CodeBadCertificate, "the user id " + cert.User + " is reserved for the system contact"
	}
	return a.admitOverlay(context.Background(), cert, a.spokenLegacyProtocol(cert.PeerID), migrate.SourceLegacy)
}

// admitOverlay is the version decision for an overlay device that spoke
// protocol (0 when unknown) to source (migrate.SourceLegacy at the
// supernode, SourceBridge at the bridge): the refusal code and notice, or
// the notice alone (held once per device and stage as a message from the
// system contact) for a device that is admitted but must be told.
func (a *agent) admitOverlay(ctx context.Context, cert legacywire.Certificate, protocol int, source string) (code, notice string) {
	dec, known, ok := a.decideVersion(ctx, cert.User, cert.PeerID, cert.Platform, cert.ClientVersion, cert.Capabilities, protocol, source)
	switch {
	case !ok:
		return "", ""
	case dec.Refuses(known):
		return legacywire.CodeUpgradeRequired, dec.Notice
	case dec.Tells(known):
		a.holdLegacyNotice(ctx, cert, dec)
		return "", dec.Notice
	}
	return "", ""
}

// holdLegacyNotice holds dec's notice for cert's user at the supernode,
// the first time this device is told at this stage.
func (a *agent) holdLegacyNotice(ctx context.Context, cert legacywire.Certificate, dec migrate.Decision) {
	if a.supernode == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	key := noticeKey(migrate.SourceLegacy, cert.User, cert.PeerID, string(dec.Stage))
	first, err := a.versions.told.first(ctx, key)
	if err == nil && first {
		err = a.supernode.HoldNotice(legacywire.ChatMessage{ID: key, From: legacywire.NoticesUser, To: cert.User,
			Text: dec.Notice, SentAt: time.Now().UTC().Truncate(time.Millisecond)})
	}
	a.countNotice(migrate.SourceLegacy, first, err)
}

// countNotice counts one notice for an admitted device by its result.
func (a *agent) countNotice(network string, first bool, err error) {
	result := noticeRepeat
	switch {
	case err != nil:
		result = noticeFailed
		a.log.Warn("version notice not delivered", "network", network, "err", err)
	case first:
		result = noticeDelivered
	}
	a.versions.notices.WithLabelValues(network, result).Inc()
}

// cloudClientPolicy is the cloud service's ClientPolicy: the same decision
// as admitLegacy, once per native hello. A refusal carries the minimum
// version, update URL and deadline the client shows; an admitted client
// that must be told gets the notice in its welcome, and once per device
// and stage as a system event from the system contact in its history,
// written before the session's initial sync reads it.
func (a *agent) cloudClientPolicy(ctx context.Context, user string, h cloudwire.Hello) cloud.ClientVerdict {
	dec, known, ok := a.decideVersion(ctx, user, h.Device, h.Platform, h.ClientVersion, h.Capabilities, cloudwire.ProtocolVersion, migrate.SourceCloud)
	switch {
	case !ok:
		return cloud.ClientVerdict{}
	case dec.Refuses(known):
		return cloud.ClientVerdict{Refuse: &cloudwire.UpgradeRequired{Minimum: dec.Minimum, UpdateURL: dec.UpdateURL, Deadline: dec.Deadline, Notice: dec.Notice}}
	case dec.Tells(known) && a.cloud != nil:
		dup, err := a.cloud.PostNotice(ctx, user, h.Device, string(dec.Stage), dec.Notice)
		a.countNotice(migrate.SourceCloud, !dup, err)
		return cloud.ClientVerdict{Notice: dec.Notice}
	}
	return cloud.ClientVerdict{}
}

// checkCloudClient is cloudClientPolicy's refusal alone (the form of
// cloud.Config.CheckClient).
func (a *agent) checkCloudClient(ctx context.Context, user string, h cloudwire.Hello) *cloudwire.UpgradeRequired {
	return a.cloudClientPolicy(ctx, user, h).Refuse
}

// decideVersion applies the platform's version policy to one device of
// user, with the user's phase and whether the device is already linked
// taken from the migration state, then the rule for new devices of users
// whose home is the cloud (migrate.GuardLink: a device that is not
// cloud-capable cannot be linked), and counts the decision. protocol is the
// version the device actually speaks on network (migrate.SourceLegacy or
// SourceCloud; 0 when unknown), checked against the policy's minimum for
// that network whatever version the device claims. ok is false when
// nothing applies (no policy for a valid platform, or the policy store is
// down, and the link rule does not refuse: the device is admitted).
func (a *agent) decideVersion(ctx context.Context, user, device, platform, version string, caps []string, protocol int, network string) (dec migrate.Decision, known, ok bool) {
	if a.versions == nil {
		return dec, false, false
	}
	phase := migrate.PhaseLegacy
	if u, found := a.state.Get(user); found {
		phase = u.Phase
		_, known = u.Device(device)
	}
	if caps == nil {
		caps = []string{}
	}
	cd := migrate.ClientDevice{ID: device, Platform: platform, Version: version,
		Capabilities: caps, Protocol: protocol, Network: network, Known: known}
	now := time.Now()
	var p *migrate.VersionPolicy
	if migrate.CheckPlatform(platform) == nil {
		ctx, cancel := context.WithTimeout(ctx, admitTimeout)
		got, err := a.versions.policies.Get(ctx, platform)
		cancel()
		switch {
		case err == nil:
			p = &got
			dec = migrate.Decide(p, phase, cd, now)
		case !errors.Is(err, migrate.ErrPolicyNotFound):
			a.log.Warn("version policy unavailable; admitting", "platform", platform, "err", err)
		}
	}
	dec = migrate.GuardLink(p, dec, phase, cd)
	label := migrate.OtherLabel // platforms are self-declared: only a policy's names one
	switch {
	case p != nil:
		label = p.Platform
	case !dec.Refuses(known):
		return dec, known, false
	}
	a.versions.decisions.WithLabelValues(label, string(dec.Stage), string(dec.Outcome)).Inc()
	return dec, known, true
}

// legacyProtocol is the chat version an overlay peer speaks: the highest
// chat protocol its libp2p stack announced to the supernode (identify), which
// is what multistream-select settles on, whatever version the peer claims.
// It is 0 while identify has not finished or without a supernode.
func (a *agent) legacyProtocol(peerID string) int { return chatProtocolOn(a.snHost, peerID) }

// chatProtocolOn is the highest chat version the peer announced to h
// (identify), 0 when unknown or h is nil.
func chatProtocolOn(h host.Host, peerID string) int {
	if h == nil {
		return 0
	}
	id, err := peer.Decode(peerID)
	if err != nil {
		return 0
	}
	ids := legacy.ChatProtocolIDs(0) // highest first
	got, err := h.Peerstore().FirstSupportedProtocol(id, ids...)
	if err != nil || got == "" {
		return 0
	}
	return legacy.LatestChatVersion - slices.Index(ids, got)
}

func (a *agent) registerVersionRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/admin/versions/census", a.authed(a.versionCensus))
	mux.Handle("GET /v1/admin/versions/policies", a.authed(a.listPolicies))
	mux.Handle("POST /v1/admin/versions/retire", a.authed(a.retireVersions))
	mux.Handle("POST /v1/admin/versions/block", a.authed(a.blockVersion))
	mux.Handle("GET /v1/admin/versions/report", a.authed(a.versionReport))
}

func (a *agent) versionCensus(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var active time.Duration
	if s := q.Get("active"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", "active: want a duration such as 720h")
			return
		}
		active = d
	}
	writeJSON(w, http.StatusOK, migrate.TakeCensus(a.state.Snapshot(), a.devices.census, q.Get("platform"), active, time.Now()))
}

func (a *agent) listPolicies(w http.ResponseWriter, r *http.Request) {
	ps, err := a.versions.policies.List(r.Context())
	if err != nil {
		writeVersionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]migrate.VersionPolicy{"policies": ps})
}

// retireRequest is the body of POST /v1/admin/versions/retire: the fields
// it sets on the platform's policy (the rest are kept). With DryRun the
// policy is only evaluated, never saved.
type retireRequest struct {
	Platform     string                `json:"platform"`
	Below        string                `json:"below"`
	Recommended  string                `json:"recommended,omitempty"`
	Schedule     []migrate.StageAt     `json:"schedule,omitempty"`
	Scope        []migrate.Phase       `json:"scope,omitempty"`
	JitterWindow migrate.Duration      `json:"jitter_window,omitempty"`
	UpdateURL    string                `json:"update_url,omitempty"`
	Unknown      migrate.UnknownAction `json:"unknown,omitempty"`
	Reason       string                `json:"reason"`
	DryRun       bool                  `json:"dry_run"`
	// OpID makes a retried change idempotent: the same id as the policy's
	// last change changes and audits nothing and answers the policy as it
	// is. Empty: a new id.
	OpID string `json:"op_id,omitempty"`
}

// retireResponse answers a retire: the policy (saved unless dry run) and
// its impact now.
type retireResponse struct {
	Policy migrate.VersionPolicy `json:"policy"`
	Impact migrate.Impact        `json:"impact"`
	Saved  bool                  `json:"saved"`
}

func (req retireRequest) apply(p migrate.VersionPolicy, now time.Time) migrate.VersionPolicy {
	p.Minimum = req.Below
	if req.Recommended != "" {
		p.Recommended = req.Recommended
	}
	if req.Schedule != nil {
		p.Schedule = req.Schedule
	}
	p.Scope = req.Scope
	p.JitterWindow = req.JitterWindow
	if req.UpdateURL != "" {
		p.UpdateURL = req.UpdateURL
	}
	if req.Unknown != "" {
		p.Unknown = req.Unknown
	}
	p.Updated = now
	return p
}

func (a *agent) retireVersions(w http.ResponseWriter, r *http.Request) {
	var req retireRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !req.DryRun && strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason_required", "a reason is required")
		return
	}
	now := time.Now().UTC()
	cur, err := a.versions.policies.Get(r.Context(), req.Platform)
	if errors.Is(err, migrate.ErrPolicyNotFound) {
		cur, err = migrate.VersionPolicy{Platform: req.Platform}, nil
	}
	if err != nil {
		writeVersionError(w, err)
		return
	}
	p := req.apply(cur.Clone(), now)
	if err := p.Validate(); err != nil {
		writeVersionError(w, err)
		return
	}
	if req.DryRun {
		writeJSON(w, http.StatusOK, retireResponse{Policy: p, Impact: a.dryRun(&p, now)})
		return
	}
	out, im, err := a.saveVersions(r, req.Platform, req.OpID, "retire below "+req.Below, req.Reason, now, func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) {
		return req.apply(p, now), nil
	})
	if err != nil {
		writeVersionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, retireResponse{Policy: out, Impact: im, Saved: true})
}

// blockRequest is the body of POST /v1/admin/versions/block: an emergency
// block of one exact version, which skips the schedule.
type blockRequest struct {
	Platform string `json:"platform"`
	Version  string `json:"version"`
	Reason   string `json:"reason"`
	DryRun   bool   `json:"dry_run"`
	// OpID: as retireRequest's.
	OpID string `json:"op_id,omitempty"`
}

func (a *agent) blockVersion(w http.ResponseWriter, r *http.Request) {
	var req blockRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !requireReason(w, req.Reason, "an emergency block needs a reason") {
		return
	}
	now := time.Now().UTC()
	add := func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) {
		for _, b := range p.Blocked {
			if b.Version == req.Version {
				return p, nil
			}
		}
		p.Blocked = append(p.Blocked, migrate.BlockedVersion{Version: req.Version, Reason: req.Reason, Since: now})
		p.Updated = now
		return p, p.Validate()
	}
	if req.DryRun {
		cur, err := a.versions.policies.Get(r.Context(), req.Platform)
		if errors.Is(err, migrate.ErrPolicyNotFound) {
			cur, err = migrate.VersionPolicy{Platform: req.Platform}, nil
		}
		if err != nil {
			writeVersionError(w, err)
			return
		}
		p, err := add(cur.Clone())
		if err != nil {
			writeVersionError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, retireResponse{Policy: p, Impact: a.dryRun(&p, now)})
		return
	}
	out, im, err := a.saveVersions(r, req.Platform, req.OpID, "block "+req.Version, req.Reason, now, add)
	if err != nil {
		writeVersionError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, retireResponse{Policy: out, Impact: im, Saved: true})
}

// versionReport compares, per policy, the affected devices that are still
// pending with those already refused, and refreshes the pending gauge.
func (a *agent) versionReport(w http.ResponseWriter, r *http.Request) {
	ps, err := a.versions.policies.List(r.Context())
	if err != nil {
		writeVersionError(w, err)
		return
	}
	now := time.Now().UTC()
	out := make([]migrate.Impact, 0, len(ps))
	for i := range ps {
		im := a.dryRun(&ps[i], now)
		out = append(out, im)
	}
	writeJSON(w, http.StatusOK, map[string][]migrate.Impact{"reports": out})
}

func (a *agent) dryRun(p *migrate.VersionPolicy, now time.Time) migrate.Impact {
	im := migrate.DryRun(a.state.Snapshot(), p, 0, now)
	a.impactGauges(p, im)
	return im
}

// impactGauges exports a saved policy's impact.
func (a *agent) impactGauges(p *migrate.VersionPolicy, im migrate.Impact) {
	if p.Revision != 0 {
		a.versions.pending.WithLabelValues(p.Platform).Set(float64(im.Pending))
		a.versions.enforced.WithLabelValues(p.Platform).Set(float64(im.Enforced))
	}
}

// saveVersions saves the platform's policy as change makes it, its audit
// event (kind versions: from the platform and its stage before, to what
// changed, with the new policy's impact and the revision it replaces)
// written first, as the intent of the compare-and-set on the policy's
// chain (migratestore.Policies.ModifyAudited). A repeated opID changes and
// audits nothing and returns the policy as it is; opID "" means a new id.
func (a *agent) saveVersions(r *http.Request, platform, opID, to, reason string, now time.Time, change func(migrate.VersionPolicy) (migrate.VersionPolicy, error)) (migrate.VersionPolicy, migrate.Impact, error) {
	if opID == "" {
		opID = uuid.Must(uuid.NewV7()).String()
	}
	var im migrate.Impact // of the policy the last attempt wrote
	out, wrote, err := a.versions.policies.ModifyAudited(r.Context(), a.control.audit, platform, opID, func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
		next, err := change(cur)
		if err != nil {
			return next, migrate.AuditEvent{}, err
		}
		im = migrate.DryRun(a.state.Snapshot(), &next, 0, now)
		stage, _ := cur.StageAt(now)
		return next, migrate.AuditEvent{At: now, Kind: migrate.AuditVersions, Actor: actor(r),
			Step: -1, From: platform + ":" + string(stage), To: to, Reason: reason, Result: migrate.ResultOK,
			Values: map[string]float64{"affected_devices": float64(im.AffectedDevices), "affected_users": float64(im.AffectedUsers),
				"pending": float64(im.Pending), "enforced": float64(im.Enforced), "from_revision": float64(cur.Revision)}}, nil
	})
	if err != nil {
		return migrate.VersionPolicy{}, migrate.Impact{}, err
	}
	if !wrote {
		// A repeat: the impact of the policy as stored, which an earlier
		// request (or this one's first attempt, whose compare-and-set
		// lost) wrote.
		return out, a.dryRun(&out, now), nil
	}
	a.impactGauges(&out, im)
	return out, im, nil
}

// writeVersionError maps the version plane's errors to HTTP at the edge.
func writeVersionError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, migrate.ErrPolicyNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, migrate.ErrInvalidPolicy):
		writeError(w, http.StatusBadRequest, "invalid_policy", err.Error())
	default:
		writeDomainError(w, err)
	}
}
