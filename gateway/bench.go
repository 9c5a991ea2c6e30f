package main

// The gateway bench subcommand: a suite that measures each hot path against
// a raw floor measured in the same run, in turns (case, floor, case,
// floor...), so that a ratio read off one run on a shared machine means
// something even when the absolutes drift by a third.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/pprof"
	"slices"
	"text/tabwriter"
	"time"
)

// benchOptions are the knobs every benchmark reads; zero values mean each
// benchmark's default.
type benchOptions struct {
	Runs     int           // runs of the case and of the floor each; at least 3
	Duration time.Duration // length of one timed run
	Conns    int           // concurrent connections of a throughput run
	N        int           // idle connections of cloud-idle, clients of reconnect, ...
	NSet     bool          // -n was given (cloud-idle's and reconnect's defaults are not N's)
	Procs    int           // client processes of cloud-idle and reconnect
	Smoke    bool          // tiny sizes: checks the harness, measures nothing
	Pin      benchPin      // where the server and load sides run (bench_pin.go)
	GC       *gcTuner      // the collector's setting, as the agent's (gctune.go); nil: untouched
}

// benchTarget is what a row must reach. Of says which figure it applies to:
// "ratio" (case median / floor median), "case" (the case median itself,
// for absolute targets such as bytes per connection) or "difference" (case
// median minus floor median, read as 0 when negative, for an added cost
// such as the bridge's latency). Op is ">=" or "<=".
type benchTarget struct {
	Of    string  `json:"of"`
	Op    string  `json:"op"`
	Value float64 `json:"value"`
}

func (t *benchTarget) String() string {
	if t == nil {
		return "-"
	}
	return fmt.Sprintf("%s %s %s", t.Of, t.Op, fmtNum(t.Value))
}

// benchRow is one measured figure of a benchmark: the case and its floor
// (or comparison case), every run of each and their medians.
type benchRow struct {
	Name    string               `json:"name"`
	Measure string               `json:"measure"`
	Case    string               `json:"case"`
	Floor   string               `json:"floor"`
	Unit    string               `json:"unit"`
	Runs    benchPair[[]float64] `json:"runs"`
	Medians benchPair[float64]   `json:"medians"`
	Ratio   float64              `json:"ratio"`
	Target  *benchTarget         `json:"target"` // nil: for reference only
	Met     *bool                `json:"met"`    // nil when there is no target
	Notes   []string             `json:"notes,omitempty"`
	// CPU is where the benchmark's first comparison spent this process's
	// CPU (-explain; the benchmark's first row only).
	CPU *benchCPU `json:"cpu,omitempty"`
}

type benchPair[T any] struct {
	Case  T `json:"case"`
	Floor T `json:"floor"`
}

// benchmark is one entry of the suite.
type benchmark struct {
	name string
	doc  string
	run  func(ctx context.Context, o benchOptions) ([]benchRow, error)
}

// benchmarks is the suite, in the order "all" runs it.
var benchmarks = []benchmark{
	{"floor", "raw TCP vs raw WebSocket echo and one-way writes on loopback; one fsync", benchFloor},
	{"cloud-rtt", "send→ack round trips/s through cloud.Service vs a raw gorilla/websocket echo", benchCloudRTT},
	{"cloud-fanout", "deliveries/s to the devices of a group vs a raw WebSocket broadcast, with their p99", benchCloudFanout},
	{"cloud-idle", "memory and goroutines per idle cloud session vs a bare gorilla/websocket server", benchCloudIdle},
	{"bridge", "legacy→cloud bridged messages/s vs cloud→cloud direct; added latency at half load", benchBridge},
	{"bridge-intake", "messages/s the bridge takes from legacy peers vs a bare libp2p stream sink", benchBridgeIntake},
	{"wave", "durable transitions/s of a 100,000-user step out of 1,000,000 vs bare go-memdb; plan over 1,000,000", benchWave},
	{"sim", "memory per simulated legacy client vs a bare libp2p host", benchSim},
	{"reconnect", "resyncs/s of 10,000 cloud clients after a restart of the cloud service vs the same clients and a bare WebSocket server", benchReconnect},
}

