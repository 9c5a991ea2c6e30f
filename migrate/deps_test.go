package migrate

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps fails when migrate imports, even transitively, a transport or the
// engine: the domain must stay usable without them (DESIGN.md).
func TestDeps(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go command not found")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/libp2p/",
		"github.com/gorilla/websocket",
		"net/http",
		"github.com/prometheus/",
		"github.com/nats-io/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("migrate depends on %s", dep)
			}
		}
	}
}
