package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine"
)

// TestEmbeddedKeepsDataAcrossRestart checks that what JetStream acknowledged
// is there after the engine stops and starts again on the same directory.
func TestEmbeddedKeepsDataAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	e, err := engine.Start(engine.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !e.Embedded() {
		t.Fatal("engine without URL is not embedded")
	}
	kv, err := e.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := e.Close(); err != nil { // idempotent
		t.Fatalf("second close: %v", err)
	}

	e2, err := engine.Start(engine.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	kv2, err := e2.JS.KeyValue(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv2.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value()) != "v1" {
		t.Fatalf("after restart: %q, want v1", got.Value())
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (engine.Config{}).Validate(); err == nil {
		t.Fatal("empty config validated")
	}
	if _, err := engine.Start(engine.Config{URL: "nats://127.0.0.1:1"}); err == nil {
		t.Fatal("connect to a closed port succeeded")
	}
}

// TestSyncIntervalIsTheEffectiveOne checks that SyncInterval reports what the
// embedded server runs with: the configured value, or the default.
func TestSyncIntervalIsTheEffectiveOne(t *testing.T) {
	for _, tc := range []struct{ set, want time.Duration }{{0, engine.DefaultSyncInterval}, {250 * time.Millisecond, 250 * time.Millisecond}} {
		e, err := engine.Start(engine.Config{DataDir: t.TempDir(), SyncInterval: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if got := e.SyncInterval(); got != tc.want {
			t.Errorf("SyncInterval with %v configured = %v, want %v", tc.set, got, tc.want)
		}
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
