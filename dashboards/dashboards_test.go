package dashboards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

type dashboard struct {
	Title       string `json:"title"`
	UID         string `json:"uid"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		FieldConfig struct {
			Defaults struct {
				Unit string `json:"unit"`
			} `json:"defaults"`
		} `json:"fieldConfig"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

var (
	metricName  = regexp.MustCompile(`\bgateway_[a-z0-9_]+`)
	catalogName = regexp.MustCompile("(?m)^\\| `(gateway_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\|")
	rateOf      = regexp.MustCompile(`rate\(\s*(gateway_[a-z0-9_]+)(\{[^}]*\})?\[\$__rate_interval\]\)`)
)

// catalog reads metric names and types from README.md.
func catalog(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range catalogName.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = m[2]
	}
	if len(out) == 0 {
		t.Fatal("no metrics in the catalog")
	}
	return out
}

func TestDashboards(t *testing.T) {
	cat := catalog(t)
	files, err := filepath.Glob("*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards: %v", err)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var d dashboard
			if err := json.Unmarshal(b, &d); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			if d.Title == "" || d.UID == "" {
				t.Error("dashboard needs a title and a uid")
			}
			if !hasDatasourceVar(d) {
				t.Error("no templated Prometheus data source variable $datasource")
			}
			for _, p := range d.Panels {
				if p.FieldConfig.Defaults.Unit == "" {
					t.Errorf("panel %q has no unit", p.Title)
				}
				if p.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q does not use ${datasource}", p.Title)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				for _, tg := range p.Targets {
					checkExpr(t, p.Title, tg.Expr, cat)
				}
			}
		})
	}
}

func hasDatasourceVar(d dashboard) bool {
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" {
			return true
		}
	}
	return false
}

// checkExpr checks that every metric in expr is in the catalog and that
// counters and histogram buckets are only read through rate() over
// $__rate_interval.
func checkExpr(t *testing.T, panel, expr string, cat map[string]string) {
	t.Helper()
	rated := map[string]bool{}
	for _, m := range rateOf.FindAllStringSubmatch(expr, -1) {
		rated[m[1]] = true
	}
	for _, name := range metricName.FindAllString(expr, -1) {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		typ, ok := cat[base]
		if !ok {
			t.Errorf("panel %q: %s is not in the catalog", panel, name)
			continue
		}
		if (typ == "counter" || typ == "histogram") && !rated[name] {
			t.Errorf("panel %q: %s %s is not read through rate(...[$__rate_interval])", panel, typ, name)
		}
	}
}
