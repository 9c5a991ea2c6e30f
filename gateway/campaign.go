package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// actorHeader carries the operator's name from the CLI ($USER). It is
// self-declared and recorded as "admin:<name>" in the audit log; the token
// is what authorizes.
const actorHeader = "X-Ferry-Actor"

// campaignControl is the migration control plane of an agent: campaigns,
// the audit log, the freeze and the driver.
type campaignControl struct {
	campaigns *migratestore.Campaigns
	audit     *migratestore.Audit
	leases    *migratestore.Leases
	driver    *migrate.Driver
	// shadow feeds the backfill and shadow-mismatch gates.
	shadow migrate.ShadowSource

	targetBP    *prometheus.GaugeVec
	actualBP    *prometheus.GaugeVec
	heldBack    *prometheus.GaugeVec
	transitions *prometheus.CounterVec
}

// startCampaigns opens the campaign bucket and the audit stream, registers
// the campaign metrics and builds the driver; the caller runs it.
func (a *agent) startCampaigns(ctx context.Context) (*campaignControl, error) {
	cc := &campaignControl{
		targetBP: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_campaign_target_bp", Help: "Target of the campaign's current step, in basis points of the cohort space.",
		}, []string{"campaign"}),
		actualBP: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_campaign_actual_bp", Help: "Share of the campaign's eligible users at its target phase, in basis points.",
		}, []string{"campaign"}),
		heldBack: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gateway_campaign_held_back_users", Help: "Users the campaign's current step would move but holds back, by reason (exempt, held, failed, gate:…, …_inconclusive).",
		}, []string{"campaign", "reason"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_migration_transitions_total", Help: "Phase transitions attempted by the campaign driver, by from, to and result (ok, refused, error; repeat: already made by an earlier tick or agent, nothing written).",
		}, []string{"from", "to", "result"}),
	}
	a.reg.MustRegister(cc.targetBP, cc.actualBP, cc.heldBack, cc.transitions, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_migration_corrupt_records_total",
		Help: "Records in the users bucket the watch could not decode; each such user shows as held with reason \"corrupt record\".",
	}, func() float64 { return float64(a.store.CorruptRecords()) }))
	gm := newGuardrailMetrics(a.reg)
	var err error
	if cc.campaigns, err = migratestore.NewCampaigns(ctx, a.eng.JS, "", a.cfg.NatsReplicas); err != nil {
		return nil, err
	}
	if cc.audit, err = migratestore.NewAudit(ctx, a.eng.JS, "", a.cfg.NatsReplicas); err != nil {
		return nil, err
	}
	cc.leases = cc.campaigns.Leases()
	cc.shadow = campaignGates{&a.shadowGate, &a.censusGate} // reports once the bridge and the census have started
	var prom migrate.PromQuerier
	if u := a.cfg.PrometheusURL; u != "" {
		pc, err := newPromClient(u)
		if err != nil {
			return nil, err
		}
		prom = pc
	}
	cc.driver, err = migrate.NewDriver(migrate.DriverConfig{
		State: a.state, Users: a.store, Campaigns: migratestore.DriverCampaigns{Campaigns: cc.campaigns, Audit: cc.audit}, Audit: cc.audit,
		Tick: a.cfg.CampaignTick, Logger: a.cfg.Logger,
		Leases: cc.leases, Holder: driverHolder(),
		Measures: &bridgeMeasures{g: a.reg}, OnGuardrail: gm.observe,
		Prometheus: prom, Shadow: cc.shadow,
		OnLease: func(_ migrate.Lease, held bool) {
			gm.leaseHeld.Set(map[bool]float64{true: 1}[held])
		},
		OnTransition: func(from, to migrate.Phase, result string) {
			cc.transitions.WithLabelValues(string(from), string(to), result).Inc()
		},
		OnProgress: func(name string, target, actual int, heldBack map[string]int) {
			cc.targetBP.WithLabelValues(name).Set(float64(target))
			cc.actualBP.WithLabelValues(name).Set(float64(actual))
			// Reasons are a fixed set (migrate.Held*, gate:…); one that no
			// longer holds anyone back goes away rather than staying stale.
			cc.heldBack.DeletePartialMatch(prometheus.Labels{"campaign": name})
			for reason, n := range heldBack {
				cc.heldBack.WithLabelValues(name, reason).Set(float64(n))
			}
		},
	})
	if err != nil {
		return nil, err
	}
	return cc, nil
}

