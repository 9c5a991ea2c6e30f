package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// -explain: where a benchmark's CPU went. The harness profiles this
// process over the runs of the benchmark's first comparison (its headline
// figure: the one that carries the ratio target), case and floor apart,
// and attributes each sample to a part of the program (partOf). The
// result goes into the first row (benchRow.CPU) and under the table: what
// limits a figure that misses its target, measured the same way on the
// operator's own machine.

// benchCPU is the -explain result of one benchmark.
type benchCPU struct {
	Case  cpuSide `json:"case"`
	Floor cpuSide `json:"floor"`
}

// cpuSide is where one side's runs spent this process's CPU.
type cpuSide struct {
	// CoresBusy is this process's CPU time over the runs' wall time,
	// from getrusage: 2 on two saturated cores.
	CoresBusy float64 `json:"cores_busy"`
	// CPUPerItem is this process's CPU time per item counted, in µs,
	// when the figure is a rate (its unit ends in "/s"): the CPU of the
	// runs over the sum of each run's figure times its wall time.
	CPUPerItem float64 `json:"cpu_per_item_us,omitempty"`
	// Syscalls is the share of the profiled CPU spent in system calls,
	// whichever part made them.
	Syscalls float64 `json:"syscalls"`
	// Parts are the shares of the profiled CPU by part, largest first;
	// they add up to 1.
	Parts []cpuPart `json:"parts"`
	// Samples is how many profile samples (10 ms of CPU each) the shares
	// are of.
	Samples int64 `json:"samples"`
}

type cpuPart struct {
	Part  string  `json:"part"`
	Share float64 `json:"share"`
	// Syscalls is the share of the profiled CPU this part spent in
	// system calls (a part of Share).
	Syscalls float64 `json:"syscalls"`
}

// explainer collects the profiles of one benchmark's first comparison.
type explainer struct {
	claimed bool // a comparison is being or has been profiled
	sides   [2]sideProfile
}

// sideProfile accumulates one side's runs.
type sideProfile struct {
	byPart  map[string]int64 // CPU nanoseconds by part
	sysPart map[string]int64 // of which in system calls
	items   float64          // the runs' figures times their wall time
	total   int64
	samples int64
	cpu     time.Duration
	wall    time.Duration
}

type explainKey struct{}

func withExplainer(ctx context.Context, ex *explainer) context.Context {
	return context.WithValue(ctx, explainKey{}, ex)
}

// claimExplainer returns the explainer of ctx if this comparison is the
// one to profile (the benchmark's first), else nil.
func claimExplainer(ctx context.Context) *explainer {
	ex, _ := ctx.Value(explainKey{}).(*explainer)
	if ex == nil || ex.claimed {
		return nil
	}
	ex.claimed = true
	return ex
}

// measure runs fn under a CPU profile of this process and adds what it
// spent to side (0 case, 1 floor).
func (ex *explainer) measure(ctx context.Context, side int, fn measureFunc) (float64, error) {
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		return 0, fmt.Errorf("-explain: %w", err)
	}
	cpu0, start := processCPU(), time.Now()
	v, err := fn(ctx)
	pprof.StopCPUProfile()
	sp := &ex.sides[side]
	sp.cpu += processCPU() - cpu0
	wall := time.Since(start)
	sp.wall += wall
	sp.items += v * wall.Seconds()
	if err != nil {
		return v, err
	}
	p, err := profile.Parse(&buf)
	if err != nil {
		return 0, fmt.Errorf("-explain: read the CPU profile: %w", err)
	}
	sp.add(p)
	return v, nil
}

// add attributes p's samples (CPU nanoseconds, the last sample value of a
// Go CPU profile).
func (sp *sideProfile) add(p *profile.Profile) {
	if sp.byPart == nil {
		sp.byPart, sp.sysPart = map[string]int64{}, map[string]int64{}
	}
	if len(p.SampleType) == 0 {
		return
	}
	vi := len(p.SampleType) - 1
	var stack []string
	for _, s := range p.Sample {
		stack = stack[:0]
		for _, loc := range s.Location {
			// A location's lines are innermost first (inlined calls).
			for _, ln := range loc.Line {
				if ln.Function != nil {
					stack = append(stack, ln.Function.Name)
				}
			}
		}
		v, part := s.Value[vi], partOf(stack)
		sp.byPart[part] += v
		if inSyscall(stack) {
			sp.sysPart[part] += v
		}
		sp.total += v
		sp.samples += s.Value[0]
	}
}

