package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// summaryMu serialises appends to the summary file within this process.
var summaryMu sync.Mutex

// tally adds n to key in the test run's summary: when FERRY_SUMMARY names a
// file (.ci/run sets it), a line "key n" is appended to it, and .ci/run sums
// the lines of every package into the summary it prints at the end. Without
// FERRY_SUMMARY it does nothing.
func tally(key string, n int) {
	path := os.Getenv("FERRY_SUMMARY")
	if path == "" {
		return
	}
	summaryMu.Lock()
	defer summaryMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return // the summary is a report, never a reason to fail a test
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %d\n", strings.ReplaceAll(key, " ", "_"), n)
}

// faultPrefix starts the summary key of each kind of fault; .ci/run lists
// every key that starts with it (but fault_scenarios, the count of
// scenarios) under "faults injected and survived".
const faultPrefix = "fault_"

// tallyFault counts n faults of one kind (kill_bridge, restart_cloud,
// cut_link, disk_full, ...) that tb injected, under the key fault_<kind>,
// unless tb has failed: only survived faults count.
func tallyFault(tb testing.TB, kind string, n int) {
	tb.Helper()
	if tb.Failed() {
		return
	}
	tally(faultPrefix+kind, n)
}
