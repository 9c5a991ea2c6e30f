package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrygw/ferry/migrate"
)

// promAPI answers /api/v1/query like Prometheus does, from a table of
// answers by query; it records the time parameter it was asked for.
func promAPI(t *testing.T, answers map[string]string) (*httptest.Server, *[]string) {
	t.Helper()
	var times []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		times = append(times, r.URL.Query().Get("time"))
		body, ok := answers[r.URL.Query().Get("query")]
		if !ok {
			w.WriteHeader(http.StatusBadRequest)
			body = `{"status":"error","errorType":"bad_data","error":"parse error"}`
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, &times
}

func TestPromClient(t *testing.T) {
	srv, times := promAPI(t, map[string]string{
		"vec1":   `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1772366400.000,"42.5"]}]}}`,
		"vec0":   `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"scalar": `{"status":"success","data":{"resultType":"scalar","result":[1772366400.000,"7"]}}`,
		"vec2":   `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}`,
		"matrix": `{"status":"success","data":{"resultType":"matrix","result":[]}}`,
		"nan":    `{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}`,
		"junk":   `<html>`,
	})
	c, err := newPromClient(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 250e6, time.UTC)
	for _, tc := range []struct {
		query   string
		want    float64
		errPart string
	}{
		{"vec1", 42.5, ""},
		{"vec0", 0, ""},
		{"scalar", 7, ""},
		{"vec2", 0, "more than one series"},
		{"matrix", 0, "result type"},
		{"nan", 0, "NaN"},
		{"junk", 0, "not the query API's JSON"},
		{"unknown", 0, "bad_data: parse error"},
	} {
		t.Run(tc.query, func(t *testing.T) {
			got, err := c.QueryScalar(t.Context(), tc.query, at)
			if tc.errPart == "" && (err != nil || got != tc.want) {
				t.Errorf("= %v, %v; want %v", got, err, tc.want)
			}
			if tc.errPart != "" && (err == nil || !strings.Contains(err.Error(), tc.errPart)) {
				t.Errorf("error %v, want one saying %q", err, tc.errPart)
			}
		})
	}
	if (*times)[0] != "1772366400.250" {
		t.Errorf("time parameter %q, want the evaluation time in seconds", (*times)[0])
	}
	for _, bad := range []string{"", "prometheus:9090", "ftp://x", "http://"} {
		if _, err := newPromClient(bad); err == nil {
			t.Errorf("newPromClient(%q) accepted", bad)
		}
	}
}

// TestPromQLGuardrailThroughDriver runs a campaign whose one guardrail is a
// PromQL query to an httptest Prometheus: the migrated cohort's failure rate
// is far above the control group's, so the driver pauses the campaign and
// audits the values it read over HTTP.
func TestPromQLGuardrailThroughDriver(t *testing.T) {
	srv, _ := promAPI(t, map[string]string{
		`cb[600s]`: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"30"]}]}}`,
		`ct[600s]`: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"200"]}]}}`,
		`xb[600s]`: `{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}`,
		`xt[600s]`: `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1000"]}]}}`,
	})
	cfg := agentPorts(t)
	cfg.PrometheusURL = srv.URL
	cfg.CampaignTick = 20 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := ta.admin()
	setPhases(t, c, "pq-1", migrate.PhaseShadow)
	def := migrate.Campaign{Name: "promq", Steps: []migrate.Step{{TargetBP: migrate.BasisPoints}},
		Guardrails: []migrate.Guardrail{{Name: "errs", Measure: migrate.MeasurePromQL, MaxExcess: 0.05, MinSamples: 100,
			PromQL: &migrate.PromQLMeasure{CohortBad: "cb[$window]", CohortTotal: "ct[$window]", ControlBad: "xb[$window]", ControlTotal: "xt[$window]"}}}}
	var out migrate.Campaign
	if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns", def, &out); err != nil {
		t.Fatal(err)
	}
	if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/promq/start", commandRequest{Reason: "test"}, &out); err != nil {
		t.Fatal(err)
	}
	var st campaignStatus
	for st.Campaign.State != migrate.CampaignPaused {
		select {
		case <-ctx.Done():
			t.Fatalf("campaign not paused by its PromQL guardrail: %+v", st)
		case <-time.After(20 * time.Millisecond):
		}
		if err := c.do(ctx, http.MethodGet, "/v1/admin/campaigns/promq", nil, &st); err != nil {
			t.Fatal(err)
		}
	}
	if !strings.Contains(st.Campaign.Reason, "guardrail failed") {
		t.Errorf("paused for %q", st.Campaign.Reason)
	}
	var audit map[string][]migrate.AuditEvent
	if err := c.do(ctx, http.MethodGet, "/v1/admin/audit?campaign=promq", nil, &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditGuardrail && e.To == string(migrate.GuardrailFail) {
			found = e.Values["errs.cohort_bad"] == 30 && e.Values["errs.control_total"] == 1000 && e.Thresholds["errs.max_excess"] == 0.05
		}
	}
	if !found {
		t.Errorf("no failed evaluation audited with the queried values: %+v", audit["events"])
	}
}

