package main

import (
	"bytes"
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestBenchSaysNotPinned: without -pin the text output ends by saying the
// run was not pinned. (-pin itself is not run here: it would pin the test
// process to one CPU.)
func TestBenchSaysNotPinned(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"bench", "floor", "-smoke"}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "\npinning: not pinned\n") {
		t.Fatalf("output does not say it was not pinned:\n%s", out.String())
	}
}

// TestBenchPinLoadCommand: a pinned bench starts its load processes under
// taskset on the load CPU, with their own arguments unchanged.
func TestBenchPinLoadCommand(t *testing.T) {
	p := benchPin{taskset: "/usr/bin/taskset"}
	cmd := p.loadCommand(exec.Command("/bin/gateway", "bench", "x", "-n", "3"))
	if cmd.Path != "/usr/bin/taskset" || !slices.Equal(cmd.Args, []string{"taskset", "-c", "1", "/bin/gateway", "bench", "x", "-n", "3"}) {
		t.Fatalf("pinned load command %s %q", cmd.Path, cmd.Args)
	}
	if got := (benchPin{}).loadCommand(exec.Command("/bin/gateway", "bench")); got.Path != "/bin/gateway" {
		t.Fatalf("unpinned load command rewritten: %s %q", got.Path, got.Args)
	}
	if s := (benchPin{why: "taskset not installed"}).String(); s != "not pinned (taskset not installed)" {
		t.Fatalf("String = %q", s)
	}
}