// registerCampaignRoutes adds the control plane's admin endpoints.
func (a *agent) registerCampaignRoutes(mux *http.ServeMux) {
	mux.Handle("GET /v1/admin/campaigns", a.authed(a.listCampaigns))
	mux.Handle("POST /v1/admin/campaigns", a.authed(a.createCampaign))
	mux.Handle("GET /v1/admin/campaigns/{name}", a.authed(a.campaignStatus))
	mux.Handle("POST /v1/admin/campaigns/{name}/{cmd}", a.authed(a.campaignCommand))
	mux.Handle("GET /v1/admin/audit", a.authed(a.queryAudit))
	mux.Handle("GET /v1/admin/freeze", a.authed(a.getFreeze))
	mux.Handle("POST /v1/admin/freeze", a.authed(a.setFreeze))
	mux.Handle("POST /v1/admin/users/{id}/hold", a.authed(a.holdUser))
	mux.Handle("POST /v1/admin/users/{id}/resume", a.authed(a.resumeUser))
	mux.Handle("POST /v1/admin/users/{id}/exempt", a.authed(a.exemptUser))
}

// actor is who the audit log says made the request: "admin:NAME" for an
// actorHeader of 1 to 64 letters, digits, '_', '-', '.' or '@' (login
// names such as "ann.lee"), else "admin".
func actor(r *http.Request) string {
	name := r.Header.Get(actorHeader)
	if len(name) == 0 || len(name) > 64 {
		return "admin"
	}
	for _, ch := range name {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.ContainsRune("_-.@", ch)) {
			return "admin"
		}
	}
	return "admin:" + name
}

// campaignStatus is the body of GET /v1/admin/campaigns/{name}.
type campaignStatus struct {
	Campaign migrate.Campaign `json:"campaign"`
	TargetBP int              `json:"target_bp"`
	ActualBP int              `json:"actual_bp"`
	Eligible int              `json:"eligible"`
	Done     int              `json:"done"`
	Pending  int              `json:"pending"`
	HeldBack map[string]int   `json:"held_back"`
	Frozen   bool             `json:"frozen"`
	InWindow bool             `json:"in_window"`
	// Driver is the driver lease: which agent moves users, until when.
	Driver migrate.Lease `json:"driver"`
	// Guardrails is the last evaluation of the campaign's guardrails, when
	// the agent answering holds the lease (another agent's evaluations are
	// in the audit log and its metrics).
	Guardrails   []migrate.GuardrailResult `json:"guardrails,omitempty"`
	GuardrailsAt time.Time                 `json:"guardrails_at,omitzero"`
}

// commandRequest is the body of POST /v1/admin/campaigns/{name}/{cmd}.
type commandRequest struct {
	Reason string `json:"reason"`
	// Step, on rollback, rolls back only the current step: the users it
	// moved return to shadow and the campaign pauses at the step.
	Step bool `json:"step,omitempty"`
	// OpID makes a retried command idempotent: the same id as the
	// campaign's last change changes and audits nothing and answers the
	// campaign as it is. Empty: a new id.
	OpID string `json:"op_id,omitempty"`
}

func (a *agent) listCampaigns(w http.ResponseWriter, r *http.Request) {
	cs, err := a.control.campaigns.List(r.Context())
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]migrate.Campaign{"campaigns": cs})
}

