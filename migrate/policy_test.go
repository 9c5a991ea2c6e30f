package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var policyT0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

func day(n int) time.Time { return policyT0.Add(time.Duration(n) * 24 * time.Hour) }

func testPolicy() VersionPolicy {
	return VersionPolicy{
		Platform: "android", Minimum: "5.0", Recommended: "5.2",
		Blocked:      []BlockedVersion{{Version: "4.9.9", Reason: "crashes supernodes"}},
		RequiredCaps: []string{"chat2"}, MinLegacyProtocol: 2, MinCloudProtocol: 6, UpdateURL: "https://example.test/update",
		Schedule: []StageAt{{StageDryRun, day(0)}, {StageAnnounced, day(1)}, {StageWarning, day(2)},
			{StageSoftBlock, day(3)}, {StageHardBlock, day(4)}, {StageRetired, day(6)}},
		JitterWindow: Duration(24 * time.Hour),
	}
}

func TestDecide(t *testing.T) {
	p := testPolicy()
	old := ClientDevice{ID: "d1", Platform: "android", Version: "4.2", Capabilities: []string{"chat2"}, Protocol: 2}
	cur := ClientDevice{ID: "d2", Platform: "android", Version: "5.1", Capabilities: []string{"chat2"}, Protocol: 2}
	for _, tc := range []struct {
		name    string
		p       *VersionPolicy
		phase   Phase
		dev     ClientDevice
		now     time.Time
		outcome VersionOutcome
		reason  string
		refuses bool
	}{
		{"no policy", nil, PhaseLegacy, old, day(5), VersionAllow, ReasonNoPolicy, false},
		{"other platform", &p, PhaseLegacy, ClientDevice{ID: "x", Platform: "ios", Version: "1.0"}, day(5), VersionAllow, ReasonNoPolicy, false},
		{"current", &p, PhaseLegacy, cur, day(6), VersionAllow, ReasonCurrent, false},
		{"draft", &p, PhaseLegacy, old, day(-1), VersionAllow, ReasonNotYetEnforced, false},
		{"dry run", &p, PhaseLegacy, old, day(0), VersionAllow, ReasonNotYetEnforced, false},
		{"announced", &p, PhaseLegacy, old, day(1), VersionAllow, ReasonNotYetEnforced, false},
		{"warning", &p, PhaseLegacy, old, day(2), VersionWarn, ReasonBelowMinimum, false},
		{"soft block new", &p, PhaseLegacy, old, day(3), VersionSoftBlock, ReasonBelowMinimum, true},
		{"soft block known", &p, PhaseLegacy, ClientDevice{ID: "d1", Platform: "android", Version: "4.2", Known: true}, day(3), VersionSoftBlock, ReasonBelowMinimum, false},
		{"hard block after window", &p, PhaseLegacy, old, day(5), VersionHardBlock, ReasonBelowMinimum, true},
		{"retired", &p, PhaseLegacy, old, day(7), VersionHardBlock, ReasonBelowMinimum, true},
		{"missing cap", &p, PhaseLegacy, ClientDevice{ID: "d3", Platform: "android", Version: "5.1", Capabilities: []string{}}, day(7), VersionHardBlock, ReasonMissingCapability, true},
		{"caps unknown", &p, PhaseLegacy, ClientDevice{ID: "d3", Platform: "android", Version: "5.1"}, day(7), VersionAllow, ReasonCurrent, false},
		{"claims new speaks old", &p, PhaseLegacy, ClientDevice{ID: "d4", Platform: "android", Version: "9.0", Capabilities: []string{"chat2"}, Protocol: 1}, day(7), VersionHardBlock, ReasonProtocolTooOld, true},
		{"emergency ignores stage", &p, PhaseLegacy, ClientDevice{ID: "d5", Platform: "android", Version: "4.9.9"}, day(-3), VersionHardBlock, ReasonBlockedVersion, true},
		{"unknown version allowed", &p, PhaseLegacy, ClientDevice{ID: "d6", Platform: "android", Version: "nightly"}, day(7), VersionAllow, ReasonCurrent, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.p, tc.phase, tc.dev, tc.now)
			if d.Outcome != tc.outcome || d.Reason != tc.reason || d.Refuses(tc.dev.Known) != tc.refuses {
				t.Fatalf("Decide = %s/%s refuses=%v, want %s/%s refuses=%v", d.Outcome, d.Reason, d.Refuses(tc.dev.Known), tc.outcome, tc.reason, tc.refuses)
			}
			if d.Outcome != VersionAllow && d.Notice == "" {
				t.Fatal("a warning or block carries no notice")
			}
		})
	}
}

