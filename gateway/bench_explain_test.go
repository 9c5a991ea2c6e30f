package main

import (
	"testing"

	"github.com/google/pprof/profile"
)

// TestPartOf pins how a sample's stack (innermost first) is put down to a
// part of the program.
func TestPartOf(t *testing.T) {
	for _, c := range []struct {
		name  string
		stack []string
		want  string
	}{
		{"a system call counts for the module that made it",
			[]string{"internal/runtime/syscall/linux.Syscall6", "syscall.write", "net.(*conn).Write", "github.com/nats-io/nats-server/v2/server.(*client).flushOutbound", "runtime.goexit"},
			"NATS server (JetStream)"},
		{"nats.go's escaped path", []string{"runtime.mallocgc", "github.com/nats-io/nats%2ego.(*Conn).parse"}, "NATS client (nats.go)"},
		{"ferry's own packages by package", []string{"encoding/json.Marshal", "github.com/ferrygw/ferry/cloud.(*store).append", "github.com/ferrygw/ferry/cloud.(*session).handleSend"}, "ferry cloud"},
		{"nested ferry package", []string{"github.com/ferrygw/ferry/migrate/migratestore.(*batch).publish"}, "ferry migrate/migratestore"},
		{"cloudwire has its own part", []string{"github.com/ferrygw/ferry/cloud/cloudwire.Decode", "github.com/ferrygw/ferry/cloud.(*session).handleFrame"}, "ferry cloudwire (frames)"},
		{"the floor's server", []string{"github.com/gorilla/websocket.(*Conn).WritePreparedMessage", "github.com/ferrygw/ferry/cloud/cloudtest.(*Broadcast).send"}, "WebSocket (gorilla)"},
		{"a client anywhere on the stack is the load side",
			[]string{"syscall.read", "github.com/gorilla/websocket.(*Conn).NextReader", "github.com/ferrygw/ferry/cloud.(*Client).readLoop"}, partLoad},
		{"package main", []string{"runtime.chansend", "main.openLoop.func1"}, "ferry gateway (agent and bench harness)"},
		{"another module by repository", []string{"github.com/libp2p/go-yamux/v5.(*Session).send"}, "libp2p"},
		{"an unnamed module", []string{"golang.org/x/crypto/chacha20poly1305.(*chacha20poly1305).seal"}, "golang.org/x/crypto"},
		{"another host's module", []string{"go.uber.org/fx/internal/lifecycle.(*Lifecycle).Start"}, "go.uber.org/fx"},
		{"a compiler-generated hash counts for its type", []string{"runtime.memhash", "type:.hash.github.com/hashicorp/go-memdb.indexEntry"}, "go-memdb"},
		{"the collector", []string{"runtime.scanobject", "runtime.gcDrain", "runtime.gcBgMarkWorker"}, partRuntimeGC},
		{"runtime alone", []string{"runtime.findRunnable", "runtime.schedule", "runtime.mcall"}, partRuntimeStd},
		{"empty", nil, partRuntimeStd},
	} {
		if got := partOf(c.stack); got != c.want {
			t.Errorf("%s: partOf(%q) = %q, want %q", c.name, c.stack, got, c.want)
		}
	}
}

// TestSideProfileShares: a side's shares add up to 1, largest first, with
// the system calls of each part, from a profile built here.
func TestSideProfileShares(t *testing.T) {
	fn := func(id uint64, name string) *profile.Function { return &profile.Function{ID: id, Name: name} }
	sys, nats, cloud := fn(1, "syscall.write"), fn(2, "github.com/nats-io/nats-server/v2/server.(*stream).internalLoop"), fn(3, "github.com/ferrygw/ferry/cloud.(*store).send")
	loc := func(id uint64, f ...*profile.Function) *profile.Location {
		l := &profile.Location{ID: id}
		for _, f := range f {
			l.Line = append(l.Line, profile.Line{Function: f})
		}
		return l
	}
	lSys, lNats, lCloud := loc(1, sys), loc(2, nats), loc(3, cloud)
	p := &profile.Profile{
		SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}},
		Sample: []*profile.Sample{
			{Location: []*profile.Location{lSys, lNats}, Value: []int64{3, 30}},
			{Location: []*profile.Location{lNats}, Value: []int64{3, 30}},
			{Location: []*profile.Location{lCloud}, Value: []int64{2, 20}},
			{Location: []*profile.Location{loc(4, sys, cloud)}, Value: []int64{2, 20}}, // inlined: one location, two lines
		},
	}
	var sp sideProfile
	sp.add(p)
	r := sp.result(false)
	if r.Samples != 10 || r.CPUPerItem != 0 {
		t.Fatalf("samples %d, cpu per item %v: want 10 and none (not a rate)", r.Samples, r.CPUPerItem)
	}
	want := []cpuPart{{"NATS server (JetStream)", 0.6, 0.3}, {"ferry cloud", 0.4, 0.2}}
	if len(r.Parts) != len(want) {
		t.Fatalf("parts %+v, want %+v", r.Parts, want)
	}
	for i, w := range want {
		g := r.Parts[i]
		if g.Part != w.Part || !near(g.Share, w.Share) || !near(g.Syscalls, w.Syscalls) {
			t.Errorf("part %d: %+v, want %+v", i, g, w)
		}
	}
	if !near(r.Syscalls, 0.5) {
		t.Errorf("system calls %v, want 0.5", r.Syscalls)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

// TestExplainLines: a side with no samples says so instead of listing no
// parts; the others list their parts, the small ones as other.
func TestExplainLines(t *testing.T) {
	lines := explainLines(&benchCPU{
		Case: cpuSide{CoresBusy: 1.5, CPUPerItem: 120, Syscalls: 0.2, Samples: 300, Parts: []cpuPart{
			{"NATS server (JetStream)", 0.6, 0.1}, {"ferry cloud", 0.395, 0.1}, {"libp2p", 0.005, 0}}},
		Floor: cpuSide{CoresBusy: 0.1},
	})
	want := []string{
		"case runs: 1.50 cores busy (this process), 120 µs of CPU per item counted; of its profiled CPU (300 samples), system calls 20%; by part: NATS server (JetStream) 60% (10% in system calls), ferry cloud 40% (10% in system calls), other under 1%",
		"floor runs: 0.10 cores busy (this process); no profile samples: the runs were too short to say where the CPU went (10 ms of CPU a sample)",
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d: %q", len(lines), len(want), lines)
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i, lines[i], want[i])
		}
	}
}
