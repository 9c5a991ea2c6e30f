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
	e.Close()
	e.Close() // idempotent

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
