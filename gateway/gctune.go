package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// The garbage collector's setting for the agent (and for `gateway bench`,
// which measures the agent's paths).
//
// The migration State keeps every user's record in go-memdb, about 1 KB a
// user: a gigabyte of live, pointer-dense heap at a million users. Go's
// default (GOGC=100) starts a collection each time the heap has grown by
// as much as is live, and every collection marks all of it. In a campaign
// step, with users moving at 50,000 a second, GOGC=300 took about a
// quarter less CPU per transition than the default (`GOGC=100` against
// `GOGC=300`, in turns, of `go test ./migrate/migratestore/ -run '^$'
// -bench StepTransitions`, its cpu-µs/transition; README, Performance).
// The agent therefore runs with
// defaultGCPercent, under a soft memory limit of three quarters of the
// memory it may use (its cgroup's limit, else the machine's), so that the
// collector works less while the heap has room and harder as it nears the
// limit. GOGC and GOMEMLIMIT in the environment take precedence, as the Go
// runtime documents them.
const defaultGCPercent = 300

// gcMemoryShare is the share of the usable memory the soft limit allows.
const gcMemoryShare = 0.75

// gcSetting is what tuneGC applied, for the start-up log and the bench's
// output.
type gcSetting struct {
	Percent   int    // the GOGC in force
	Limit     int64  // the soft memory limit in force, bytes; math.MaxInt64: none
	PercentBy string // "flag", "GOGC" or "default"
	LimitBy   string // "3/4 of the cgroup limit", "3/4 of MemTotal", "GOMEMLIMIT" or "none"
}

func (g gcSetting) String() string {
	limit := "none"
	if g.LimitBy != "none" {
		limit = fmt.Sprintf("%d MiB (%s)", g.Limit>>20, g.LimitBy)
	}
	return fmt.Sprintf("GOGC=%d (%s), memory limit %s", g.Percent, g.PercentBy, limit)
}

// tuneGC sets the collector's percent to percent (0 or less: leave the
// runtime's, which is Go's 100 or $GOGC) unless $GOGC is set, and the soft
// memory limit to gcMemoryShare of the usable memory unless $GOMEMLIMIT is
// set or the usable memory cannot be read.
func tuneGC(percent int) gcSetting {
	var g gcSetting
	switch {
	case os.Getenv("GOGC") != "":
		g.Percent, g.PercentBy = currentGCPercent(), "GOGC"
	case percent > 0:
		debug.SetGCPercent(percent)
		g.Percent, g.PercentBy = percent, "flag"
	default:
		g.Percent, g.PercentBy = currentGCPercent(), "default"
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
