package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// revokeRequest is the body of POST /v1/admin/legacy/revocations.
type revokeRequest struct {
	User   string `json:"user"`
	PeerID string `json:"peer_id"`
	Reason string `json:"reason"`
	// OpID makes a retried revocation idempotent: the same id as the
	// device's last revocation audits nothing and hands the supernode the
	// revocation already signed. Empty: a new id.
	OpID string `json:"op_id,omitempty"`
}

// legacyRevoke revokes a legacy device's certificate: the authority signs
// the revocation, this agent's supernode stores it (refusing the device
// from then on at registration, lookup, relay and every stream handler
// that checks certificates) and replicates it to its -supernode-peers;
// devices learn it when they sync revocations. The revocation lasts as long
// as any certificate the admin API issues (certTTL). It is audited first:
// the event is the intent of the write of the gateway's revocation record
// (migratestore.Revocations.RevokeAudited), which the supernode gets after
// it, so a crash between the two leaves an audited revocation that a retry
// with the same op_id completes without a second event. A new revocation
// of a revoked device renews it (a fresh signature and lifetime) and is
// audited again.
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
	if req.OpID == "" {
		req.OpID = uuid.Must(uuid.NewV7()).String()
	}
	rec, err := a.revocations.RevokeAudited(r.Context(), a.control.audit, id.String(), req.OpID, func(cur migratestore.Revocation) (migratestore.Revocation, migrate.AuditEvent, error) {
		rev := a.authority.Revoke(legacywire.Certificate{PeerID: id.String(), User: req.User, NotAfter: time.Now().Add(certTTL)}, req.Reason)
		signed, err := json.Marshal(rev)
		if err != nil {
			return cur, migrate.AuditEvent{}, fmt.Errorf("encode revocation: %w", err)
		}
		from := ""
		if cur.Signed != nil {
			from = "revoked"
		}
		return migratestore.Revocation{User: req.User, Signed: signed},
			migrate.AuditEvent{At: rev.RevokedAt, Kind: migrate.AuditRevocation, Actor: actor(r),
				Step: -1, User: req.User, From: from, To: "revoked", Reason: req.Reason, Result: migrate.ResultOK}, nil
	})
	if err != nil {
		writeDomainError(w, err)
		return
	}
	var rev legacywire.Revocation
	if err := json.Unmarshal(rec.Signed, &rev); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "decode stored revocation: "+err.Error())
		return
	}
	if err := a.supernode.Revoke(rev); err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "revocation audited and stored, not applied (repeat it with op_id "+req.OpID+"): "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, rev)
}

const revokeUsage = "usage: gateway legacy revoke -user ID -peer PEER_ID -reason TEXT [-op ID]"

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
	fs.StringVar(&req.OpID, "op", "", "operation id: repeating a revocation with the same id audits nothing (default: a new id)")
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

// restoreRevocations opens the gateway's revocation records and hands each
// to the supernode, whose own list starts empty at every start: a revoked
// device stays revoked across restarts. Expired ones are skipped; one
// that does not verify (the authority key changed) is
// logged and skipped, so that it cannot keep the agent from starting.
func (a *agent) restoreRevocations(ctx context.Context) error {
	var err error
	if a.revocations, err = migratestore.NewRevocations(ctx, a.eng.JS, "", a.cfg.NatsReplicas); err != nil {
		return err
	}
	recs, err := a.revocations.List(ctx)
	if err != nil {
		return fmt.Errorf("revocations: %w", err)
	}
	restored, expired, now := 0, 0, time.Now()
	for _, rec := range recs {
		var rev legacywire.Revocation
		if err := json.Unmarshal(rec.Signed, &rev); err != nil {
			a.cfg.Logger.Warn("stored revocation not restored", "peer", rec.PeerID, "err", err)
			continue
		}
		if !rev.Needed(now) {
			expired++ // the revoked certificate has expired on its own
			continue
		}
		if err := a.supernode.Revoke(rev); err != nil {
			a.cfg.Logger.Warn("stored revocation not restored", "peer", rec.PeerID, "err", err)
			continue
		}
		restored++
	}
	if len(recs) > 0 {
		a.cfg.Logger.Info("revocations restored", "restored", restored, "expired", expired, "stored", len(recs))
	}
	return nil
}
