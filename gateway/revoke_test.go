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
// and the audit log has the revocation.
func TestRevokeLegacyDevice(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
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
	if out, err := cli("legacy", "revoke", "-user", "rita", "-peer", peerID, "-reason", "stolen phone"); err != nil || !strings.Contains(out, "revoked "+peerID) {
		t.Fatalf("revoke: %v\n%s", err, out)
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
	found := false
	for _, e := range events {
		found = found || (e.Kind == migrate.AuditRevocation && e.Reason == "stolen phone" && e.Actor != "")
	}
	if !found {
		t.Fatalf("no revocation in rita's audit: %+v", events)
	}
}
