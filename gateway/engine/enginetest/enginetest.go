// Package enginetest starts a real embedded NATS JetStream engine for tests,
// so that every integration test of Ferry runs on the engine it ships with.
package enginetest

import (
	"testing"

	"github.com/ferrygw/ferry/gateway/engine"
)

// Start starts an embedded engine in a fresh temporary directory and stops it
// at cleanup.
func Start(tb testing.TB) *engine.Engine {
	tb.Helper()
	return StartIn(tb, tb.TempDir())
}

// StartIn starts an embedded engine on dir (which may hold an earlier run's
// data) and stops it at cleanup. Stopping it earlier with Close is fine.
func StartIn(tb testing.TB, dir string) *engine.Engine {
	tb.Helper()
	e, err := engine.Start(engine.Config{DataDir: dir, Name: tb.Name()})
	if err != nil {
		tb.Fatalf("start engine: %v", err)
	}
	tb.Cleanup(func() { e.Close() })
	return e
}
