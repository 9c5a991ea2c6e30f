package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/gateway/engine/enginetest"
)

// TestStorageFullRecovers fills the file system under the embedded engine:
// publishes that cannot be written get no acknowledgement, StorageErr
// reports it, and once the filler is removed the engine restarts
// JetStream by itself, publishes are acknowledged again, and everything
// acknowledged before, during and after is in the stream, once each.
func TestStorageFullRecovers(t *testing.T) {
	vol := enginetest.SmallVolume(t, 32<<20)
	e, err := engine.Start(engine.Config{DataDir: filepath.Join(vol, "data"), StorageCheck: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var acked []string
	publish := func(body string) error {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer cancel()
		_, err := e.JS.Publish(pctx, "s.a", append([]byte(body+" "), make([]byte, 1000)...), jetstream.WithMsgID(body))
		if err == nil {
			acked = append(acked, body)
		}
		return err
	}
	for i := range 10 {
		if err := publish(fmt.Sprint("before", i)); err != nil {
			t.Fatal(err)
		}
	}
	filler := enginetest.Fill(t, vol)
	failed := 0
	for i := 0; failed < 3 && i < 200; i++ {
		if publish(fmt.Sprint("full", i)) != nil {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("every publish was acknowledged on a full disk")
	}
	waitFor(t, 30*time.Second, func() bool { return errors.Is(e.StorageErr(), engine.ErrStorage) }, "StorageErr never reported the full disk")
	t.Logf("while full: %v", e.StorageErr())

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, func() bool { return e.StorageErr() == nil }, "the engine never recovered after space returned")
	if n := e.StorageRecoveries(); n != 1 {
		t.Errorf("StorageRecoveries = %d, want 1", n)
	}
	waitFor(t, 30*time.Second, func() bool { return publish("after0") == nil }, "publishes not acknowledged after recovery")
	for i := 1; i < 10; i++ {
		if err := publish(fmt.Sprint("after", i)); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	}

	// Everything acknowledged is there, once, in order.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	retryUntil := time.Now().Add(10 * time.Second)
	for len(got) < len(acked) {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if errors.Is(err, nats.ErrNoResponders) && time.Now().Before(retryUntil) {
			// Seen once, under the whole suite's load, after every
			// publish had been acknowledged: the JetStream API answered
			// no request for a moment. A client retries; so does the
			// test, bounded. Lost or repeated messages still fail below.
			t.Logf("read back after %d of %d: %v; again", len(got), len(acked), err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("read back after %d of %d: %v", len(got), len(acked), err)
		}
		body, _, _ := bytes.Cut(m.Data(), []byte(" "))
		got = append(got, string(body))
	}
	if fmt.Sprint(got) != fmt.Sprint(acked) {
		t.Fatalf("stream after recovery:\ngot  %v\nwant %v", got, acked)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
