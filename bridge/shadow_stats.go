package bridge

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ferrygw/ferry/migrate/migratestore"
)

// maxLastMismatches bounds ShadowStats.LastMismatches.
const maxLastMismatches = 8

// shadowFlushEvery is how often changed summaries are written to the
// bucket: a burst of compares costs one write per user.
const shadowFlushEvery = 250 * time.Millisecond

// ShadowStats is the bridge's bounded summary of one user's shadow mirror,
// persisted in JetStream KV: what the backfill and shadow-mismatch gates of
// a campaign read.
type ShadowStats struct {
	User string `json:"user"`
	// Samples counts the compares that found a cloud copy (match or
	// mismatch); Mismatches those where it differed from the legacy copy.
	Samples    int `json:"samples"`
	Mismatches int `json:"mismatches"`
	// Missing counts legacy copies the cloud lacked (written then).
	Missing int `json:"missing"`
	// BackfillDone is set once the user's recent history (bounded by
	// count and age) has been read from a device and written to the cloud.
	BackfillDone bool      `json:"backfill_done"`
	BackfillAt   time.Time `json:"backfill_at,omitzero"`
	// LastMismatches are the ids of the latest mismatched messages, at
	// most maxLastMismatches, newest last.
	LastMismatches []string  `json:"last_mismatches,omitempty"`
	Updated        time.Time `json:"updated"`
}

// shadowStats keeps every user's ShadowStats in memory (the gates must
// answer from memory) and writes the changed ones to the bucket.
type shadowStats struct {
	kv  jetstream.KeyValue
	now func() time.Time
	log *slog.Logger

	mu    sync.Mutex
	users map[string]ShadowStats
	dirty map[string]struct{}
}

func statsKey(user string) string {
	h := sha256.Sum256([]byte(user))
	return "user." + hex.EncodeToString(h[:16])
}

// loadShadowStats reads every persisted summary of bucket shadowBucket.
func loadShadowStats(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, now func() time.Time, log *slog.Logger) (*shadowStats, error) {
	st := &shadowStats{kv: kv, now: now, log: log, users: map[string]ShadowStats{}, dirty: map[string]struct{}{}}
	idx, err := migratestore.OpenKeyIndex(ctx, js, shadowBucket)
	if err != nil {
		return nil, fmt.Errorf("bridge: list shadow summaries: %w", err)
	}
	keys, err := idx.Keys(ctx, "user.")
	if err != nil {
		return nil, fmt.Errorf("bridge: list shadow summaries: %w", err)
	}
	for _, key := range keys {
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bridge: read shadow summary: %w", err)
		}
		var s ShadowStats
		if err := json.Unmarshal(e.Value(), &s); err != nil || statsKey(s.User) != key {
			log.Warn("corrupt shadow summary dropped", "key", key)
			continue
		}
		st.users[s.User] = s
	}
	return st, nil
}

func (st *shadowStats) get(user string) (ShadowStats, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.users[user]
	return s, ok
}

// update changes user's summary with f and queues it for writing.
func (st *shadowStats) update(user string, f func(s *ShadowStats)) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.users[user]
	if !ok {
		s = ShadowStats{User: user}
	}
	f(&s)
	s.Updated = st.now().UTC()
	st.users[user] = s
	st.dirty[user] = struct{}{}
}

// record counts one compare result of msgID for user.
func (st *shadowStats) record(user, msgID, result string) {
	st.update(user, func(s *ShadowStats) {
		switch result {
		case CompareMatch:
			s.Samples++
		case CompareMismatch:
			s.Samples++
			s.Mismatches++
			s.LastMismatches = append(s.LastMismatches, msgID)
			if n := len(s.LastMismatches); n > maxLastMismatches {
				s.LastMismatches = append([]string(nil), s.LastMismatches[n-maxLastMismatches:]...)
			}
		case CompareMissing:
			s.Missing++
		}
	})
}

// run writes changed summaries every shadowFlushEvery, and once more when
// ctx ends.
func (st *shadowStats) run(ctx context.Context) error {
	return flushLoop(ctx, shadowFlushEvery, st.log, "save shadow summaries", st.flush)
}

// flush writes the changed summaries; one that fails stays queued and the
// first error is returned.
func (st *shadowStats) flush(ctx context.Context) error {
	st.mu.Lock()
	batch := make([]ShadowStats, 0, len(st.dirty))
	for user := range st.dirty {
		batch = append(batch, st.users[user])
	}
	clear(st.dirty)
	st.mu.Unlock()
	var first error
	for _, s := range batch {
		data, err := json.Marshal(s)
		if err == nil {
			_, err = st.kv.Put(ctx, statsKey(s.User), data)
		}
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("bridge: save shadow summary: %w", err))
			st.mu.Lock()
			st.dirty[s.User] = struct{}{}
			st.mu.Unlock()
		}
	}
	return first
}

// ShadowStats returns the bridge's summary of user's shadow mirror, from
// memory; ok is false when the bridge has none.
func (b *Bridge) ShadowStats(user string) (ShadowStats, bool) {
	return b.shadow.stats.get(user)
}
