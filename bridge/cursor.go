package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// cursorBucket holds the bridge's position in the cloud feed.
const cursorBucket = "ferry_bridge"

// cursorFlushInterval bounds how much of the cloud feed a killed bridge
// replays after a restart. Replays are harmless: the cloud deduplicates
// receipts by message id and legacy devices drop repeated message ids.
const cursorFlushInterval = 250 * time.Millisecond

// cursorStore keeps the last cloud-feed cursor the bridge has fully handled,
// in memory at once and in JetStream every cursorFlushInterval.
type cursorStore struct {
	kv  jetstream.KeyValue
	key string
	log *slog.Logger

	mu      sync.Mutex
	value   uint64
	flushed uint64
}

func newCursorStore(ctx context.Context, js jetstream.JetStream, replicas int, name string, log *slog.Logger) (*cursorStore, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cursorBucket,
		Description: "Ferry bridge: cloud feed cursors",
		History:     1,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: cursor bucket: %w", err)
	}
	c := &cursorStore{kv: kv, key: "cursor." + name, log: log}
	e, err := kv.Get(ctx, c.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return nil, fmt.Errorf("bridge: read cursor: %w", err)
	default:
		v, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bridge: stored cursor %q: %w", e.Value(), err)
		}
		c.value, c.flushed = v, v
	}
	return c, nil
}

func (c *cursorStore) load() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.value
}

// advance records that every event up to v has been handled.
func (c *cursorStore) advance(v uint64) {
	c.mu.Lock()
	if v > c.value {
		c.value = v
	}
	c.mu.Unlock()
}

func (c *cursorStore) flush(ctx context.Context) error {
	c.mu.Lock()
	v := c.value
	dirty := v != c.flushed
	c.mu.Unlock()
	if !dirty {
		return nil
	}
	if _, err := c.kv.Put(ctx, c.key, []byte(strconv.FormatUint(v, 10))); err != nil {
		return fmt.Errorf("bridge: save cursor: %w", err)
	}
	c.mu.Lock()
	c.flushed = v
	c.mu.Unlock()
	return nil
}

// run flushes the cursor periodically and once more when ctx ends. A failed
// flush is retried at the next tick: the cursor only ever moves forward.
func (c *cursorStore) run(ctx context.Context) error {
	return flushLoop(ctx, cursorFlushInterval, c.log, "flush cursor", c.flush)
}

// flushLoop calls flush every interval, logging a failure as what (the
// next tick retries), and once more when ctx ends, under a fresh deadline
// of two seconds; it returns that last flush's error.
func flushLoop(ctx context.Context, every time.Duration, log *slog.Logger, what string, flush func(context.Context) error) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			return flush(final)
		case <-t.C:
			if err := flush(ctx); err != nil && ctx.Err() == nil {
				log.Warn(what, "err", err)
			}
		}
	}
}
