package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// Admin API limits.
const (
	maxAdminBody     = 64 << 10
	defaultListLimit = 1000
	maxListLimit     = 10000
	certTTL          = 30 * 24 * time.Hour
	maxUserTokenTTL  = 30 * 24 * time.Hour
	bootstrapSample  = 20
)

// apiError is the JSON body of every admin error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// phaseRequest is the body of POST /v1/admin/users/{id}/phase.
type phaseRequest struct {
	Phase      string `json:"phase"`
	Reason     string `json:"reason"`
	OpID       string `json:"op_id,omitempty"`
	BreakGlass bool   `json:"break_glass,omitempty"`
}

// userList is the body of GET /v1/admin/users.
type userList struct {
	Users []migrate.User `json:"users"`
	// Next is the id to pass as ?after= for the following page; empty at the end.
	Next string `json:"next,omitempty"`
}

// bootstrap is what a legacy client (or the simulator) needs to join the overlay.
type bootstrap struct {
	Supernode  []string `json:"supernode"` // multiaddrs with /p2p/ID
	Authority  string   `json:"authority"` // base64 ed25519 public key
	CloudUsers []string `json:"cloud_users"`
}

// certRequest is the body of POST /v1/admin/legacy/certificates.
type certRequest struct {
	PeerID        string   `json:"peer_id"`
	User          string   `json:"user"`
	Platform      string   `json:"platform"`
	ClientVersion string   `json:"client_version"`
	Capabilities  []string `json:"capabilities,omitempty"`
}

// tokenRequest is the body of POST /v1/admin/cloud/tokens.
type tokenRequest struct {
	User string `json:"user"`
	TTL  string `json:"ttl,omitempty"` // Go duration, default one day
}

func (a *agent) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.eng.StorageErr(); err != nil { // a full disk: 503 until the engine recovers
			http.Error(w, oneLine(err.Error()).Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.Handle("GET /v1/admin/users", a.authed(a.listUsers))
	mux.Handle("GET /v1/admin/users/{id}", a.authed(a.getUser))
	mux.Handle("POST /v1/admin/users/{id}/phase", a.authed(a.setPhase))
	mux.Handle("GET /v1/admin/legacy/bootstrap", a.authed(a.legacyBootstrap))
	mux.Handle("POST /v1/admin/legacy/certificates", a.authed(a.legacyCertificate))
	mux.Handle("POST /v1/admin/legacy/revocations", a.authed(a.legacyRevoke))
	mux.Handle("POST /v1/admin/cloud/tokens", a.authed(a.cloudToken))
	mux.Handle("GET /v1/admin/bridge", a.authed(a.bridgeStatus))
	mux.Handle("GET /v1/admin/status", a.authed(a.status))
	a.registerCampaignRoutes(mux)
	a.registerVersionRoutes(mux)
	mux.Handle("/v1/admin/", a.authed(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint: "+r.Method+" "+r.URL.Path)
	}))
	return mux
}

// authed requires a valid admin token. Without one the handler never runs, so
// an unauthenticated call changes nothing.
func (a *agent) authed(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry-admin"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "missing bearer token (set FERRY_TOKEN)")
			return
		}
		if err := a.tokens.verifyAdmin(strings.TrimSpace(tok)); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ferry-admin", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "invalid or expired admin token")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxAdminBody)
		h(w, r)
	})
}

func (a *agent) listUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var phase migrate.Phase
	if p := q.Get("phase"); p != "" {
		var err error
		if phase, err = migrate.ParsePhase(p); err != nil {
			writeError(w, http.StatusBadRequest, "invalid_phase", err.Error())
			return
		}
	}
	limit := defaultListLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxListLimit {
			writeError(w, http.StatusBadRequest, "invalid_limit", fmt.Sprintf("limit must be 1..%d", maxListLimit))
			return
		}
		limit = n
	}
	users := a.state.Snapshot().List(phase, q.Get("after"), limit+1)
	out := userList{Users: users}
	if len(users) > limit {
		out.Users = users[:limit]
		out.Next = users[limit-1].ID
	}
	if out.Users == nil {
		out.Users = []migrate.User{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *agent) getUser(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := migrate.CheckUserID(id); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", err.Error())
		return
	}
	u, err := a.store.Get(r.Context(), id)
	if err != nil {
		writeDomainError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, u)
}

