package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
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
