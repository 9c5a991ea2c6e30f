package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/migrate"
)

func TestBridgeMeasures(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := &bridgeMeasures{g: reg}
	if _, _, err := m.Measure(t.Context(), migrate.MeasureBridgeFailures, time.Minute, time.Now()); !errors.Is(err, errNoBridgeMeasures) {
		t.Fatalf("without a bridge: %v", err)
	}
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: bridgeMessagesMetric, Help: "h"}, []string{"direction", "result"})
	reg.MustRegister(msgs)
	add := func(dir, result string, n float64) { msgs.WithLabelValues(dir, result).Add(n) }
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	add("legacy_to_cloud", "ok", 1000) // before the first snapshot: outside every window
	measure := func(at time.Time, window time.Duration) (migrate.Sample, migrate.Sample) {
		t.Helper()
		c, k, err := m.Measure(t.Context(), migrate.MeasureBridgeFailures, window, at)
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	if c, k := measure(t0, 5*time.Minute); c.Total != 0 || k.Total != 0 {
		t.Fatalf("first snapshot: %+v %+v", c, k)
	}
	add("legacy_to_cloud", "ok", 90)
	add("legacy_to_cloud", "error", 6)
	add("legacy_to_cloud", "undeliverable", 4)
	add("legacy_to_cloud", "queued", 50) // not final: not counted
	add("cloud_to_legacy", "ok", 190)
	add("cloud_to_legacy", "refused", 10)
	c, k := measure(t0.Add(time.Minute), 5*time.Minute)
	if want := (migrate.Sample{Total: 100, Bad: 10}); c != want {
		t.Errorf("cohort %+v, want %+v", c, want)
	}
	if want := (migrate.Sample{Total: 200, Bad: 10}); k != want {
		t.Errorf("control %+v, want %+v", k, want)
	}
	// Six minutes later a five-minute window starts after the first two
	// snapshots: only what came since the one at 00:01 counts.
	add("legacy_to_cloud", "ok", 10)
	c, _ = measure(t0.Add(7*time.Minute), 5*time.Minute)
	if want := (migrate.Sample{Total: 10}); c != want {
		t.Errorf("windowed cohort %+v, want %+v", c, want)
	}
	if _, _, err := m.Measure(t.Context(), "sync_lag", time.Minute, t0); err == nil {
		t.Error("unknown measure accepted")
	}
	if n := len(m.history[migrate.MeasureBridgeFailures]); n > 2 {
		t.Errorf("%d snapshots kept", n)
	}
}

// TestSetPhaseAuditAndBreakGlass: manual phase changes are audited with
// actor, operation id, from and to, refusals included; finalized → cloud
// needs -break-glass; the status names the driver holding the lease.
func TestSetPhaseAuditAndBreakGlass(t *testing.T) {
	cfg := agentPorts(t)
	cfg.CampaignTick = 20 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cli := campaignCLI(ctx, ta)
	if _, err := ta.a.store.SeeDevice(ctx, "bg", migrate.Device{ID: "d", Platform: "ios", ClientVersion: "5.1.0"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"shadow", "ready", "cloud", "finalized"} {
		if out, err := cli("users", "set-phase", "bg", p, "-reason", "test", "-op", "op-"+p); err != nil {
			t.Fatalf("set-phase %s: %v\n%s", p, err, out)
		}
	}
	if _, err := cli("users", "set-phase", "bg", "cloud", "-reason", "oops", "-op", "op-back"); err == nil {
		t.Fatal("finalized → cloud without -break-glass was accepted")
	}
	if _, err := cli("users", "set-phase", "bg", "cloud", "-break-glass", "-op", "op-bg"); err == nil {
		t.Fatal("break-glass without a reason was accepted")
	}
	if out, err := cli("users", "set-phase", "bg", "cloud", "-break-glass", "-reason", "data loss on cloud", "-op", "op-bg"); err != nil || !strings.Contains(out, "cloud") {
		t.Fatalf("break-glass: %v\n%s", err, out)
	}
	var got []string
	for _, e := range auditEvents(t, cli, "-user", "bg") {
		if e.Actor == "" || e.OpID == "" || e.Kind != migrate.AuditTransition {
			t.Errorf("event lacks its context: %+v", e)
		}
		got = append(got, e.From+">"+e.To+":"+e.Result)
		if e.OpID == "op-bg" && e.Values["break_glass"] != 1 {
			t.Errorf("break-glass not marked: %+v", e)
		}
	}
	want := "legacy>shadow:ok shadow>ready:ok ready>cloud:ok cloud>finalized:ok finalized>cloud:refused finalized>cloud:ok"
	if strings.Join(got, " ") != want {
		t.Errorf("audit:\n got %s\nwant %s", strings.Join(got, " "), want)
	}

	// The status names the agent whose driver holds the lease.
	if _, err := cli("campaign", "create", "-f", "testdata/campaign-spring.json"); err != nil {
		t.Fatal(err)
	}
	for {
		out, err := cli("campaign", "status", "spring", "-format", "json")
		if err != nil {
			t.Fatal(err)
		}
		var st campaignStatus
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		if st.Driver.HeldAt(time.Now()) && st.Driver.Holder == ta.a.control.driver.Lease().Holder {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no driver holds the lease: %+v", st.Driver)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
