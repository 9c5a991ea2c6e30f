package main

import (
	"math"
	"runtime/debug"
	"strings"
	"testing"
)

// restoreGC puts the collector's setting back after a test changes it.
func restoreGC(t *testing.T) {
	t.Helper()
	percent, limit := currentGCPercent(), debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
}

func TestTuneGC(t *testing.T) {
	restoreGC(t)
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	debug.SetGCPercent(100)
	g := tuneGC(150, 300)
	if g.Percent != 150 || g.PercentBy != "flag" || g.Bulk != 300 || currentGCPercent() != 150 {
		t.Errorf("tuneGC(150, 300) = %v, runtime percent %d; want 150 from the flag, 300 in bulk", g, currentGCPercent())
	}
	if _, _, ok := usableMemory(); ok {
		if got := debug.SetMemoryLimit(-1); got != g.Limit || g.Limit <= 0 || g.Limit == math.MaxInt64 || !strings.HasPrefix(g.LimitBy, "3/4 of ") {
			t.Errorf("memory limit %d, setting %v; want 3/4 of the usable memory", got, g)
		}
	}
	if s := g.String(); !strings.Contains(s, "GOGC=150 (flag), 300 while users move in bulk") {
		t.Errorf("String() = %q", s)
	}

	// Bulk moves raise the percent; the last one to end puts it back,
	// and ending one twice counts once.
	end1 := g.bulkMove()
	end2 := g.bulkMove()
	if p := currentGCPercent(); p != 300 {
		t.Errorf("during two bulk moves: percent %d, want 300", p)
	}
	end1()
	end1()
	if p := currentGCPercent(); p != 300 {
		t.Errorf("one bulk move still running: percent %d, want 300", p)
	}
	end2()
	if p := currentGCPercent(); p != 150 {
		t.Errorf("after the bulk moves: percent %d, want 150", p)
	}

	// The environment takes precedence over the flags: nothing is raised.
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOGC", "100")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(100)
	g = tuneGC(400, 300)
	g.bulkMove()()
	if g.PercentBy != "GOGC" || g.Bulk != 0 || currentGCPercent() != 100 || g.LimitBy != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Errorf("with $GOGC and $GOMEMLIMIT set: %v, runtime percent %d; want both left alone", g, currentGCPercent())
	}

	// 0 leaves the runtime's percent, and raises nothing.
	t.Setenv("GOGC", "")
	if g = tuneGC(0, 0); g.Percent != 100 || g.PercentBy != "default" || g.Bulk != 0 || g.bulkHook() == nil {
		t.Errorf("tuneGC(0, 0) = %v; want the runtime's 100, not raised", g)
	}
	if (*gcTuner)(nil).bulkHook() != nil {
		t.Error("a nil tuner gives a bulk hook")
	}
}

func TestParseMemory(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"max\n", 0, false},
		{"4294967296\n", 4 << 30, true},
		{"0\n", 0, false},
		{"-1", 0, false},
		{"", 0, false},
	} {
		if got, ok := parseCgroupMemoryMax([]byte(c.in)); got != c.want || ok != c.ok {
			t.Errorf("parseCgroupMemoryMax(%q) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	meminfo := "MemTotal:       24576000 kB\nMemFree:        1000 kB\n"
	if got, ok := parseMemTotal([]byte(meminfo)); !ok || got != 24576000<<10 {
		t.Errorf("parseMemTotal = %d, %v; want %d", got, ok, uint64(24576000)<<10)
	}
	for _, bad := range []string{"", "MemFree: 10 kB\n", "MemTotal: x kB\n", "MemTotal: 10 MB\n", "MemTotal: 0 kB\n"} {
		if got, ok := parseMemTotal([]byte(bad)); ok {
			t.Errorf("parseMemTotal(%q) = %d, true; want not ok", bad, got)
		}
	}
}

// FuzzParseMemory feeds the two memory parsers any bytes: they never panic
// and never report a zero size as ok.
//
//	go test ./gateway/ -run '^$' -fuzz FuzzParseMemory -fuzztime 30s
func FuzzParseMemory(f *testing.F) {
	f.Add([]byte("max\n"))
	f.Add([]byte("MemTotal:       24576000 kB\n"))
	f.Add([]byte("123"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if n, ok := parseCgroupMemoryMax(b); ok && n == 0 {
			t.Errorf("parseCgroupMemoryMax(%q) = 0, true", b)
		}
		if n, ok := parseMemTotal(b); ok && n == 0 {
			t.Errorf("parseMemTotal(%q) = 0, true", b)
		}
	})
}