const benchUsage = `Usage: gateway bench NAME|all [-format text|json] [-runs K] [-duration D] [-conns C] [-n N] [-procs P] [-pin] [-smoke] [-cpuprofile FILE] [-explain]

Each benchmark runs its case and its floor in turns, -runs times each, in
the same process, and prints the medians, the ratio case/floor, the target
and whether it is met. Benchmarks:
`

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == idleDialerArg {
		return idleDialer(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == reconnectDialerArg {
		return reconnectDialer(ctx, args[1:], stdout)
	}
	if len(args) > 0 && args[0] == bridgeLoadArg {
		return bridgeLoad(ctx, os.Stdin, stdout)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		for _, b := range benchmarks {
			fmt.Fprintf(stderr, "  %-11s %s\n", b.name, b.doc)
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
	}
	format := fs.String("format", "text", "output format: text or json")
	var o benchOptions
	fs.IntVar(&o.Runs, "runs", 3, "runs of the case and of the floor each (at least 3)")
	fs.DurationVar(&o.Duration, "duration", 2*time.Second, "length of one timed run")
	fs.IntVar(&o.Conns, "conns", 8, "concurrent connections in throughput runs")
	fs.IntVar(&o.N, "n", 1000, "idle connections in cloud-idle (default 10000); group members in cloud-fanout (at most 200); clients in sim (at most 2000); clients in reconnect (default 10000)")
	fs.IntVar(&o.Procs, "procs", 0, "load processes: for cloud-idle and reconnect, 0 means one per 2,500 connections; for bridge and bridge-intake, the sender pairs are split over them, 0 means one")
	fs.BoolVar(&o.Smoke, "smoke", false, "tiny sizes, to check that the harness works; the figures mean nothing")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	explain := fs.Bool("explain", false, "profile each benchmark's first comparison, case and floor apart, and print where this process's CPU went, by part of the program (not with -cpuprofile)")
	gcPercent := fs.Int("gc-percent", 0, "the garbage collector's GOGC, as agent -gc-percent (0: Go's default); $GOGC takes precedence")
	gcBulk := fs.Int("gc-percent-bulk", defaultBulkGCPercent, "the GOGC while users move in bulk, as agent -gc-percent-bulk (0: not raised)")
	pin := fs.Bool("pin", false, "pin this process (the server side) to CPU 0 and load processes to CPU 1 with taskset, when it is installed and 2 CPUs are available")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	fs.Visit(func(f *flag.Flag) { o.NSet = o.NSet || f.Name == "n" })
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	if *format != "text" && *format != "json" {
		return fmt.Errorf("%w: -format must be text or json", errUsage)
	}
	if *explain && *cpuProfile != "" {
		return fmt.Errorf("%w: -explain and -cpuprofile both take the CPU profile; give one", errUsage)
	}
	if o.Runs < 3 {
		return fmt.Errorf("%w: -runs must be at least 3", errUsage)
	}
	if o.Conns < 1 || o.N < 1 || o.Duration <= 0 {
		return fmt.Errorf("%w: -conns, -n and -duration must be positive", errUsage)
	}
	if o.Smoke {
		o.Duration = min(o.Duration, 50*time.Millisecond)
		o.Conns = min(o.Conns, 2)
		o.N = min(o.N, 20)
	}
	var selected []benchmark
	for _, b := range benchmarks {
		if pos[0] == "all" || pos[0] == b.name {
			selected = append(selected, b)
		}
	}
	if len(selected) == 0 {
		return fmt.Errorf("%w: unknown benchmark %q (run gateway bench -h)", errUsage, pos[0])
	}
	o.Pin = newBenchPin(*pin)
	gc := tuneGC(*gcPercent, *gcBulk)
	o.GC = gc
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var rows []benchRow
	for _, b := range selected {
		fmt.Fprintf(stderr, "bench %s...\n", b.name)
		bctx, ex := ctx, (*explainer)(nil)
		if *explain {
			ex = &explainer{}
			bctx = withExplainer(ctx, ex)
		}
		rs, err := b.run(bctx, o)
		if err != nil {
			return fmt.Errorf("bench %s: %w", b.name, err)
		}
		if ex != nil && len(rs) > 0 {
			rs[0].CPU = ex.result(rs[0].Unit)
		}
		rows = append(rows, rs...)
	}
	rows = o.Pin.note(rows, *format == "json")
	if *format == "json" {
		for i := range rows {
			rows[i].Notes = append(rows[i].Notes, "gc: "+gc.String())
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	if err := printBenchTable(stdout, rows); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "pinning: %s\ngc: %s\n", o.Pin, gc)
	return err
}

func printBenchTable(w io.Writer, rows []benchRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMEASURE\tCASE\tFLOOR\tUNIT\tCASE MEDIAN\tFLOOR MEDIAN\tRATIO\tTARGET\tMET")
	var notes []string
	for _, r := range rows {
		met := "-"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Measure, r.Case, r.Floor, r.Unit,
			fmtNum(r.Medians.Case), fmtNum(r.Medians.Floor), fmtNum(r.Ratio), r.Target, met)
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("%s/%s: %s", r.Name, r.Measure, n))
		}
		if r.CPU != nil {
			for _, l := range explainLines(r.CPU) {
				notes = append(notes, fmt.Sprintf("%s/%s: cpu: %s", r.Name, r.Measure, l))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(w, "note:", n)
	}
	return nil
}

func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v) || math.IsInf(v, 0):
		return "-"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// measureFunc runs one timed run and returns its figure.
type measureFunc func(ctx context.Context) (float64, error)

// alternate runs c and f in turns, runs times each, starting with the case,
// so that drift of a shared machine hits both alike.
func alternate(ctx context.Context, runs int, c, f measureFunc) (cs, fs []float64, err error) {
	if ex := claimExplainer(ctx); ex != nil {
		caseFn, floorFn := c, f
		c = func(ctx context.Context) (float64, error) { return ex.measure(ctx, 0, caseFn) }
		f = func(ctx context.Context) (float64, error) { return ex.measure(ctx, 1, floorFn) }
	}
	for range runs {
		for _, m := range []struct {
			fn  measureFunc
			out *[]float64
		}{{c, &cs}, {f, &fs}} {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			v, err := m.fn(ctx)
			if err != nil {
				return nil, nil, err
			}
			*m.out = append(*m.out, v)
		}
	}
	return cs, fs, nil
}

// newRow fills in the medians, the ratio and whether the target is met.
func newRow(name, measure, caseName, floorName, unit string, cs, fs []float64, target *benchTarget, notes ...string) benchRow {
	r := benchRow{Name: name, Measure: measure, Case: caseName, Floor: floorName, Unit: unit,
		Runs: benchPair[[]float64]{cs, fs}, Target: target, Notes: notes}
	r.Medians = benchPair[float64]{median(cs), median(fs)}
	r.Ratio = r.Medians.Case / r.Medians.Floor
	if r.Medians.Floor == 0 {
		r.Ratio = math.NaN()
	}
	if target != nil {
		v := r.Ratio
		switch target.Of {
		case "case":
			v = r.Medians.Case
		case "difference":
			v = max(0, r.Medians.Case-r.Medians.Floor)
		}
		met := v <= target.Value
		if target.Op == ">=" {
			met = v >= target.Value
		}
		r.Met = &met
	}
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// MarshalJSON writes NaN and infinities, which JSON lacks, as null.
func (r benchRow) MarshalJSON() ([]byte, error) {
	type plain benchRow
	p := plain(r)
	var ratio *float64
	if !math.IsNaN(r.Ratio) && !math.IsInf(r.Ratio, 0) {
		ratio = &p.Ratio
	}
	return json.Marshal(struct {
		plain
		Ratio *float64 `json:"ratio"`
	}{p, ratio})
}
