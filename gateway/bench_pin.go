package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
)

// CPUs of a pinned bench: the bench process, which runs the server side
// (and whatever load a benchmark runs in-process), and the load processes
// it starts.
const (
	benchServerCPU = 0
	benchLoadCPU   = 1
)

// benchPin says whether and where gateway bench -pin pinned its sides. The
// zero value is "not pinned".
type benchPin struct {
	taskset string // taskset's path when pinned
	why     string // why not pinned, when -pin was asked for
}

// newBenchPin pins this process to benchServerCPU with taskset when want
// is set, taskset is installed and at least 2 CPUs are available; what it
// could not do is said in the result's String.
func newBenchPin(want bool) benchPin {
	if !want {
		return benchPin{}
	}
	if n := runtime.NumCPU(); n < 2 {
		return benchPin{why: fmt.Sprintf("%d CPU available", n)}
	}
	path, err := exec.LookPath("taskset")
	if err != nil {
		return benchPin{why: "taskset not installed"}
	}
	// -a: every thread of the process; threads started later inherit it.
	out, err := exec.Command(path, "-a", "-p", "-c", strconv.Itoa(benchServerCPU), strconv.Itoa(os.Getpid())).CombinedOutput() // #nosec G204 -- taskset from PATH, numeric arguments
	if err != nil {
		return benchPin{why: fmt.Sprintf("taskset failed: %v: %s", err, strings.TrimSpace(string(out)))}
	}
	p := benchPin{taskset: path}
	loadPin.Store(&p)
	return p
}

// loadPin is the pinning of the running bench, set only once pinned, for
// startLoadProcess (loadCommand); nil means not pinned.
var loadPin atomic.Pointer[benchPin]

// pinLoad is loadCommand of the running bench's pinning.
func pinLoad(cmd *exec.Cmd) *exec.Cmd {
	if p := loadPin.Load(); p != nil {
		return p.loadCommand(cmd)
	}
	return cmd
}

func (p benchPin) pinned() bool { return p.taskset != "" }

func (p benchPin) String() string {
	switch {
	case p.pinned():
		return fmt.Sprintf("pinned with taskset: the bench process (server side, and load that runs in-process) on CPU %d, load processes on CPU %d", benchServerCPU, benchLoadCPU)
	case p.why != "":
		return "not pinned (" + p.why + ")"
	}
	return "not pinned"
}

// loadCommand makes cmd, a load process about to start, run on
// benchLoadCPU when the bench is pinned.
func (p benchPin) loadCommand(cmd *exec.Cmd) *exec.Cmd {
	if p.pinned() {
		cmd.Args = append([]string{"taskset", "-c", strconv.Itoa(benchLoadCPU)}, append([]string{cmd.Path}, cmd.Args[1:]...)...)
		cmd.Path = p.taskset
	}
	return cmd
}

// note says how the run was pinned: benchmarks write "not pinned" in
// their notes, which a pinned run replaces with what it did; with all set
// (JSON, which has no line of its own for it) every row also gets p's
// String as a note.
func (p benchPin) note(rows []benchRow, all bool) []benchRow {
	for i := range rows {
		notes := make([]string, 0, len(rows[i].Notes)+1)
		for _, n := range rows[i].Notes {
			if p.pinned() {
				n = strings.ReplaceAll(n, "not pinned", "pinned (server and in-process load on CPU 0, load processes on CPU 1)")
			}
			notes = append(notes, n)
		}
		if all {
			notes = append(notes, "pinning: "+p.String())
		}
		rows[i].Notes = notes
	}
	return rows
}