// TestAgentMeasuresSyncLagAndCalls: sync lag is read from the cloud's lag
// histogram (late events out of all, no control group); call setup
// failures are inconclusive until something registers their counter, then
// split by the callee's home.
func TestAgentMeasuresSyncLagAndCalls(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := &bridgeMeasures{g: reg}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, measure := range []string{migrate.MeasureSyncLag, migrate.MeasureCallSetupFailures} {
		if _, _, err := m.Measure(t.Context(), measure, time.Minute, t0); err == nil || !strings.Contains(err.Error(), "not registered") {
			t.Errorf("%s without its metric: %v", measure, err)
		}
	}
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{Name: syncLagMetric, Help: "h", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)})
	calls := prometheus.NewCounterVec(prometheus.CounterOpts{Name: callsMetric, Help: "h"}, []string{"callee_home", "result"})
	reg.MustRegister(lag, calls)
	calls.WithLabelValues("cloud", "ok") // a vector shows once it has a series
	if _, _, err := m.Measure(t.Context(), migrate.MeasureSyncLag, time.Minute, t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.Measure(t.Context(), migrate.MeasureCallSetupFailures, time.Minute, t0); err != nil {
		t.Fatal(err)
	}
	for range 90 {
		lag.Observe(0.01)
	}
	for range 10 {
		lag.Observe(3)
	}
	calls.WithLabelValues("cloud", "ok").Add(45)
	calls.WithLabelValues("cloud", "failed").Add(5)
	calls.WithLabelValues("legacy", "ok").Add(99)
	calls.WithLabelValues("legacy", "failed").Add(1)
	c, k, err := m.Measure(t.Context(), migrate.MeasureSyncLag, time.Minute, t0.Add(30*time.Second))
	if err != nil || c != (migrate.Sample{Total: 100, Bad: 10}) || k != (migrate.Sample{}) {
		t.Errorf("sync lag: cohort %+v control %+v err %v", c, k, err)
	}
	c, k, err = m.Measure(t.Context(), migrate.MeasureCallSetupFailures, time.Minute, t0.Add(30*time.Second))
	if err != nil || c != (migrate.Sample{Total: 50, Bad: 5}) || k != (migrate.Sample{Total: 100, Bad: 1}) {
		t.Errorf("call setups: cohort %+v control %+v err %v", c, k, err)
	}
	g := migrate.Guardrail{Name: "lag", Measure: migrate.MeasureSyncLag, Compare: migrate.CompareNone, MinSamples: 10, MaxExcess: 0.05}
	if r := g.Evaluate(t.Context(), m, t0.Add(40*time.Second)); r.Outcome != migrate.GuardrailFail || r.Value != 0.1 {
		t.Errorf("sync lag guardrail: %+v", r)
	}
}

// TestPromClientRealPrometheus queries the real Prometheus of the tests
// scraping an agent: one aggregated series is read as a number, several
// series are refused.
func TestPromClientRealPrometheus(t *testing.T) {
	lookPathOrSkip(t, "prometheus", "prometheus")
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "rp-1", migrate.PhaseShadow)
	prom := startPrometheus(t, ta.a.adminLn.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	prom.waitFor(ctx, t, `gateway_migration_users{job="ferry",phase="shadow"}`, valueIs("1"))
	c, err := newPromClient(prom.url)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.QueryScalar(ctx, `sum(gateway_migration_users{phase="shadow"})`, time.Now()); err != nil || v != 1 {
		t.Errorf("sum of shadow users = %v, %v; want 1", v, err)
	}
	if v, err := c.QueryScalar(ctx, `scalar(sum(gateway_migration_users))`, time.Now()); err != nil || v != 1 {
		t.Errorf("scalar = %v, %v; want 1", v, err)
	}
	if _, err := c.QueryScalar(ctx, `gateway_migration_users`, time.Now()); err == nil || !strings.Contains(err.Error(), "more than one series") {
		t.Errorf("per-phase series: %v", err)
	}
	if _, err := c.QueryScalar(ctx, `sum(`, time.Now()); err == nil {
		t.Error("a query that does not parse gave no error")
	}
}

// FuzzParsePromScalar: no answer makes the parser panic, and a number it
// returns is never NaN.
func FuzzParsePromScalar(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42.5"]}]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"scalar","result":[1,"7"]}}`))
	f.Add([]byte(`{"status":"error","errorType":"bad_data","error":"x"}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parsePromScalar(b)
		if err == nil && v != v {
			t.Fatalf("NaN from %q", b)
		}
	})
}

// TestCampaignCommandRetried: a pause sent twice with one op_id (a client
// retrying after a lost answer) pauses once: the second answers 200 with
// the paused campaign, and the audit log has one pause.
func TestCampaignCommandRetried(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := ta.admin()
	def := migrate.Campaign{Name: "retry", Steps: []migrate.Step{{TargetBP: 100}}}
	var out migrate.Campaign
	if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns", def, &out); err != nil {
		t.Fatal(err)
	}
	if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/retry/start", commandRequest{Reason: "go"}, &out); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/retry/pause", commandRequest{Reason: "lunch", OpID: "pause-1"}, &out); err != nil {
			t.Fatalf("pause %d: %v", i+1, err)
		}
		if out.State != migrate.CampaignPaused {
			t.Fatalf("pause %d: campaign %s", i+1, out.State)
		}
	}
	// A new pause (another op id) is refused: the campaign is paused.
	if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/retry/pause", commandRequest{Reason: "again"}, &out); err == nil {
		t.Fatal("a second pause with a new op_id was accepted")
	}
	var audit map[string][]migrate.AuditEvent
	if err := c.do(ctx, http.MethodGet, "/v1/admin/audit?campaign=retry", nil, &audit); err != nil {
		t.Fatal(err)
	}
	pauses := 0
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditCampaign && e.To == string(migrate.CampaignPaused) {
			pauses++
			if e.OpID != "pause-1" {
				t.Errorf("pause audited with op id %q, want pause-1", e.OpID)
			}
		}
	}
	if pauses != 1 {
		t.Fatalf("%d pauses audited, want 1: %+v", pauses, audit["events"])
	}
}
