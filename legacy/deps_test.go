package legacy

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps enforces the dependency direction: the overlay never imports the
// cloud side, nor the packages that compose both.
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
		"github.com/ferrygw/ferry/cloud",
		"github.com/ferrygw/ferry/bridge",
		"github.com/ferrygw/ferry/gateway",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("legacy depends on %s (forbidden: %s)", dep, f)
			}
		}
	}
}