func TestDecideScope(t *testing.T) {
	p := testPolicy()
	p.Scope = []Phase{PhaseCloud, PhaseFinalized}
	old := ClientDevice{ID: "d1", Platform: "android", Version: "4.2"}
	if d := Decide(&p, PhaseLegacy, old, day(9)); d.Outcome != VersionAllow || d.Reason != ReasonOutOfScope {
		t.Fatalf("legacy user: %+v, want allow out_of_scope", d)
	}
	if d := Decide(&p, PhaseCloud, old, day(9)); d.Outcome != VersionHardBlock {
		t.Fatalf("cloud user: %+v, want hard block", d)
	}
	old.Version = "4.9.9"
	if d := Decide(&p, PhaseLegacy, old, day(9)); d.Outcome != VersionHardBlock || d.Reason != ReasonBlockedVersion {
		t.Fatalf("emergency block out of scope: %+v, want hard block", d)
	}
	p.Unknown = UnknownEnforce
	old.Version = "nightly"
	if d := Decide(&p, PhaseCloud, old, day(9)); d.Reason != ReasonUnknownVersion {
		t.Fatalf("unknown enforced: %+v", d)
	}
}

// TestHardBlockJitter checks that the hard block is spread: inside the
// window some devices are refused and some not, each device's deadline is
// stable, and every device is refused once the window has passed.
func TestHardBlockJitter(t *testing.T) {
	p := testPolicy()
	start, _ := p.DateOf(StageHardBlock)
	mid := start.Add(12 * time.Hour)
	blocked := 0
	const n = 1000
	for i := range n {
		d := ClientDevice{ID: fmt.Sprintf("dev-%d", i), Platform: "android", Version: "4.0", Known: true}
		a, b := Decide(&p, PhaseLegacy, d, mid), Decide(&p, PhaseLegacy, d, mid)
		if a.Deadline != b.Deadline {
			t.Fatal("deadline is not stable")
		}
		if a.Deadline.Before(start) || !a.Deadline.Before(start.Add(24*time.Hour)) {
			t.Fatalf("deadline %v outside the window", a.Deadline)
		}
		if a.Refuses(true) {
			blocked++
		}
		if !Decide(&p, PhaseLegacy, d, start.Add(24*time.Hour)).Refuses(true) {
			t.Fatal("device not refused after the jitter window")
		}
	}
	if blocked < n/4 || blocked > 3*n/4 {
		t.Fatalf("%d of %d refused halfway through the window, want about half", blocked, n)
	}
}

func TestPolicyValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*VersionPolicy)
		ok   bool
	}{
		{"good", func(*VersionPolicy) {}, true},
		{"bad platform", func(p *VersionPolicy) { p.Platform = "An droid" }, false},
		{"bad minimum", func(p *VersionPolicy) { p.Minimum = "five" }, false},
		{"recommended below minimum", func(p *VersionPolicy) { p.Recommended = "4.0" }, false},
		{"block without reason", func(p *VersionPolicy) { p.Blocked = []BlockedVersion{{Version: "1.0"}} }, false},
		{"stages backwards", func(p *VersionPolicy) { p.Schedule[1], p.Schedule[2] = p.Schedule[2], p.Schedule[1] }, false},
		{"dates backwards", func(p *VersionPolicy) { p.Schedule[2].At = day(-5) }, false},
		{"bad stage", func(p *VersionPolicy) { p.Schedule[0].Stage = "later" }, false},
		{"bad scope", func(p *VersionPolicy) { p.Scope = []Phase{"moon"} }, false},
		{"bad unknown", func(p *VersionPolicy) { p.Unknown = "maybe" }, false},
		{"negative jitter", func(p *VersionPolicy) { p.JitterWindow = -1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy().Clone()
			tc.edit(&p)
			err := p.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not match ErrInvalidPolicy", err)
			}
		})
	}
}