func (a *agent) createCampaign(w http.ResponseWriter, r *http.Request) {
	var c migrate.Campaign
	if !readJSON(w, r, &c) {
		return
	}
	now := time.Now().UTC()
	c.State, c.Step, c.StepSince, c.StepReached, c.Created, c.Updated, c.Revision = migrate.CampaignDraft, 0, time.Time{}, time.Time{}, now, now, 0
	c.LastOp, c.Audit = uuid.Must(uuid.NewV7()).String(), 0
	// The event goes first, as the intent of the create, on the campaign's
	// audit chain (Campaigns.CreateAudited).
	out, err := a.control.campaigns.CreateAudited(r.Context(), a.control.audit, c, campaignEvent(r, c, "", string(c.State), "created"))
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (a *agent) campaignStatus(w http.ResponseWriter, r *http.Request) {
	c, err := a.control.campaigns.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	frozen, err := a.control.campaigns.Frozen(r.Context())
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	lease, err := a.control.leases.Get(r.Context())
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	now := time.Now()
	sv := migrate.SurveyCampaign(a.state.Snapshot(), &c, now, 0, a.control.shadow)
	step := min(c.Step, len(c.Steps)-1)
	st := campaignStatus{Campaign: c, TargetBP: c.Steps[step].TargetBP, ActualBP: sv.ActualBP(),
		Eligible: sv.Eligible, Done: sv.Done, Pending: sv.Pending, HeldBack: sv.HeldBack, Frozen: frozen, InWindow: c.InWindow(now), Driver: lease}
	st.Guardrails, st.GuardrailsAt = a.control.driver.Guardrails(c.Name)
	writeJSON(w, http.StatusOK, st)
}

func (a *agent) campaignCommand(w http.ResponseWriter, r *http.Request) {
	name, cmd := r.PathValue("name"), migrate.Command(r.PathValue("cmd"))
	switch cmd {
	case migrate.CmdPlan, migrate.CmdStart, migrate.CmdPause, migrate.CmdResume, migrate.CmdAbort, migrate.CmdRollback:
	default:
		writeError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no campaign command %q: plan, start, pause, resume, abort or rollback", cmd))
		return
	}
	var req commandRequest
	if r.ContentLength != 0 {
		if !readJSON(w, r, &req) {
			return
		}
	}
	if req.Step {
		if cmd != migrate.CmdRollback {
			writeError(w, http.StatusBadRequest, "bad_request", "step applies to rollback only")
			return
		}
		cmd = migrate.CmdRollbackStep
	}
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	now := time.Now().UTC()
	if cmd == migrate.CmdPlan {
		// Plan from one snapshot; a draft becomes planned, other states
		// only get the report.
		c, err := a.control.campaigns.Get(r.Context(), name)
		if err != nil {
			writeCampaignError(w, err)
			return
		}
		salt := c.Salt
		if c.State == migrate.CampaignDraft {
			c, err = a.control.campaigns.ModifyAudited(r.Context(), a.control.audit, name, req.OpID, func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
				if c.Salt == "" {
					c.Salt = migrate.NewSalt() // fixed now, so the plan is what start will do
				}
				next, err := c.Lifecycle(migrate.CmdPlan, req.Reason, "", now)
				return next, campaignEvent(r, next, string(c.State), string(next.State), req.Reason), err
			})
			if err != nil {
				writeCampaignError(w, err)
				return
			}
			salt = c.Salt
		}
		writeJSON(w, http.StatusOK, migrate.PlanCampaign(a.state.Snapshot(), c, salt, now, a.control.shadow))
		return
	}
	// The event goes first, as the intent of the compare-and-set, on the
	// campaign's audit chain (Campaigns.ModifyAudited).
	c, err := a.control.campaigns.ModifyAudited(r.Context(), a.control.audit, name, req.OpID, func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		next, err := c.Lifecycle(cmd, req.Reason, migrate.NewSalt(), now)
		return next, campaignEvent(r, next, string(c.State), string(next.State), req.Reason), err
	})
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// campaignEvent is the audit event of an operator's change of c's state,
// from one state to another.
func campaignEvent(r *http.Request, c migrate.Campaign, from, to, reason string) migrate.AuditEvent {
	return migrate.AuditEvent{At: time.Now(), Kind: migrate.AuditCampaign, Actor: actor(r),
		Campaign: c.Name, Step: c.Step, From: from, To: to, Reason: reason, Result: migrate.ResultOK}
}

func (a *agent) queryAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	aq := migratestore.AuditQuery{Campaign: q.Get("campaign"), User: q.Get("user")}
	if s := q.Get("since"); s != "" {
		t, err := parseSince(s, time.Now())
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_since", err.Error())
			return
		}
		aq.Since = t
	}
	evs, err := a.control.audit.Query(r.Context(), aq)
	if errors.Is(err, migratestore.ErrChainTooLong) {
		writeError(w, http.StatusUnprocessableEntity, "chain_too_long", err.Error())
		return
	}
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string][]migrate.AuditEvent{"events": evs})
}

