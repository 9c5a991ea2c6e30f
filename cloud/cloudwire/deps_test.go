package cloudwire

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the wire package free of transports: it is shared by the
// service, the clients and the bridge, and must stay pure.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list unavailable: %v", err)
	}
	forbidden := []string{
		"net/http", "net", "github.com/gorilla/", "github.com/nats-io/",
		"github.com/prometheus/", "github.com/libp2p/",
		"github.com/ferrygw/ferry/",
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/ferrygw/ferry/cloud/cloudwire" {
			continue
		}
		for _, f := range forbidden {
			if dep == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
				t.Errorf("cloudwire depends on %s", dep)
			}
		}
	}
}
