package migratestore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/migrate"
)

// modify is the read, change, compare-and-set loop behind the stores' Modify
// methods: put must fail with migrate.ErrConflict when another writer got
// there first, and the loop then starts over from a fresh read, at most
// DefaultMaxRetries times.
func modify[T any](get func() (T, error), change func(T) (T, error), put func(T) (T, error)) (T, error) {
	var zero T
	var err error
	for range DefaultMaxRetries {
		cur, gerr := get()
		if gerr != nil {
			return zero, gerr
		}
		next, cerr := change(cur)
		if cerr != nil {
			return zero, cerr
		}
		var out T
		if out, err = put(next); err == nil {
			return out, nil
		}
		if !errors.Is(err, migrate.ErrConflict) {
			return zero, err
		}
	}
	return zero, err
}

// openBucket creates or opens the file-backed KV bucket (bucket "" means
// def) with its description, the revisions kept per key and the replica
// count (0 means DefaultReplicas), and its key index.
func openBucket(ctx context.Context, js jetstream.JetStream, bucket, def, description string, history uint8, replicas int) (jetstream.KeyValue, KeyIndex, error) {
	if bucket == "" {
		bucket = def
	}
	if replicas == 0 {
		replicas = DefaultReplicas
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: description,
		History:     history,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, KeyIndex{}, fmt.Errorf("migratestore: bucket %s: %w", bucket, err)
	}
	keys, err := OpenKeyIndex(ctx, js, bucket)
	return kv, keys, err
}

// putRecord writes data at key with a compare-and-set: created when rev
// is 0 (no record yet), else updated over revision rev. A writer that got
// there first makes it fail with an error wrapping migrate.ErrConflict.
// what names the record in errors ("policy android"). It returns the new
// revision.
func putRecord(ctx context.Context, kv jetstream.KeyValue, key, what string, data []byte, rev uint64) (uint64, error) {
	var out uint64
	var err error
	if rev == 0 {
		out, err = kv.Create(ctx, key, data)
	} else {
		out, err = kv.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("migratestore: %s changed since revision %d: %w", what, rev, migrate.ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("migratestore: write %s: %w", what, err)
	}
	return out, nil
}

// KeyIndex lists a KV bucket's keys from its stream's per-subject state,
// which the server keeps under one lock: a key being rewritten is never
// missing from it. (kv.ListKeys reads through a consumer that can
// silently come back short while keys are being rewritten, and ends
// without an error when its context does.) The bridge lists its buckets
// with it too.
type KeyIndex struct {
	stream  jetstream.Stream
	subject string // "$KV.<bucket>."
}

// OpenKeyIndex opens the index of an existing KV bucket.
func OpenKeyIndex(ctx context.Context, js jetstream.JetStream, bucket string) (KeyIndex, error) {
	st, err := js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return KeyIndex{}, fmt.Errorf("migratestore: bucket %s stream: %w", bucket, err)
	}
	return KeyIndex{stream: st, subject: "$KV." + bucket + "."}, nil
}

// Keys returns the keys under prefix, in no order (deleted ones included:
// their delete marker is the subject's last message).
func (x KeyIndex) Keys(ctx context.Context, prefix string) ([]string, error) {
	info, err := x.stream.Info(ctx, jetstream.WithSubjectFilter(x.subject+prefix+">"))
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		keys = append(keys, strings.TrimPrefix(subj, x.subject))
	}
	return keys, nil
}

// listByPrefix returns, sorted by name, the records whose keys start with
// prefix; get reads one by name, and a record deleted meanwhile (notFound) is
// skipped.
func listByPrefix[T any](ctx context.Context, idx KeyIndex, prefix string, notFound error, get func(name string) (T, error)) ([]T, error) {
	keys, err := idx.Keys(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("migratestore: list %s: %w", strings.TrimSuffix(prefix, "."), err)
	}
	var names []string
	for _, k := range keys {
		if name, ok := strings.CutPrefix(k, prefix); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	out := make([]T, 0, len(names))
	for _, n := range names {
		v, err := get(n)
		if errors.Is(err, notFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
