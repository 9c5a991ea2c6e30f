package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// lookPathOrSkip finds a binary from a Debian package listed in
// .ci/packages: without it the test is skipped on a workstation and fails
// under CI (CI set), where .ci/run installs the package.
func lookPathOrSkip(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s not found under CI: .ci/run should have installed the %s package", name, pkg)
		}
		tb.Skipf("%s not found: apt-get install %s (see .ci/packages) to run this test", name, pkg)
	}
	return p
}

// promServer is a real Prometheus (Debian's package) on a free loopback
// port, with its data in a temporary directory.
type promServer struct {
	url string
}

// startPrometheus runs Prometheus scraping target every second and
// evaluating Ferry's rules every second, until the test ends.
func startPrometheus(tb testing.TB, target string) *promServer {
	tb.Helper()
	bin := lookPathOrSkip(tb, "prometheus", "prometheus")
	rules, err := filepath.Abs("../dashboards/prometheus/rules/ferry.yml")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: ferry
    static_configs:
      - targets: [%q]
`, rules, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	addr := freeAddr(tb)
	var logs bytes.Buffer
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if tb.Failed() {
			tb.Logf("prometheus output:\n%s", logs.String())
		}
	})
	return &promServer{url: "http://" + addr}
}

// promResult is one sample of an instant query.
type promResult struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query; a Prometheus that is still starting is not
// an error, only no result.
func (p *promServer) query(q string) ([]promResult, error) {
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, nil // not listening yet
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable {
		return nil, nil // not ready yet
	}
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []promResult `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: status %d: %w", q, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, body.Error)
	}
	return body.Data.Result, nil
}

// waitFor polls q until ok accepts its result or ctx ends.
func (p *promServer) waitFor(ctx context.Context, tb testing.TB, q string, ok func([]promResult) bool) []promResult {
	tb.Helper()
	var last []promResult
	for {
		res, err := p.query(q)
		if err != nil {
			tb.Fatal(err)
		}
		if ok(res) {
			return res
		}
		last = res
		select {
		case <-ctx.Done():
			tb.Fatalf("%q: no acceptable result before the deadline; last %v", q, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func nonEmpty(r []promResult) bool { return len(r) > 0 }

// valueIs accepts a one-sample result equal to want.
func valueIs(want string) func([]promResult) bool {
	return func(r []promResult) bool {
		return len(r) == 1 && fmt.Sprint(r[0].Value[1]) == want
	}
}

// TestPrometheusScrapesAgent runs a real Prometheus against an in-process
// agent: it scrapes the admin listener, loads and evaluates Ferry's rules
// (recording rules produce series), and the dashboards' key queries return
// data.
func TestPrometheusScrapesAgent(t *testing.T) {
	lookPathOrSkip(t, "prometheus", "prometheus")
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	c := ta.admin()
	setPhases(t, c, "pam", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, c, "quinn", migrate.PhaseShadow)
	prom := startPrometheus(t, ta.a.adminLn.Addr().String())

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	prom.waitFor(ctx, t, `up{job="ferry"}`, valueIs("1"))
	prom.waitFor(ctx, t, `gateway_migration_users{job="ferry",phase="cloud"}`, valueIs("1"))
	prom.waitFor(ctx, t, `gateway_migration_users{job="ferry",phase="shadow"}`, valueIs("1"))
	// Rules: loaded, evaluated, and the recording rules the alerts build on
	// have data.
	prom.waitFor(ctx, t, `gateway:migration_cloud_home:ratio`, valueIs("0.5"))
	// Key dashboard queries (Grafana's variables replaced as Grafana would).
	for _, q := range []string{
		`max by (phase) (gateway_migration_users{instance=~".*"})`,
		`sum by (direction, result) (rate(gateway_bridge_messages_total{instance=~".*"}[5s]))`,
		`min(gateway_bridge_cloud_link_up{instance=~".*"})`,
		`sum(gateway_cloud_sessions{instance=~".*"})`,
		`sum(gateway_legacy_peers{instance=~".*"})`,
	} {
		prom.waitFor(ctx, t, q, nonEmpty)
	}
	// Every rule group is healthy.
	resp, err := http.Get(prom.url + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rules struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rules); err != nil {
		t.Fatal(err)
	}
	if len(rules.Data.Groups) == 0 {
		t.Fatal("prometheus loaded no rule groups")
	}
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			if r.Health == "err" {
				t.Errorf("rule %s/%s: health %s %s", g.Name, r.Name, r.Health, r.LastError)
			}
		}
	}
}
