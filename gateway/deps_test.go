package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The architecture is a test (DESIGN.md, "Dependency direction"): the domain
// imports no transport, and the two networks never import each other.
func TestDeps(t *testing.T) {
	transports := []string{"github.com/libp2p/", "github.com/gorilla/websocket", "net/http", "github.com/prometheus/"}
	tests := []struct {
		pkg string
		// transitive: forbidden anywhere in the package's dependency graph.
		transitive []string
		// direct: forbidden in the package's own imports. The JetStream
		// adapter may reach nats.go, which links net/http for its own
		// WebSocket transport, but must not itself import a transport.
		direct []string
	}{
		{pkg: "./migrate", transitive: append(transports, "github.com/nats-io/", "github.com/ferrygw/ferry/legacy", "github.com/ferrygw/ferry/cloud", "github.com/ferrygw/ferry/bridge")},
		{pkg: "./migrate/migratestore", direct: transports, transitive: []string{"github.com/libp2p/", "github.com/gorilla/websocket", "github.com/prometheus/", "github.com/ferrygw/ferry/legacy", "github.com/ferrygw/ferry/cloud"}},
		{pkg: "./legacy/legacywire", transitive: append(transports, "github.com/ferrygw/ferry/cloud")},
		{pkg: "./cloud/cloudwire", transitive: append(transports, "github.com/ferrygw/ferry/legacy")},
		{pkg: "./legacy/...", transitive: []string{"github.com/ferrygw/ferry/cloud", "github.com/ferrygw/ferry/bridge"}},
		{pkg: "./cloud/...", transitive: []string{"github.com/ferrygw/ferry/legacy", "github.com/ferrygw/ferry/bridge", "github.com/libp2p/"}},
		{pkg: "./bridge/...", transitive: []string{"github.com/ferrygw/ferry/gateway"}},
	}
	for _, tt := range tests {
		t.Run(strings.TrimPrefix(tt.pkg, "./"), func(t *testing.T) {
			if len(tt.transitive) > 0 {
				checkImports(t, goList(t, "-deps", "-f", "{{.ImportPath}}", "../"+tt.pkg), tt.transitive)
			}
			if len(tt.direct) > 0 {
				checkImports(t, goList(t, "-f", `{{join .Imports "\n"}}`, "../"+tt.pkg), tt.direct)
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

func checkImports(t *testing.T, imports, forbidden []string) {
	t.Helper()
	if len(imports) == 0 {
		t.Fatal("go list printed no packages")
	}
	for _, imp := range imports {
		for _, f := range forbidden {
			if imp == f || strings.HasPrefix(imp, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(imp, f)) {
				t.Errorf("imports %s (forbidden: %s)", imp, f)
			}
		}
	}
}
