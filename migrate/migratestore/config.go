package migratestore

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultBucket     = "ferry_users"
	DefaultReplicas   = 1
	DefaultMaxRetries = 8
)

// maxReplicas is JetStream's limit on stream replicas.
const maxReplicas = 5

// Config configures a Store. The zero value is usable.
type Config struct {
	// Bucket is the KV bucket's name; default DefaultBucket.
	Bucket string
	// Replicas is the bucket's replica count (1 embedded, 3 on a cluster);
	// default DefaultReplicas.
	Replicas int
	// History is how many revisions of each record the bucket keeps;
	// default 1. Tests keep more, to compare the audit log with every
	// write that landed.
	History int
	// AuditStream is the audit log's stream, where TransitionManyAudited
	// writes its events; default DefaultAuditStream.
	AuditStream string
	// MaxRetries is how many compare-and-set attempts a change gets before
	// it fails with migrate.ErrConflict; default DefaultMaxRetries.
	MaxRetries int
	// Logger receives the store's logs, tagged component=migratestore; nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Bulk, if set, is called when TransitionMany starts writing, and the
	// function it returns when it has ended. The agent raises the garbage
	// collector's percent in between: a bulk move allocates fast, and the
	// State it grows is large (gateway/gctune.go).
	Bulk func() (end func())
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Bucket != "" && !validBucket(c.Bucket) {
		errs = append(errs, fmt.Errorf("migratestore: bucket name %q: use letters, digits, '_' and '-'", c.Bucket))
	}
	if c.Replicas < 0 || c.Replicas > maxReplicas {
		errs = append(errs, fmt.Errorf("migratestore: replicas %d: want 1 to %d (0 for the default)", c.Replicas, maxReplicas))
	}
	if c.History < 0 || c.History > jetstream.KeyValueMaxHistory {
		errs = append(errs, fmt.Errorf("migratestore: history %d: want 1 to %d (0 for the default)", c.History, jetstream.KeyValueMaxHistory))
	}
	if c.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("migratestore: negative MaxRetries %d", c.MaxRetries))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.History == 0 {
		c.History = 1
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Logger = c.Logger.With("component", "migratestore")
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func validBucket(name string) bool {
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}
