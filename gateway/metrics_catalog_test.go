package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

// catalogPath is the metrics catalog: a table in the dashboards' README.
const catalogPath = "../dashboards/README.md"

// registeredMetric is one gateway_* series family the agent's registry
// declares, whether or not it has samples yet (a vector with no children
// is absent from /metrics but still registered).
type registeredMetric struct {
	name   string
	labels []string
	typ    string // from a scrape; "" if the family has no sample yet
}

// catalogEntry is one row of the catalog table.
type catalogEntry struct {
	typ    string
	labels []string
}

var (
	descName   = regexp.MustCompile(`fqName: "([^"]+)"`)
	descLabels = regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	catalogRow = regexp.MustCompile("(?m)^\\| `(gateway_[a-z0-9_]+)` \\| ([a-z]+) \\|([^|]*)\\|")
	labelName  = regexp.MustCompile("`([a-zA-Z_][a-zA-Z0-9_]*)`")
	// exprMetric finds metric names in PromQL text. Recording-rule names
	// (gateway:...) have a colon after "gateway" and do not match.
	exprMetric = regexp.MustCompile(`\bgateway_[a-z0-9_]+`)
	// forbiddenLabels would put a user, peer, device or session id on a
	// series (DESIGN.md, Observability).
	forbiddenLabels = []string{"user", "user_id", "peer", "peer_id", "device", "device_id", "session", "session_id", "id"}
)

// registeredMetrics lists the gateway_* families a running agent's registry
// declares, with their types from one scrape of its /metrics.
func registeredMetrics(tb testing.TB, reg *prometheus.Registry) map[string]registeredMetric {
	tb.Helper()
	out := map[string]registeredMetric{}
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	for d := range ch {
		s := d.String()
		m := descName.FindStringSubmatch(s)
		if m == nil || !strings.HasPrefix(m[1], "gateway_") {
			continue
		}
		var labels []string
		if l := descLabels.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, v := range strings.Split(l[1], ",") {
				labels = append(labels, strings.TrimSuffix(strings.TrimPrefix(v, "c("), ")"))
			}
		}
		sort.Strings(labels)
		out[m[1]] = registeredMetric{name: m[1], labels: labels}
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if r, ok := out[mf.GetName()]; ok {
			r.typ = promType(mf.GetType())
			out[mf.GetName()] = r
		}
	}
	return out
}

func promType(t dto.MetricType) string {
	switch t {
	case dto.MetricType_COUNTER:
		return "counter"
	case dto.MetricType_GAUGE:
		return "gauge"
	case dto.MetricType_HISTOGRAM:
		return "histogram"
	case dto.MetricType_SUMMARY:
		return "summary"
	}
	return "untyped"
}

// readCatalog parses the catalog table of dashboards/README.md.
func readCatalog(tb testing.TB) map[string]catalogEntry {
	tb.Helper()
	b, err := os.ReadFile(catalogPath)
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]catalogEntry{}
	for _, m := range catalogRow.FindAllStringSubmatch(string(b), -1) {
		if _, dup := out[m[1]]; dup {
			tb.Errorf("catalog lists %s twice", m[1])
		}
		var labels []string
		for _, l := range labelName.FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		sort.Strings(labels)
		out[m[1]] = catalogEntry{typ: m[2], labels: labels}
	}
	if len(out) == 0 {
		tb.Fatalf("%s has no catalog rows", catalogPath)
	}
	return out
}

// scrape fetches the agent's /metrics in the text format.
func scrape(tb testing.TB, ta *testAgent) string {
	tb.Helper()
	resp, err := http.Get(ta.a.adminURL() + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: status %d, %v", resp.StatusCode, err)
	}
	return string(b)
}

// TestMetricsCatalog ties dashboards/README.md's catalog to what a running
// agent registers: every gateway_* family is listed with its type and
// labels, nothing is listed that is not registered, promlint finds nothing
// wrong with them, and no label can carry an identity. It also checks that
// every metric the dashboards and the Prometheus rules use is registered.
func TestMetricsCatalog(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	reg := registeredMetrics(t, ta.a.reg)
	cat := readCatalog(t)

	for name, r := range reg {
		e, ok := cat[name]
		if !ok {
			t.Errorf("%s is registered but not in the catalog (%s)", name, catalogPath)
			continue
		}
		if r.typ != "" && r.typ != e.typ {
			t.Errorf("%s: catalog says %s, the registry says %s", name, e.typ, r.typ)
		}
		if !slices.Equal(r.labels, e.labels) {
			t.Errorf("%s: catalog labels %v, registered labels %v", name, e.labels, r.labels)
		}
		for _, l := range r.labels {
			if slices.Contains(forbiddenLabels, l) {
				t.Errorf("%s has label %q: no user, peer, device or session id on a metric", name, l)
			}
		}
		if !strings.HasSuffix(name, "_total") && r.typ == "counter" {
			t.Errorf("counter %s does not end in _total", name)
		}
	}
	for name := range cat {
		if _, ok := reg[name]; !ok {
			t.Errorf("%s is in the catalog but the agent does not register it", name)
		}
	}
	// go-libp2p's own families are go-libp2p's to name: the catalog matches
	// them by prefix, and each subsystem it lists must be there.
	families := describedFamilies(t, ta.a.reg)
	for _, prefix := range libp2pPrefixes {
		if !slices.ContainsFunc(families, func(n string) bool { return strings.HasPrefix(n, prefix) }) {
			t.Errorf("no go-libp2p family %s* on the agent's registry (catalog: go-libp2p's own metrics)", prefix)
		}
	}

	text := scrape(t, ta)
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "gateway_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}

	t.Run("dashboards and rules use registered metrics", func(t *testing.T) {
		files, err := filepath.Glob("../dashboards/*.json")
		if err != nil || len(files) == 0 {
			t.Fatalf("no dashboards: %v", err)
		}
		more, _ := filepath.Glob("../dashboards/prometheus/rules/*.yml")
		files = append(files, more...)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range exprMetric.FindAllString(string(b), -1) {
				if !isRegistered(reg, name) {
					t.Errorf("%s uses %s, which the agent does not register", filepath.Base(f), name)
				}
			}
		}
	})
}

// libp2pPrefixes are the go-libp2p subsystems whose metrics the catalog
// promises on the agent's registry.
var libp2pPrefixes = []string{"libp2p_rcmgr_", "libp2p_identify_", "libp2p_relaysvc_", "libp2p_holepunch_"}

// describedFamilies lists every family name reg declares.
func describedFamilies(tb testing.TB, reg *prometheus.Registry) []string {
	tb.Helper()
	ch := make(chan *prometheus.Desc)
	go func() { reg.Describe(ch); close(ch) }()
	var out []string
	for d := range ch {
		if m := descName.FindStringSubmatch(d.String()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// isRegistered accepts a family name, or a histogram's _bucket, _sum or
// _count series.
func isRegistered(reg map[string]registeredMetric, name string) bool {
	if _, ok := reg[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if r, ok := reg[base]; ok && r.typ != "counter" && r.typ != "gauge" {
				return true
			}
		}
	}
	return false
}