// result is sp's shares; rate says whether the runs' figures are rates.
func (sp *sideProfile) result(rate bool) cpuSide {
	out := cpuSide{Samples: sp.samples}
	if sp.wall > 0 {
		out.CoresBusy = sp.cpu.Seconds() / sp.wall.Seconds()
	}
	if rate && sp.items > 0 {
		out.CPUPerItem = micros(sp.cpu) / sp.items
	}
	if sp.total == 0 {
		return out
	}
	for part, v := range sp.byPart {
		p := cpuPart{Part: part, Share: float64(v) / float64(sp.total), Syscalls: float64(sp.sysPart[part]) / float64(sp.total)}
		out.Parts = append(out.Parts, p)
		out.Syscalls += p.Syscalls
	}
	slices.SortFunc(out.Parts, func(a, b cpuPart) int {
		return cmp.Or(cmp.Compare(b.Share, a.Share), cmp.Compare(a.Part, b.Part))
	})
	return out
}

// result is the explanation of the benchmark whose first comparison's
// figures are in unit, or nil if it made none.
func (ex *explainer) result(unit string) *benchCPU {
	if !ex.claimed {
		return nil
	}
	rate := strings.HasSuffix(unit, "/s")
	return &benchCPU{Case: ex.sides[0].result(rate), Floor: ex.sides[1].result(rate)}
}

// Parts of the program a CPU sample is put down to.
const (
	partLoad       = "cloud.Client (client side)"
	partRuntimeGC  = "Go runtime: garbage collector"
	partRuntimeStd = "Go runtime and standard library"
)

// moduleParts names the parts by where a function comes from, first match
// wins. nats.go's functions are named with its path escaped (nats%2ego).
var moduleParts = []struct{ prefix, part string }{
	{"github.com/nats-io/nats-server/", "NATS server (JetStream)"},
	{"github.com/nats-io/nats%2ego", "NATS client (nats.go)"},
	{"github.com/nats-io/nats.go", "NATS client (nats.go)"},
	{"github.com/gorilla/websocket", "WebSocket (gorilla)"},
	{"github.com/libp2p/", "libp2p"},
	{"github.com/flynn/noise", "libp2p"},
	{"github.com/multiformats/", "libp2p"},
	{"github.com/quic-go/", "libp2p"},
	{"github.com/hashicorp/go-memdb", "go-memdb"},
	{"github.com/hashicorp/go-immutable-radix", "go-memdb"},
	{"github.com/prometheus/", "Prometheus client"},
	{"github.com/ferrygw/ferry/cloud/cloudtest", "floor server (cloudtest)"},
	{"github.com/ferrygw/ferry/cloud/cloudwire", "ferry cloudwire (frames)"},
	{"main.", "ferry gateway (agent and bench harness)"},
}

// loadFrames mark a sample as the load side's when any frame of its stack
// is one of them: the benchmark's clients, which run in this process for
// the cloud benchmarks.
var loadFrames = []string{
	"github.com/ferrygw/ferry/cloud.(*Client)",
	"github.com/ferrygw/ferry/cloud.Dial",
}

// partOf names the part a sample's CPU is put down to, from its stack of
// function names, innermost first: the load side when the stack runs
// through a client; else the innermost function that is not Go's runtime
// or standard library, by module (moduleParts; ferry's own packages by
// package, other modules by repository), so that a system call or an
// allocation counts for the code that made it; else the garbage collector,
// or the runtime and standard library.
func partOf(stack []string) string {
	for _, fn := range stack {
		for _, l := range loadFrames {
			if strings.HasPrefix(fn, l) {
				return partLoad
			}
		}
	}
	for _, fn := range stack {
		fn = generated(fn)
		if isStd(fn) {
			continue
		}
		for _, m := range moduleParts {
			if strings.HasPrefix(fn, m.prefix) {
				return m.part
			}
		}
		if rest, ok := strings.CutPrefix(fn, "github.com/ferrygw/ferry/"); ok {
			return "ferry " + pkgPath(rest)
		}
		return repoOf(fn)
	}
	for _, fn := range stack {
		if strings.HasPrefix(fn, "runtime.gcBgMarkWorker") || strings.HasPrefix(fn, "runtime.bgsweep") ||
			strings.HasPrefix(fn, "runtime.bgscavenge") || strings.HasPrefix(fn, "runtime.gcAssistAlloc") {
			return partRuntimeGC
		}
	}
	return partRuntimeStd
}

