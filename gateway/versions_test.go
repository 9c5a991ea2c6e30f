package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// censusOf waits (bounded) until the agent's device census holds the user's
// device and ok accepts it, re-registering legacy phones while it waits:
// the protocol a peer speaks is known once the supernode has identified it.
func censusOf(t *testing.T, ta *testAgent, user, device string, ok func(migrate.CensusDevice) bool, again func()) migrate.CensusDevice {
	t.Helper()
	var last migrate.CensusDevice
	for range 200 {
		if d, found := ta.a.devices.census.Get(user, device); found {
			last = d
			if ok(d) {
				return d
			}
		}
		if again != nil {
			again()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("census entry of %s/%s never became what the test wants; last %+v", user, device, last)
	return last
}

func versionsList(t *testing.T, ta *testAgent, args ...string) migrate.Census {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"list", "-addr", ta.a.adminURL(), "-token", ta.a.adminToken, "-format", "json"}, args...)
	if err := versionsCommand(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("versions list: %v (%s)", err, errOut.String())
	}
	var c migrate.Census
	if err := json.Unmarshal(out.Bytes(), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestVersionCensus registers real legacy phones speaking chat v1 and v2
// and opens a real cloud session, then checks that the census records the
// protocol each actually speaks and what each declared, that `versions list`
// shows them by band, that the active-devices gauge counts them by platform,
// band and phase, and that the census survives a restart of the agent,
// bounded by -census-max with the least recently seen device evicted.
func TestVersionCensus(t *testing.T) {
	dir := t.TempDir()
	cfg := agentPorts(t)
	ta := startAgent(t, dir, cfg)

	v1 := newVersionedPhone(t, ta, "alice", 1)
	v2 := newVersionedPhone(t, ta, "carol", 2)
	reregister := func(p *versionedPhone) func() {
		return func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := p.dev.Register(ctx); err != nil {
				t.Logf("re-register: %v", err)
			}
		}
	}
	spoken := func(want int) func(migrate.CensusDevice) bool {
		return func(d migrate.CensusDevice) bool { return d.Protocol == want }
	}
	a1 := censusOf(t, ta, "alice", v1.host.ID().String(), spoken(1), reregister(v1))
	censusOf(t, ta, "carol", v2.host.ID().String(), spoken(2), reregister(v2))
	if a1.Source != migrate.SourceLegacy || a1.Platform != "desktop" || a1.ClientVersion != "7.4.1" {
		t.Fatalf("legacy census entry %+v", a1)
	}
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	dialCloud(t, ta, "bob", "web", 0)
	b := censusOf(t, ta, "bob", "web", spoken(cloudwire.ProtocolVersion), nil)
	if b.Source != migrate.SourceCloud || b.Platform != "web" {
		t.Fatalf("cloud census entry %+v", b)
	}

	// The users' records take the sightings asynchronously too.
	var c migrate.Census
	for range 200 {
		if c = versionsList(t, ta); c.Devices == 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	protocols := map[string]int{}
	for _, r := range c.Rows {
		for k, n := range r.Protocols {
			protocols[k] += n
		}
	}
	if c.Devices != 3 || protocols["legacy/1"] != 1 || protocols["legacy/2"] != 1 || protocols["cloud/"+strconv.Itoa(cloudwire.ProtocolVersion)] != 1 {
		t.Fatalf("versions list: %d devices, protocols %v", c.Devices, protocols)
	}
	var text, errOut bytes.Buffer
	if err := versionsCommand(context.Background(), []string{"list", "-addr", ta.a.adminURL(), "-token", ta.a.adminToken}, &text, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "PROTOCOLS") || !strings.Contains(text.String(), "legacy/1=1") {
		t.Fatalf("versions list text:\n%s", text.String())
	}

	ta.a.refreshVersionMetrics(context.Background(), time.Now())
	active := metricValues(t, ta, "gateway_versions_active_devices")
	if active["7.4/legacy/desktop"] != 2 || active["1.0/cloud/web"] != 1 {
		t.Fatalf("gateway_versions_active_devices %v", active)
	}

	// Restart with room for two devices: the census comes back from the
	// bucket (bob's entry, written last, comes back last), and one of the
	// phones, seen before bob, is evicted.
	ta.stop()
	cfg.CensusMax = 2
	ta = startAgent(t, dir, cfg)
	censusOf(t, ta, "bob", "web", spoken(cloudwire.ProtocolVersion), nil)
	if n, ev := ta.a.devices.census.Len(), ta.a.devices.census.Evicted(); n != 2 || ev != 1 {
		t.Fatalf("after a restart with -census-max 2: census holds %d, evicted %d; want 2 and 1", n, ev)
	}
}

// metricValues gathers a gauge or counter family from the agent's
// registry, keyed by its label values joined with "/", in the order of the
// label names.
func metricValues(t *testing.T, ta *testAgent, name string) map[string]float64 {
	t.Helper()
	mfs, err := ta.a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[labelKey(m)] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetValue())
	}
	return strings.Join(parts, "/")
}

// TestWarningNoticeAtHooks saves a policy in its warning stage through the
// admin API and checks what the enforcement hooks get: the supernode's
// Admit admits with the notice (version, update URL, date of the soft
// block) for the overlay to deliver, and the cloud's check admits.
func TestWarningNoticeAtHooks(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	now := time.Now().UTC()
	softAt := now.Add(48 * time.Hour).Truncate(time.Minute)
	req := retireRequest{Platform: "android", Below: "5.0", Recommended: "5.2", UpdateURL: "https://example.test/update", Reason: "test",
		Schedule: []migrate.StageAt{{Stage: migrate.StageWarning, At: now.Add(-time.Hour)}, {Stage: migrate.StageSoftBlock, At: softAt}}}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out retireResponse
	if err := ta.admin().do(ctx, "POST", "/v1/admin/versions/retire", req, &out); err != nil {
		t.Fatal(err)
	}
	code, notice := ta.a.admitLegacy(legacywire.Certificate{PeerID: "12D3KooWPeer", User: "dora", Platform: "android", ClientVersion: "4.1.0"})
	if code != "" {
		t.Fatalf("warning stage refused the registration: %s %q", code, notice)
	}
	for _, want := range []string{"5.2", "https://example.test/update", softAt.Format("2006-01-02 15:04"), "new sign-ins"} {
		if !strings.Contains(notice, want) {
			t.Errorf("notice %q does not say %q", notice, want)
		}
	}
	if code, notice := ta.a.admitLegacy(legacywire.Certificate{PeerID: "12D3KooWPeer", User: "dora", Platform: "android", ClientVersion: "5.3.0"}); code != "" || notice != "" {
		t.Fatalf("a current version got %q %q", code, notice)
	}
	if up := ta.a.checkCloudClient(ctx, "dora", cloudwire.Hello{Device: "web", Platform: "android", ClientVersion: "4.1.0"}); up != nil {
		t.Fatalf("warning stage closed a cloud hello: %+v", up)
	}
	decisions := metricValues(t, ta, "gateway_versions_decisions_total")
	if decisions["warn/android/warning"] != 2 || decisions["allow/android/warning"] != 1 {
		t.Fatalf("decisions %v", decisions)
	}
}
