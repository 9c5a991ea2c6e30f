package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestVersionReportMatchesEnforcement checks `gateway versions report`
// against the enforcement points of a running agent, in the middle of a
// hard block's jitter window (where pending and enforced are both
// non-zero): the report's enforced count is exactly the number of known
// devices the supernode's Admit hook refuses now, its pending count the
// affected devices it still admits (each told, with its own deadline), and
// with the scope limited to migrated users no device of a user in legacy
// or shadow is refused or counted. (migrate's TestScheduleWithFakeClock
// walks the same comparison through every stage on a fake clock.)
func TestVersionReportMatchesEnforcement(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	phases := []migrate.Phase{migrate.PhaseLegacy, migrate.PhaseShadow, migrate.PhaseCloud, migrate.PhaseFinalized}
	versions := []string{"4.1.0", "4.8.2", "5.0.0", "5.3.1"}
	type dev struct {
		user, id, version string
		phase             migrate.Phase
	}
	var devs []dev
	for i := range 80 {
		d := dev{user: fmt.Sprintf("rep-%03d", i), id: fmt.Sprintf("dev-%03d", i), version: versions[i%len(versions)], phase: phases[(i/len(versions))%len(phases)]}
		if _, err := ta.a.store.SeeDevice(ctx, d.user, migrate.Device{ID: d.id, Platform: "android", ClientVersion: d.version, LastSeen: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		path := map[migrate.Phase][]migrate.Phase{migrate.PhaseShadow: {migrate.PhaseShadow},
			migrate.PhaseCloud:     {migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud},
			migrate.PhaseFinalized: {migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud, migrate.PhaseFinalized}}[d.phase]
		for _, p := range path {
			if _, err := ta.a.store.Transition(ctx, d.user, migrate.Op{ID: d.user + "/" + string(p), To: p, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
		}
		devs = append(devs, d)
	}
	for range 200 { // the memdb view follows the store
		if u, ok := ta.a.state.Get(devs[len(devs)-1].user); ok && u.Phase == devs[len(devs)-1].phase {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	now := time.Now().UTC()
	pol := migrate.VersionPolicy{Platform: "android", Minimum: "5.0", Recommended: "5.3", JitterWindow: migrate.Duration(48 * time.Hour),
		Scope: []migrate.Phase{migrate.PhaseCloud, migrate.PhaseFinalized},
		Schedule: []migrate.StageAt{{Stage: migrate.StageWarning, At: now.Add(-72 * time.Hour)}, {Stage: migrate.StageSoftBlock, At: now.Add(-48 * time.Hour)},
			{Stage: migrate.StageHardBlock, At: now.Add(-24 * time.Hour)}, {Stage: migrate.StageRetired, At: now.Add(30 * 24 * time.Hour)}}}
	if _, err := ta.a.versions.policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := versionsCommand(ctx, []string{"report", "-addr", ta.a.adminURL(), "-token", ta.a.adminToken, "-format", "json"}, &out, &errOut); err != nil {
		t.Fatalf("versions report: %v (%s)", err, errOut.String())
	}
	var rep map[string][]migrate.Impact
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep["reports"]) != 1 {
		t.Fatalf("report %s: %v", out.String(), err)
	}
	im := rep["reports"][0]

	refused, told := 0, 0
	for _, d := range devs {
		code, notice := ta.a.admitLegacy(legacywire.Certificate{PeerID: d.id, User: d.user, Platform: "android", ClientVersion: d.version})
		migrated := d.phase == migrate.PhaseCloud || d.phase == migrate.PhaseFinalized
		switch {
		case code != "" && !migrated:
			t.Fatalf("%s in %s refused under a migrated-only scope: %s", d.user, d.phase, code)
		case code != "":
			refused++
		case notice != "":
			told++
		}
	}
	if im.Stage != migrate.StageHardBlock || im.Enforced != refused || im.Pending != told || im.Enforced == 0 || im.Pending == 0 {
		t.Fatalf("report: stage %s, %d pending, %d enforced; the hook refuses %d known devices and tells %d", im.Stage, im.Pending, im.Enforced, refused, told)
	}
	if im.AffectedDevices != 20 || im.DevicesByPhase[migrate.PhaseLegacy]+im.DevicesByPhase[migrate.PhaseShadow] != 0 {
		t.Fatalf("report affects %d devices (%v), want the 20 migrated ones below 5.0", im.AffectedDevices, im.DevicesByPhase)
	}
	pending := metricValues(t, ta, "gateway_versions_pending_devices")["android"]
	if enforced := metricValues(t, ta, "gateway_versions_enforced_devices")["android"]; int(pending) != im.Pending || int(enforced) != im.Enforced {
		t.Fatalf("gauges pending %v enforced %v, report %d and %d", pending, enforced, im.Pending, im.Enforced)
	}
}
