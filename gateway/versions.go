package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// admitTimeout bounds the policy read on a registration.
const admitTimeout = 2 * time.Second

// versionControl is the client-version retirement plane: policies in KV,
// decisions counted, pending counts exported.
type versionControl struct {
	policies  *migratestore.Policies
	decisions *prometheus.CounterVec
	pending   *prometheus.GaugeVec
	enforced  *prometheus.GaugeVec
	active    *activeDevices
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
		active: newActiveDevices(),
	}
	a.reg.MustRegister(vc.decisions, vc.pending, vc.enforced, vc.active)
	var err error
	if vc.policies, err = migratestore.NewPolicies(ctx, a.eng.JS, "", a.cfg.NatsReplicas); err != nil {
		return nil, err
	}
	return vc, nil
}

// admitLegacy is the supernode's Admit hook: the version decision for a
// registering device, with the user's phase and whether the device is
// already linked taken from the migration state. A refusal is
// CodeUpgradeRequired with the notice; an admitted device that must be told
// (warning stage, or a known device under a soft block) gets an empty code
// and the notice, with the next stage's date, for the overlay to deliver.
func (a *agent) admitLegacy(cert legacywire.Certificate) (code, notice string) {
	dec, known, ok := a.decideVersion(context.Background(), cert.User, cert.PeerID, cert.Platform, cert.ClientVersion, cert.Capabilities, a.legacyProtocol(cert.PeerID))
	switch {
	case !ok:
		return "", ""
	case dec.Refuses(known):
		return legacywire.CodeUpgradeRequired, dec.Notice
	case dec.Tells(known):
		return "", dec.Notice
	}
	return "", ""
}

// checkCloudClient is the cloud service's CheckClient hook: the same
// decision as admitLegacy, for a native hello. A refusal carries the
// minimum version, update URL and deadline the client shows.
func (a *agent) checkCloudClient(ctx context.Context, user string, h cloudwire.Hello) *cloudwire.UpgradeRequired {
	dec, known, ok := a.decideVersion(ctx, user, h.Device, h.Platform, h.ClientVersion, h.Capabilities, cloudwire.ProtocolVersion)
	if !ok || !dec.Refuses(known) {
		return nil
	}
	return &cloudwire.UpgradeRequired{Minimum: dec.Minimum, UpdateURL: dec.UpdateURL, Deadline: dec.Deadline, Notice: dec.Notice}
}

// decideVersion applies the platform's version policy to one device of
// user, with the user's phase and whether the device is already linked
// taken from the migration state, and counts the decision. protocol is the
// version the device actually speaks (0 when unknown), checked against the
// policy's MinProtocol whatever version the device claims. ok is false when
// no policy applies (unknown platform, no policy, policy store down: the
// device is admitted).
func (a *agent) decideVersion(ctx context.Context, user, device, platform, version string, caps []string, protocol int) (dec migrate.Decision, known, ok bool) {
	if a.versions == nil || migrate.CheckPlatform(platform) != nil {
		return dec, false, false
	}
	ctx, cancel := context.WithTimeout(ctx, admitTimeout)
	defer cancel()
	p, err := a.versions.policies.Get(ctx, platform)
	if errors.Is(err, migrate.ErrPolicyNotFound) {
		return dec, false, false
	}
	if err != nil {
		a.log.Warn("version policy unavailable; admitting", "platform", platform, "err", err)
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
	dec = migrate.Decide(&p, phase, migrate.ClientDevice{ID: device, Platform: platform, Version: version,
		Capabilities: caps, Protocol: protocol, Known: known}, time.Now())
	a.versions.decisions.WithLabelValues(p.Platform, string(dec.Stage), string(dec.Outcome)).Inc()
	return dec, known, true
}

// legacyProtocol is the chat version an overlay peer speaks: the highest
// chat protocol its libp2p stack announced to the supernode (identify), which
// is what multistream-select settles on, whatever version the peer claims.
// It is 0 while identify has not finished or without a supernode.
func (a *agent) legacyProtocol(peerID string) int {
	if a.snHost == nil {
		return 0
	}
	id, err := peer.Decode(peerID)
	if err != nil {
		return 0
	}
	ids := legacy.ChatProtocolIDs(0) // highest first
	got, err := a.snHost.Peerstore().FirstSupportedProtocol(id, ids...)
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
	out, err := a.versions.policies.Modify(r.Context(), req.Platform, func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) {
		return req.apply(p, now), nil
	})
	if err != nil {
		writeVersionError(w, err)
		return
	}
	im := a.dryRun(&out, now)
	a.auditVersions(r, out, "retire below "+req.Below, req.Reason, im)
	writeJSON(w, http.StatusOK, retireResponse{Policy: out, Impact: im, Saved: true})
}

// blockRequest is the body of POST /v1/admin/versions/block: an emergency
// block of one exact version, which skips the schedule.
type blockRequest struct {
	Platform string `json:"platform"`
	Version  string `json:"version"`
	Reason   string `json:"reason"`
	DryRun   bool   `json:"dry_run"`
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
	out, err := a.versions.policies.Modify(r.Context(), req.Platform, add)
	if err != nil {
		writeVersionError(w, err)
		return
	}
	im := a.dryRun(&out, now)
	a.auditVersions(r, out, "block "+req.Version, req.Reason, im)
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
	if p.Revision != 0 {
		a.versions.pending.WithLabelValues(p.Platform).Set(float64(im.Pending))
		a.versions.enforced.WithLabelValues(p.Platform).Set(float64(im.Enforced))
	}
	return im
}

func (a *agent) auditVersions(r *http.Request, p migrate.VersionPolicy, to, reason string, im migrate.Impact) {
	stage, _ := p.StageAt(time.Now())
	ev := migrate.AuditEvent{At: time.Now(), Kind: migrate.AuditVersions, Actor: actor(r), OpID: uuid.Must(uuid.NewV7()).String(),
		Step: -1, From: p.Platform + ":" + string(stage), To: to, Reason: reason, Result: migrate.ResultOK,
		Values: map[string]float64{"affected_devices": float64(im.AffectedDevices), "affected_users": float64(im.AffectedUsers),
			"pending": float64(im.Pending), "enforced": float64(im.Enforced), "revision": float64(p.Revision)}}
	if err := a.control.audit.Record(r.Context(), ev); err != nil {
		a.log.Error("audit", "versions", p.Platform, "err", err)
	}
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