// parseSince reads an RFC 3339 time or a Go duration meaning "that long ago".
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("since %q: want an RFC 3339 time or a duration such as 24h", s)
	}
	return now.Add(-d), nil
}

func (a *agent) getFreeze(w http.ResponseWriter, r *http.Request) {
	f, err := a.control.campaigns.Freeze(r.Context())
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// freezeRequest is the body of POST /v1/admin/freeze.
type freezeRequest struct {
	// On is required: a body without it (`{"reason": "holiday"}`) used to
	// lift the freeze.
	On     *bool  `json:"on"`
	Reason string `json:"reason,omitempty"`
	OpID   string `json:"op_id,omitempty"`
}

// setFreeze turns the freeze on or off, audited first (see
// migratestore.Campaigns.SetFreezeAudited).
func (a *agent) setFreeze(w http.ResponseWriter, r *http.Request) {
	var req freezeRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.On == nil {
		writeError(w, http.StatusBadRequest, "bad_request", `"on" is required: true turns the freeze on, false lifts it`)
		return
	}
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	f := migratestore.Freeze{On: *req.On, Reason: req.Reason, Actor: actor(r), Since: time.Now().UTC()}
	f, err := a.control.campaigns.SetFreezeAudited(r.Context(), a.control.audit, f, req.OpID)
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// userOpRequest is the body of POST /v1/admin/users/{id}/hold and /resume.
type userOpRequest struct {
	Reason string `json:"reason"`
	OpID   string `json:"op_id,omitempty"`
}

func (a *agent) holdUser(w http.ResponseWriter, r *http.Request)   { a.holdOrResume(w, r, true) }
func (a *agent) resumeUser(w http.ResponseWriter, r *http.Request) { a.holdOrResume(w, r, false) }

// holdOrResume parks a user in held, or returns a held user to its prior
// phase; both are audited transitions with an operation id.
func (a *agent) holdOrResume(w http.ResponseWriter, r *http.Request, hold bool) {
	id := r.PathValue("id")
	var req userOpRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !requireReason(w, req.Reason, "a reason is required") {
		return
	}
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	cur, err := a.store.Get(r.Context(), id)
	if err != nil {
		writeDomainError(w, err)
		return
	}
	to := migrate.PhaseHeld
	if !hold {
		to = cur.Prior
		if cur.Phase != migrate.PhaseHeld || !to.Active() {
			if cur.OpID == req.OpID && cur.Phase.Active() { // a repeated resume
				writeJSON(w, http.StatusOK, cur)
				return
			}
			writeError(w, http.StatusConflict, "illegal_transition", fmt.Sprintf("user %s is %s, not held", id, cur.Phase))
			return
		}
	}
	// The event goes first, as the intent of the compare-and-set, on the
	// user's audit chain (Store.TransitionAudited); only a refusal, which
	// writes nothing, is recorded after.
	ev := migrate.AuditEvent{At: time.Now(), Kind: migrate.AuditTransition, Actor: actor(r), OpID: req.OpID, Step: -1, User: id,
		From: string(cur.Phase), To: string(to), Reason: req.Reason, Result: migrate.ResultOK}
	u, err := a.store.TransitionAudited(r.Context(), id, migrate.Op{ID: req.OpID, To: to, Reason: req.Reason}, ev)
	if err != nil {
		ev.Result = migrate.ResultRefused
		ev.Reason = req.Reason + ": " + err.Error() // as set-phase keeps it
		if aerr := a.control.audit.Record(r.Context(), ev); aerr != nil {
			a.log.Error("audit", "user", id, "err", aerr)
		}
		writeDomainError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

// exemptRequest is the body of POST /v1/admin/users/{id}/exempt.
type exemptRequest struct {
	Campaign string    `json:"campaign"`
	Until    time.Time `json:"until,omitzero"`
	Reason   string    `json:"reason"`
	// Remove lifts the exemption.
	Remove bool `json:"remove,omitempty"`
	// OpID makes a retry idempotent: repeating it changes and audits
	// nothing (one is chosen when empty).
	OpID string `json:"op_id,omitempty"`
}

func (a *agent) exemptUser(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req exemptRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := migrate.CheckUserID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", err.Error())
		return
	}
	if !requireReason(w, req.Reason, "a reason is required") {
		return
	}
	now := time.Now().UTC()
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	to := "exempt"
	if req.Remove {
		to = "not exempt"
	}
	// The event goes first, as the intent of the compare-and-set, on the
	// campaign's audit chain (Campaigns.ModifyAudited): the exemption
	// lives on the campaign record.
	c, err := a.control.campaigns.ModifyAudited(r.Context(), a.control.audit, req.Campaign, req.OpID, func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
		ev := migrate.AuditEvent{At: now, Kind: migrate.AuditExempt, Actor: actor(r),
			Step: c.Step, User: id, To: to, Reason: req.Reason, Result: migrate.ResultOK}
		if !req.Until.IsZero() {
			ev.Values = map[string]float64{"until_unix": float64(req.Until.Unix())}
		}
		c = c.Clone()
		if req.Remove {
			delete(c.Exemptions, id)
		} else {
			if c.Exemptions == nil {
				c.Exemptions = map[string]migrate.Exemption{}
			}
			c.Exemptions[id] = migrate.Exemption{Until: req.Until.UTC(), Reason: req.Reason}
		}
		c.Updated = now
		return c, ev, nil
	})
	if err != nil {
		writeCampaignError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// writeCampaignError maps the control plane's errors to HTTP at the edge.
func writeCampaignError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, migrate.ErrCampaignNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, migrate.ErrCampaignExists):
		writeError(w, http.StatusConflict, "exists", err.Error()+" (a campaign's name is for good: pick another, or see gateway campaign list)")
	case errors.Is(err, migrate.ErrInvalidCampaign):
		writeError(w, http.StatusBadRequest, "invalid_campaign", err.Error())
	case errors.Is(err, migrate.ErrCampaignState):
		writeError(w, http.StatusConflict, "campaign_state", err.Error())
	default:
		writeDomainError(w, err)
	}
}

// phaseBefore is the user's phase in the store before a manual change, for
// the audit log ("" for a user not yet known).
func (a *agent) phaseBefore(ctx context.Context, id string) migrate.Phase {
	u, err := a.store.Get(ctx, id)
	if err != nil {
		if !errors.Is(err, migrate.ErrNotFound) {
			a.log.Warn("phase before a manual change unknown", "user", id, "err", err)
		}
		return ""
	}
	return u.Phase
}

// auditSetPhase records a manual phase change (POST /v1/admin/users/{id}/phase)
// like the other manual commands: actor, operation id, from, to, reason,
// break-glass, and whether it was refused.
// A change that is applied is recorded by the store itself, as the intent
// of its compare-and-set (setPhaseEvent, Store.TransitionAudited); this
// records the refusals, which write nothing.
func (a *agent) auditSetPhase(r *http.Request, id string, from migrate.Phase, req phaseRequest, to migrate.Phase, err error) {
	if migrate.CheckUserID(id) != nil {
		return // nothing to record under: the store refused the id itself
	}
	ev := setPhaseEvent(r, id, from, req, to)
	if err != nil {
		ev.Result = migrate.ResultRefused
		if !errors.Is(err, migrate.ErrIllegalTransition) {
			ev.Result = migrate.ResultError
		}
		ev.Reason = req.Reason + ": " + err.Error()
	}
	if aerr := a.control.audit.Record(r.Context(), ev); aerr != nil {
		a.log.Error("audit", "user", id, "err", aerr)
	}
}

// setPhaseEvent is the audit event of a manual phase change: actor,
// operation id, from, to, reason and break-glass.
func setPhaseEvent(r *http.Request, id string, from migrate.Phase, req phaseRequest, to migrate.Phase) migrate.AuditEvent {
	ev := migrate.AuditEvent{At: time.Now(), Kind: migrate.AuditTransition, Actor: actor(r), OpID: req.OpID, Step: -1, User: id,
		From: string(from), To: string(to), Reason: req.Reason, Result: migrate.ResultOK}
	if req.BreakGlass {
		ev.Values = map[string]float64{"break_glass": 1}
	}
	return ev
}
