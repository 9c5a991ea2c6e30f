package dashboards

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// promtool finds Debian's promtool (package prometheus, listed in
// .ci/packages). Without it the test is skipped on a workstation and fails
// under CI (CI set), where .ci/run has installed it.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found under CI: .ci/run should have installed the prometheus package")
		}
		t.Skip("promtool not found: apt-get install prometheus (see .ci/packages) to run this test")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRules checks the recording and alerting rules and runs their unit
// tests.
func TestRules(t *testing.T) {
	t.Run("check", func(t *testing.T) { runPromtool(t, "prometheus", "check", "rules", "rules/ferry.yml") })
	t.Run("unit tests", func(t *testing.T) { runPromtool(t, "prometheus/tests", "test", "rules", "ferry_test.yml") })
	t.Run("every alert is unit-tested", func(t *testing.T) {
		rules, err := os.ReadFile("prometheus/rules/ferry.yml")
		if err != nil {
			t.Fatal(err)
		}
		tests, err := os.ReadFile("prometheus/tests/ferry_test.yml")
		if err != nil {
			t.Fatal(err)
		}
		alerts := regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1)
		if len(alerts) == 0 {
			t.Fatal("no alerts in rules/ferry.yml")
		}
		for _, a := range alerts {
			if !regexp.MustCompile(`alertname: ` + a[1] + `\s`).Match(tests) {
				t.Errorf("alert %s has no unit test in tests/ferry_test.yml", a[1])
			}
		}
	})
}

// TestPrometheusConfig checks the configuration the compose file gives
// Prometheus (it also checks that its rule files exist and parse).
func TestPrometheusConfig(t *testing.T) {
	runPromtool(t, "prometheus", "check", "config", "prometheus.yml")
}

// grafanaVar matches a Grafana template variable: $name or ${name}.
var grafanaVar = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)

// promQL turns a dashboard query into plain PromQL: Grafana's interval
// variables become durations, the others (which only appear inside label
// matchers) a regex matching anything.
func promQL(expr string) string {
	r := strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "$__range", "1h")
	return grafanaVar.ReplaceAllString(r.Replace(expr), ".*")
}

// TestDashboardQueriesParse writes every dashboard query (panels and
// annotations) as a recording rule and has promtool parse them all: the
// PromQL parser is not in the module graph, promtool carries it.
func TestDashboardQueriesParse(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	var where []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		add := func(what, expr string) {
			q, _ := json.Marshal(promQL(expr)) // a JSON string is a YAML double-quoted scalar
			fmt.Fprintf(&b, "      - record: dashboard:query_%d\n        expr: %s\n", len(where), q)
			where = append(where, fmt.Sprintf("%s: %s: %s", f, what, expr))
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				add("panel "+p.Title, tg.Expr)
			}
		}
		for _, a := range d.Annotations.List {
			if a.Expr != "" {
				add("annotation "+a.Name, a.Expr)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "dashboards.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool(t), "check", "rules", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		for i, w := range where {
			if strings.Contains(string(out), fmt.Sprintf("dashboard:query_%d\"", i)) {
				t.Errorf("does not parse: %s", w)
			}
		}
		t.Fatalf("promtool check rules on the dashboards' queries: %v\n%s", err, out)
	}
	t.Logf("%d queries parse", len(where))
}
