package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The architecture is a test (DESIGN.md, "Dependency direction"): the domain
// and the wire packages import no transport, and the two networks never
// import each other. One table for the whole module, one subtest per package,
// so the rules can be read side by side.
func TestDeps(t *testing.T) {
	const ferry = "github.com/ferrygw/ferry/"
	transports := []string{"github.com/libp2p/", "github.com/gorilla/", "net/http", "github.com/prometheus/"}
	wire := append([]string{"net", "github.com/nats-io/"}, transports...)
	tests := []struct {
		pkg string
		// transitive: forbidden anywhere in the package's dependency graph
		// (a prefix ending in "/" forbids a whole tree).
		transitive []string
		// direct: forbidden in the package's own imports. The JetStream
		// adapter reaches nats.go, which links net/http for its own
		// WebSocket transport, but must not itself import a transport.
		direct []string
		// allowed: Ferry packages exempt from a forbidden ferry prefix.
		allowed string
	}{
		{pkg: "migrate", transitive: append(wire, ferry)},
		{pkg: "migrate/migratestore", direct: transports,
			transitive: []string{"github.com/libp2p/", "github.com/gorilla/", "github.com/prometheus/", ferry + "legacy", ferry + "cloud", ferry + "bridge", ferry + "gateway"}},
		{pkg: "legacy/legacywire", transitive: append(wire, ferry)},
		{pkg: "cloud/cloudwire", transitive: append(wire, ferry)},
		{pkg: "legacy/...", transitive: []string{ferry + "cloud", ferry + "bridge", ferry + "gateway"}},
		{pkg: "cloud/...", transitive: []string{ferry + "legacy", ferry + "bridge", ferry + "migrate", ferry + "gateway", "github.com/libp2p/"}},
		{pkg: "bridge/...", transitive: []string{ferry + "gateway"}},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			own := ferry + strings.TrimSuffix(tt.pkg, "/...")
			if len(tt.transitive) > 0 {
				checkImports(t, own, goList(t, "-deps", "-f", "{{.ImportPath}}", "../"+tt.pkg), tt.transitive)
			}
			if len(tt.direct) > 0 {
				checkImports(t, own, goList(t, "-f", `{{join .Imports "\n"}}`, "../"+tt.pkg), tt.direct)
			}
		})
	}
}

func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, out)
	}
	return strings.Fields(string(out))
}

func checkImports(t *testing.T, own string, imports, forbidden []string) {
	t.Helper()
	if len(imports) == 0 {
		t.Fatal("go list printed no packages")
	}
	for _, imp := range imports {
		if imp == own || strings.HasPrefix(imp, own+"/") {
			continue // the package itself and its sub-packages
		}
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f)) {
				t.Errorf("imports %s (forbidden: %s)", imp, f)
			}
		}
	}
}
