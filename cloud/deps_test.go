package cloud

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps enforces the dependency direction: the cloud side never imports
// the legacy overlay, the bridge, the migration domain or the gateway.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := []string{
		"github.com/ferrygw/ferry/legacy",
		"github.com/ferrygw/ferry/bridge",
		"github.com/ferrygw/ferry/migrate",
		"github.com/ferrygw/ferry/gateway",
		"github.com/libp2p/",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("cloud depends on %s", dep)
			}
		}
	}
}
