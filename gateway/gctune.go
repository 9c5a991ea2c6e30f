package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
)

// The garbage collector's setting for the agent (and for `gateway bench`,
// which measures the agent's paths).
//
// The migration State keeps every user's record in go-memdb, about 1 KB a
// user: a gigabyte of live, pointer-dense heap at a million users. Go's
// default (GOGC=100) starts a collection each time the heap has grown by
// as much as is live, and every collection marks all of it. A campaign
// step that moves users in bulk allocates fast (go-memdb copies the path
// to every record it changes), so at the default the collector took about
// a quarter of the step's CPU: GOGC=300 needed a quarter less CPU per
// transition (`GOGC=100` against `GOGC=300`, in turns, of `go test
// ./migrate/migratestore/ -run '^$' -bench StepTransitions`, its
// cpu-µs/transition; README, Performance).
//
// A higher percent for good costs memory everywhere else, though: an idle
// cloud session's heap grew from about 8.6 to 10.9 KB in `gateway bench
// cloud-idle -n 10000` at 300. So the agent keeps Go's default (or
// -gc-percent) and raises the percent to defaultBulkGCPercent only while
// users move in bulk (migratestore.Config.Bulk), under a soft memory limit
// of three quarters of the memory it may use (its cgroup's limit, else the
// machine's) so that a raised percent never runs it out of memory. GOGC
// and GOMEMLIMIT in the environment take precedence, as the Go runtime
// documents them: with GOGC set, nothing is raised.
const defaultBulkGCPercent = 300

// gcMemoryShare is the share of the usable memory the soft limit allows.
const gcMemoryShare = 0.75

// gcTuner applies the agent's collector setting and raises the percent
// while at least one bulk move runs.
type gcTuner struct {
	Percent   int    // the GOGC in force outside bulk moves
	Bulk      int    // the GOGC while users move in bulk; 0: not raised
	Limit     int64  // the soft memory limit in force, bytes
	PercentBy string // "flag", "GOGC" or "default"
	LimitBy   string // "3/4 of the cgroup limit", "3/4 of MemTotal", "GOMEMLIMIT" or "none"

	mu    sync.Mutex
	moves int // bulk moves running
}

func (g *gcTuner) String() string {
	limit := "none"
	if g.LimitBy != "none" {
		limit = fmt.Sprintf("%d MiB (%s)", g.Limit>>20, g.LimitBy)
	}
	bulk := "not raised for bulk moves"
	if g.Bulk > 0 {
		bulk = fmt.Sprintf("%d while users move in bulk", g.Bulk)
	}
	return fmt.Sprintf("GOGC=%d (%s), %s; memory limit %s", g.Percent, g.PercentBy, bulk, limit)
}

// tuneGC sets the collector's percent to percent (0 or less: leave the
// runtime's, which is Go's 100) and prepares bulk, the percent while users
// move in bulk (0 or less: not raised), unless $GOGC is set; and the soft
// memory limit to gcMemoryShare of the usable memory unless $GOMEMLIMIT is
// set or the usable memory cannot be read.
func tuneGC(percent, bulk int) *gcTuner {
	g := &gcTuner{}
	switch {
	case os.Getenv("GOGC") != "":
		g.Percent, g.PercentBy = currentGCPercent(), "GOGC"
		bulk = 0
	case percent > 0:
		debug.SetGCPercent(percent)
		g.Percent, g.PercentBy = percent, "flag"
	default:
		g.Percent, g.PercentBy = currentGCPercent(), "default"
	}
	if bulk > g.Percent {
		g.Bulk = bulk
	}
	g.Limit, g.LimitBy = debug.SetMemoryLimit(-1), "none"
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		g.LimitBy = "GOMEMLIMIT"
	default:
		if mem, from, ok := usableMemory(); ok {
			g.Limit = int64(float64(mem) * gcMemoryShare)
			debug.SetMemoryLimit(g.Limit)
			g.LimitBy = "3/4 of " + from
		}
	}
	return g
}

// bulkMove raises the percent for a bulk move until the returned function
// is called (migratestore.Config.Bulk); the last move to end puts the
// percent back.
func (g *gcTuner) bulkMove() (end func()) {
	if g.Bulk == 0 {
		return func() {}
	}
	g.mu.Lock()
	if g.moves++; g.moves == 1 {
		debug.SetGCPercent(g.Bulk)
	}
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.moves--; g.moves == 0 {
				debug.SetGCPercent(g.Percent)
			}
		})
	}
}

// bulkHook is g's bulkMove for migratestore.Config.Bulk; nil when g is.
func (g *gcTuner) bulkHook() func() (end func()) {
	if g == nil {
		return nil
	}
	return g.bulkMove
}

// currentGCPercent reads the percent in force (SetGCPercent returns the
// previous one; setting it back changes nothing).
func currentGCPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// usableMemory is the memory the process may use: its cgroup v2 limit when
// it has one, else the machine's physical memory.
func usableMemory() (n uint64, from string, ok bool) {
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, ok := parseCgroupMemoryMax(b); ok {
			return n, "the cgroup limit", true
		}
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", false
	}
	n, ok = parseMemTotal(b)
	return n, "MemTotal", ok
}

// parseCgroupMemoryMax reads cgroup v2's memory.max: a byte count, or "max"
// for none (ok false).
func parseCgroupMemoryMax(b []byte) (uint64, bool) {
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, false
	}
	return n, true
}

// parseMemTotal reads the MemTotal line of /proc/meminfo ("MemTotal:
// 16384 kB"), in bytes.
func parseMemTotal(b []byte) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || fields[0] != "MemTotal:" || fields[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseUint(fields[1], 10, 64)
		if err != nil || kb == 0 || kb > 1<<53 {
			return 0, false
		}
		return kb << 10, true
	}
	return 0, false
}
