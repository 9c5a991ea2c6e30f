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

// listByPrefix returns, sorted by name, the records whose keys start with
// prefix; get reads one by name, and a record deleted meanwhile (notFound) is
// skipped.
func listByPrefix[T any](ctx context.Context, kv jetstream.KeyValue, prefix string, notFound error, get func(name string) (T, error)) ([]T, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("migratestore: list %s: %w", strings.TrimSuffix(prefix, "."), err)
	}
	var names []string
	for k := range lister.Keys() {
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
