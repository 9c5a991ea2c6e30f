package bridge

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestCursorSurvivesRestart checks that the cloud-feed cursor is flushed when
// the bridge stops and read back by the next bridge on the same engine, and
// that it only moves forward.
func TestCursorSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	eng := enginetest.StartIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)

	c, err := newCursorStore(ctx, eng.JS, 1, "link-0", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.load(); got != 0 {
		t.Fatalf("fresh cursor %d, want 0", got)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.run(runCtx) }()
	c.advance(41)
	c.advance(42)
	c.advance(7) // never backwards
	stop()
	if err := <-done; err != nil {
		t.Fatalf("final flush: %v", err)
	}
	eng.Close()

	eng = enginetest.StartIn(t, dir)
	c2, err := newCursorStore(ctx, eng.JS, 1, "link-0", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := c2.load(); got != 42 {
		t.Fatalf("cursor after restart %d, want 42", got)
	}
	other, err := newCursorStore(ctx, eng.JS, 1, "link-1", log)
	if err != nil {
		t.Fatal(err)
	}
	if got := other.load(); got != 0 {
		t.Fatalf("another link's cursor %d, want its own 0", got)
	}
}