func FuzzPolicyJSON(f *testing.F) {
	f.Add([]byte(`{"platform":"android","minimum":"5.0","recommended":"5.2","schedule":[{"stage":"warning","at":"2026-03-01T00:00:00Z"},{"stage":"hard_block","at":"2026-03-05T00:00:00Z"}],"jitter_window":"24h","scope":["cloud"]}`))
	f.Add([]byte(`{"platform":"ios","blocked":[{"version":"1.2.3","reason":"x"}],"unknown":"enforce","required_caps":["chat2"],"min_protocol":2}`))
	f.Add([]byte(`{"platform":"x","minimum":"v1.2.3.4"}`))
	f.Add([]byte(`{"platform":"android","min_protocol":6,"min_legacy_protocol":2,"min_cloud_protocol":7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v does not match ErrInvalidPolicy", err)
			}
			return
		}
		for _, v := range []string{"", "1", "4.2", "5.0.0", "nightly", p.Minimum} {
			for _, now := range []time.Time{day(-10), day(3), day(100)} {
				d := Decide(&p, PhaseCloud, ClientDevice{ID: v, Platform: p.Platform, Version: v}, now)
				if !d.Outcome.Valid() || !d.Stage.Valid() {
					t.Fatalf("invalid decision %+v", d)
				}
				if !d.Affected && d.Outcome != VersionAllow {
					t.Fatalf("unaffected device refused: %+v", d)
				}
			}
		}
	})
}

// TestWarningNotice checks that a decision that admits an affected device
// carries a notice an enforcement point can pass on as is: the version to
// update to, where, and the date of the next stage for this device.
func TestWarningNotice(t *testing.T) {
	p := testPolicy()
	old := ClientDevice{ID: "d1", Platform: "android", Version: "4.2", Capabilities: []string{"chat2"}, Protocol: 2}
	known := old
	known.Known = true
	inWindow := Decide(&p, PhaseLegacy, known, day(4))
	for _, tc := range []struct {
		name   string
		dev    ClientDevice
		now    time.Time
		tells  bool
		next   Stage
		nextAt time.Time
		says   string
	}{
		{"announced says nothing", old, day(1), false, StageWarning, day(2), ""},
		{"warning", old, day(2), true, StageSoftBlock, day(3), "From 2026-03-04 00:00 UTC, new sign-ins and device links with this version will be refused."},
		{"soft block, known device", known, day(3), true, StageHardBlock, inWindow.Deadline, "this version will stop working"},
		{"soft block, new device", old, day(3), false, StageHardBlock, inWindow.Deadline, "please update to 5.2 or later at https://example.test/update"},
		{"inside the jitter window", known, day(4), true, StageHardBlock, inWindow.Deadline, "this version will stop working"},
		{"retired", known, day(7), false, "", time.Time{}, "is no longer supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(&p, PhaseLegacy, tc.dev, tc.now)
			if d.Tells(tc.dev.Known) != tc.tells || d.NextStage != tc.next || !d.NextStageAt.Equal(tc.nextAt) {
				t.Fatalf("tells=%v next=%s@%v, want %v %s@%v (%+v)", d.Tells(tc.dev.Known), d.NextStage, d.NextStageAt, tc.tells, tc.next, tc.nextAt, d)
			}
			if !strings.Contains(d.Notice, tc.says) || (tc.says == "") != (d.Notice == "") {
				t.Fatalf("notice %q, want it to say %q", d.Notice, tc.says)
			}
			if tc.tells && !strings.Contains(d.Notice, "5.2") {
				t.Fatalf("notice %q does not name the recommended version", d.Notice)
			}
		})
	}
	if inWindow.Outcome != VersionSoftBlock || !inWindow.Deadline.After(day(4)) {
		t.Fatalf("the test device is not inside the jitter window at day 4: %+v", inWindow)
	}
}

// TestMinProtocolPerNetwork checks that the protocol minimum of each
// network applies to that network's devices only: legacy chat versions
// (1-3) and the cloud protocol (6 and up) are not one scale.
func TestMinProtocolPerNetwork(t *testing.T) {
	p := VersionPolicy{Platform: "android", MinLegacyProtocol: 2, MinCloudProtocol: 7,
		Schedule: []StageAt{{StageRetired, day(0)}}}
	for _, tc := range []struct {
		name     string
		network  string
		protocol int
		affected bool
	}{
		{"legacy chat v1 below the legacy minimum", SourceLegacy, 1, true},
		{"legacy chat v3 is not held to the cloud minimum", SourceLegacy, 3, false},
		{"bridge device is a legacy device", SourceBridge, 1, true},
		{"unknown network counts as legacy", "", 1, true},
		{"cloud protocol 6 below the cloud minimum", SourceCloud, 6, true},
		{"cloud protocol 7", SourceCloud, 7, false},
		{"cloud protocol 8", SourceCloud, 8, false},
		{"protocol unknown", SourceCloud, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := ClientDevice{ID: "d", Platform: "android", Version: "9.0", Protocol: tc.protocol, Network: tc.network}
			got, reason := p.Affects(PhaseLegacy, d)
			if got != tc.affected || (got && reason != ReasonProtocolTooOld) {
				t.Fatalf("Affects = %v %s, want %v", got, reason, tc.affected)
			}
		})
	}
	cd := CensusDevice{User: "u", ID: "d", Source: SourceCloud, Platform: "android", ClientVersion: "9.0", Protocol: 6}
	if got, _ := p.Affects(PhaseLegacy, cd.ClientDevice(true)); !got {
		t.Fatal("a census cloud device is not checked against the cloud minimum")
	}
}

// TestPolicyMigratesMinProtocol checks that a policy saved before the
// split stays readable: its min_protocol moves to the network it can have
// meant, the new fields win when set, and what is written back carries
// only the new fields.
func TestPolicyMigratesMinProtocol(t *testing.T) {
	for _, tc := range []struct {
		name          string
		json          string
		legacy, cloud int
	}{
		{"legacy chat version", `{"platform":"android","min_protocol":2}`, 2, 0},
		{"highest legacy chat version", `{"platform":"android","min_protocol":3}`, 3, 0},
		{"cloud protocol", `{"platform":"android","min_protocol":6}`, 0, 6},
		{"new fields win", `{"platform":"android","min_protocol":6,"min_legacy_protocol":2}`, 2, 0},
		{"new fields only", `{"platform":"android","min_legacy_protocol":1,"min_cloud_protocol":7}`, 1, 7},
		{"none", `{"platform":"android"}`, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			if p.MinLegacyProtocol != tc.legacy || p.MinCloudProtocol != tc.cloud {
				t.Fatalf("legacy %d cloud %d, want %d %d", p.MinLegacyProtocol, p.MinCloudProtocol, tc.legacy, tc.cloud)
			}
			b, err := json.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), `"min_protocol"`) {
				t.Fatalf("written back with the old field: %s", b)
			}
			again, err := ParsePolicy(b)
			if err != nil || again.MinLegacyProtocol != tc.legacy || again.MinCloudProtocol != tc.cloud {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
		})
	}
	if _, err := ParsePolicy([]byte(`{"platform":"android","min_protocol":-1}`)); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("negative min_protocol: %v, want ErrInvalidPolicy", err)
	}
}