func (a *agent) setPhase(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var req phaseRequest
	if !readJSON(w, r, &req) {
		return
	}
	phase, err := migrate.ParsePhase(req.Phase)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_phase", err.Error())
		return
	}
	if !requireReason(w, req.Reason, "a reason is required for every phase change") {
		return
	}
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	from := a.phaseBefore(r.Context(), id)
	if err := a.checkCloudMove(id, phase); err != nil { // versions_link.go
		a.auditSetPhase(r, id, from, req, phase, err)
		writeError(w, http.StatusConflict, "not_cloud_capable", err.Error())
		return
	}
	// The event goes first, as the intent of the compare-and-set
	// (Store.TransitionAudited); a refusal writes nothing and is recorded
	// after.
	u, err := a.store.TransitionAudited(r.Context(), id, migrate.Op{ID: req.OpID, To: phase, Reason: req.Reason, BreakGlass: req.BreakGlass},
		setPhaseEvent(r, id, from, req, phase))
	if err != nil {
		a.auditSetPhase(r, id, from, req, phase, err)
		writeDomainError(w, err)
		return
	}
	a.log.Info("phase set", "user", id, "phase", u.Phase, "op_id", req.OpID, "reason", req.Reason)
	writeJSON(w, http.StatusOK, u)
}

func (a *agent) legacyBootstrap(w http.ResponseWriter, _ *http.Request) {
	info, err := a.supernodeInfo()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "no_supernode", err.Error())
		return
	}
	addrs, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	out := bootstrap{Authority: base64.StdEncoding.EncodeToString(a.authority.PublicKey()), CloudUsers: []string{}}
	for _, ad := range addrs {
		out.Supernode = append(out.Supernode, ad.String())
	}
	snap := a.state.Snapshot()
	for _, p := range []migrate.Phase{migrate.PhaseCloud, migrate.PhaseFinalized} {
		for _, u := range snap.List(p, "", bootstrapSample) {
			if len(out.CloudUsers) < bootstrapSample {
				out.CloudUsers = append(out.CloudUsers, u.ID)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *agent) legacyCertificate(w http.ResponseWriter, r *http.Request) {
	var req certRequest
	if !readJSON(w, r, &req) {
		return
	}
	id, ok := readDevice(w, req.PeerID, req.User)
	if !ok {
		return
	}
	if req.Platform == "" || req.ClientVersion == "" {
		writeError(w, http.StatusBadRequest, "bad_request", "platform and client_version are required")
		return
	}
	for _, c := range req.Capabilities {
		if c == legacywire.CapBridge {
			writeError(w, http.StatusForbidden, "forbidden", "the bridge capability is not issued through the admin API")
			return
		}
	}
	cert, err := a.authority.Certify(id, req.User, req.Platform, req.ClientVersion, req.Capabilities, certTTL)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, cert)
}

func (a *agent) cloudToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := migrate.CheckUserID(req.User); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", err.Error())
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > maxUserTokenTTL {
			writeError(w, http.StatusBadRequest, "invalid_ttl", fmt.Sprintf("ttl must be a duration up to %s", maxUserTokenTTL))
			return
		}
		ttl = d
	}
	tok, err := a.tokens.issue(req.User, cloudwire.RoleUser, ttl)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": tok, "url": a.cloudURL()})
}

// writeDomainError maps migrate's errors to HTTP at the edge.
func writeDomainError(w http.ResponseWriter, err error) {
	var te *migrate.TransitionError
	switch {
	case errors.As(err, &te):
		writeError(w, http.StatusConflict, "illegal_transition", err.Error())
	case errors.Is(err, migrate.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, migrate.ErrInvalidUserID):
		writeError(w, http.StatusBadRequest, "invalid_user", err.Error())
	case errors.Is(err, migrate.ErrInvalidPhase):
		writeError(w, http.StatusBadRequest, "invalid_phase", err.Error())
	case errors.Is(err, migrate.ErrConflict):
		writeError(w, http.StatusConflict, "conflict", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// readJSON decodes the request body into v, answering 400 itself when it
// cannot; a handler returns when it reports false. The body must be one
// JSON value of valid UTF-8 (encoding/json would silently replace invalid
// bytes and ignore what follows the value).
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(r.Body)
	if err == nil && !utf8.Valid(b) {
		err = errors.New("not valid UTF-8")
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err = dec.Decode(v); err == nil && dec.Decode(&json.RawMessage{}) != io.EOF {
			err = errors.New("more than one JSON value")
		}
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "request body: "+err.Error())
		return false
	}
	return true
}

// readDevice parses a legacy device's peer ID and checks its user id,
// answering 400 invalid_peer_id or invalid_user when either is wrong.
func readDevice(w http.ResponseWriter, peerID, user string) (peer.ID, bool) {
	id, err := peer.Decode(peerID)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_peer_id", err.Error())
		return "", false
	}
	if err := migrate.CheckUserID(user); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_user", err.Error())
		return "", false
	}
	return id, true
}

// requireReason answers 400 reason_required with msg when reason is blank:
// every change an operator makes is kept with its reason.
func requireReason(w http.ResponseWriter, reason, msg string) bool {
	if strings.TrimSpace(reason) == "" {
		writeError(w, http.StatusBadRequest, "reason_required", msg)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	// A failed write means the client went away; there is no one to tell.
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}
