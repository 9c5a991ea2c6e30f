package legacywire

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the wire package free of transports: it must stay usable by
// the domain packages, which import no network stack.
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	forbidden := []string{
		"github.com/libp2p/",
		"github.com/multiformats/",
		"net/http",
		"github.com/prometheus/",
		"github.com/gorilla/websocket",
		"github.com/nats-io/",
		"github.com/ferrygw/ferry/legacy",
		"github.com/ferrygw/ferry/cloud",
		"github.com/ferrygw/ferry/bridge",
		"github.com/ferrygw/ferry/gateway",
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/ferrygw/ferry/legacy/legacywire" {
			continue
		}
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f) {
				t.Errorf("legacywire depends on %s (forbidden: %s)", dep, f)
			}
		}
	}
}
