package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// revokeRequest is the body of POST /v1/admin/legacy/revocations.
type revokeRequest struct {
	User   string `json:"user"`
	PeerID string `json:"peer_id"`
	Reason string `json:"reason"`
}

// legacyRevoke revokes a legacy device's certificate: the authority signs
// the revocation, this agent's supernode stores it (refusing the device
// from then on at registration, lookup, relay and every stream handler
// that checks certificates) and replicates it to its -supernode-peers;
// devices learn it when they sync revocations. The revocation lasts as long
// as any certificate the admin API issues (certTTL). Repeating it changes
// nothing. It is audited.
func (a *agent) legacyRevoke(w http.ResponseWriter, r *http.Request) {
	var req revokeRequest
	if !readJSON(w, r, &req) {
		return
	}
	id, ok := readDevice(w, req.PeerID, req.User)
	if !ok {
		return
	}
	if !requireReason(w, req.Reason, "a revocation needs a reason") {
		return
	}
	if a.supernode == nil {
		writeError(w, http.StatusConflict, "no_supernode", "this agent runs no supernode: revoke at an agent with the supernode role")
		return
	}
	rev := a.authority.Revoke(legacywire.Certificate{PeerID: id.String(), User: req.User, NotAfter: time.Now().Add(certTTL)}, req.Reason)
	if err := a.supernode.Revoke(rev); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	ev := migrate.AuditEvent{At: rev.RevokedAt, Kind: migrate.AuditRevocation, Actor: actor(r), OpID: uuid.Must(uuid.NewV7()).String(),
		Step: -1, User: req.User, To: "revoked", Reason: req.Reason, Result: migrate.ResultOK}
	if err := a.control.audit.Record(r.Context(), ev); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "revocation stored, not audited (repeat it): "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rev)
}

const revokeUsage = "usage: gateway legacy revoke -user ID -peer PEER_ID -reason TEXT"

// revokeCommand runs `gateway legacy revoke`.
func revokeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("legacy revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var req revokeRequest
	fs.StringVar(&req.User, "user", "", "the device's user")
	fs.StringVar(&req.PeerID, "peer", "", "the device's peer ID")
	fs.StringVar(&req.Reason, "reason", "", "why (kept in the audit log and the revocation)")
	if pos, err := parseArgs(fs, args); err != nil || len(pos) != 0 || req.User == "" || req.PeerID == "" {
		fmt.Fprintln(stderr, revokeUsage)
		return errUsage
	}
	var rev legacywire.Revocation
	if err := adminDo(ctx, &o, http.MethodPost, "/v1/admin/legacy/revocations", req, &rev); err != nil {
		return err
	}
	if o.format == "json" {
		return printJSON(stdout, rev)
	}
	fmt.Fprintf(stdout, "revoked %s of %s at %s (%s)\n", rev.PeerID, rev.User, rev.RevokedAt.UTC().Format(time.RFC3339), rev.Reason)
	return nil
}
