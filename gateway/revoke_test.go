package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestRevokeLegacyDevice revokes a registered legacy device through the
// CLI: a revocation without a reason is refused; with one, the device
// disappears from lookups, its next registration is refused as revoked,
// and the audit log has the revocation. Repeated with its op id (a retry
// after a lost answer) it answers the same signed revocation and audits
// nothing more. A new op id renews it, in the running supernode too. After
// a restart of the agent, whose supernode keeps its revocation list in
// memory, the device is still revoked, by the renewal.
func TestRevokeLegacyDevice(t *testing.T) {
	dir, cfg := t.TempDir(), agentPorts(t)
	ta := startAgent(t, dir, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rita := newLegacyPhone(t, ta, "rita")
	ron := newLegacyPhone(t, ta, "ron")
	cli := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", ta.a.adminURL(), "-token", ta.a.adminToken)
		err := run(ctx, args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	look, err := ron.dir.Lookup(ctx, "rita")
	if err != nil || len(look.Devices) != 1 {
		t.Fatalf("lookup before: %+v %v", look, err)
	}
	peerID := rita.host.ID().String()

	var re *remoteError
	if _, err := cli("legacy", "revoke", "-user", "rita", "-peer", peerID); !errors.As(err, &re) || re.Code != "reason_required" {
		t.Fatalf("revoke without a reason: %v", err)
	}
	first, err := cli("legacy", "revoke", "-user", "rita", "-peer", peerID, "-reason", "stolen phone", "-op", "rev-1")
	if err != nil || !strings.Contains(first, "revoked "+peerID) {
		t.Fatalf("revoke: %v\n%s", err, first)
	}
	if again, err := cli("legacy", "revoke", "-user", "rita", "-peer", peerID, "-reason", "stolen phone", "-op", "rev-1"); err != nil || again != first {
		t.Fatalf("repeated revoke: %v\n%s\nwant\n%s", err, again, first)
	}
	look, err = ron.dir.Lookup(ctx, "rita")
	if err != nil || len(look.Devices) != 0 {
		t.Fatalf("lookup after the revocation: %+v %v", look, err)
	}
	var refused *legacy.RefusedError
	if err := rita.dev.Register(ctx); !errors.As(err, &refused) || refused.Code != legacywire.CodeRevoked {
		t.Fatalf("registration of the revoked device: %v", err)
	}

	events := auditEvents(t, cli, "-user", "rita")
	found := 0
	for _, e := range events {
		if e.Kind == migrate.AuditRevocation && e.Reason == "stolen phone" && e.Actor != "" && e.OpID == "rev-1" && e.To == "revoked" {
			found++
		}
	}
	if found != 1 {
		t.Fatalf("%d revocations in rita's audit, want 1: %+v", found, events)
	}

	// A new op id renews the revocation, in the running supernode too.
	time.Sleep(5 * time.Millisecond) // a later end, at the wire's millisecond precision
	if _, err := cli("legacy", "revoke", "-user", "rita", "-peer", peerID, "-reason", "renewed", "-op", "rev-2"); err != nil {
		t.Fatalf("renewal: %v", err)
	}
	heldReason := func() string {
		for _, r := range ta.a.supernode.Revocations().List(time.Now()) {
			if r.PeerID == peerID {
				return r.Reason
			}
		}
		return ""
	}
	if got := heldReason(); got != "renewed" {
		t.Fatalf("the supernode holds rita's revocation with reason %q, want the renewal", got)
	}

	ta.stop()
	ta = startAgent(t, dir, cfg)
	if got := heldReason(); got != "renewed" {
		t.Fatalf("after a restart the supernode holds rita's revocation with reason %q, want the renewal", got)
	}
}
