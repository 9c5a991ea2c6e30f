package migratestore

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps fails when migratestore imports, even transitively, a transport,
// a metrics library or another part of Ferry than the migrate domain. net/http
// is checked only as a direct import: the NATS client needs it.
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
		"github.com/prometheus/",
		"github.com/ferrygw/ferry/bridge",
		"github.com/ferrygw/ferry/legacy",
		"github.com/ferrygw/ferry/cloud",
		"github.com/ferrygw/ferry/gateway",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if strings.HasPrefix(dep, f) {
				t.Errorf("migratestore depends on %s", dep)
			}
		}
	}

	out, err = exec.Command(gobin, "list", "-f", `{{join .Imports "\n"}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list imports: %v", err)
	}
	for _, imp := range strings.Fields(string(out)) {
		if imp == "net/http" {
			t.Errorf("migratestore imports net/http")
		}
	}
}