// generated is the function a compiler-generated one is for: the hash or
// equality of a type ("type:.hash.github.com/a/b.T" -> "github.com/a/b.T").
func generated(fn string) string {
	rest, ok := strings.CutPrefix(fn, "type:.")
	if !ok {
		return fn
	}
	if _, name, ok := strings.Cut(rest, "."); ok {
		return name
	}
	return fn
}

// isStd reports whether fn is in Go's runtime or standard library: its
// package path's first element has no dot (runtime, net/http, ...), and
// it is not package main.
func isStd(fn string) bool {
	if strings.HasPrefix(fn, "main.") {
		return false
	}
	first, _, nested := strings.Cut(fn, "/")
	return !nested || !strings.Contains(first, ".")
}

// pkgPath is the package path at the start of a function name:
// "cloud.(*store).send" -> "cloud", "a/b.F" -> "a/b".
func pkgPath(fn string) string {
	dir, last := "", fn
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		dir, last = fn[:i+1], fn[i+1:]
	}
	name, _, _ := strings.Cut(last, ".")
	return dir + name
}

// repoOf is a function's module repository, as far as its name shows it:
// "github.com/owner/repo/pkg.F" -> "github.com/owner/repo",
// "golang.org/x/crypto/pkg.F" -> "golang.org/x/crypto", and on other
// hosts the first two elements: "go.uber.org/fx/internal.F" ->
// "go.uber.org/fx".
func repoOf(fn string) string {
	parts := strings.Split(pkgPath(fn), "/")
	n := 2
	switch {
	case parts[0] == "github.com" || parts[0] == "gitlab.com" || parts[0] == "bitbucket.org":
		n = 3
	case parts[0] == "golang.org" && len(parts) > 1 && parts[1] == "x":
		n = 3
	}
	return strings.Join(parts[:min(len(parts), n)], "/")
}

// inSyscall reports whether a stack is in a system call.
func inSyscall(stack []string) bool {
	for _, fn := range stack {
		if strings.HasPrefix(fn, "internal/runtime/syscall.") || strings.HasPrefix(fn, "syscall.") {
			return true
		}
	}
	return false
}

// explainLines formats a benchmark's -explain result for the text output.
func explainLines(c *benchCPU) []string {
	side := func(name string, s cpuSide) string {
		var parts []string
		rest := 0.0
		for i, p := range s.Parts {
			if i < 10 && p.Share >= 0.01 {
				sys := ""
				if p.Syscalls >= 0.01 {
					sys = fmt.Sprintf(" (%s in system calls)", percent(p.Syscalls))
				}
				parts = append(parts, fmt.Sprintf("%s %s%s", p.Part, percent(p.Share), sys))
			} else {
				rest += p.Share
			}
		}
		switch {
		case percent(rest) != "0%":
			parts = append(parts, "other "+percent(rest))
		case rest > 0:
			parts = append(parts, "other under 1%")
		}
		per := ""
		if s.CPUPerItem > 0 {
			per = fmt.Sprintf(", %s µs of CPU per item counted", fmtNum(s.CPUPerItem))
		}
		if s.Samples == 0 {
			return fmt.Sprintf("%s runs: %.2f cores busy (this process)%s; no profile samples: the runs were too short to say where the CPU went (10 ms of CPU a sample)",
				name, s.CoresBusy, per)
		}
		return fmt.Sprintf("%s runs: %.2f cores busy (this process)%s; of its profiled CPU (%d samples), system calls %s; by part: %s",
			name, s.CoresBusy, per, s.Samples, percent(s.Syscalls), strings.Join(parts, ", "))
	}
	return []string{side("case", c.Case), side("floor", c.Floor)}
}
