package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultPolicyBucket is the KV bucket of client-version policies.
const DefaultPolicyBucket = "ferry_versions"

// policyKeyPrefix starts a policy's key: "p.<platform>".
const policyKeyPrefix = "p."

// Policies keeps one migrate.VersionPolicy per platform in a JetStream KV
// bucket, every write a compare-and-set on the key's revision.
type Policies struct {
	kv   jetstream.KeyValue
	keys KeyIndex
}

// NewPolicies creates or opens the policy bucket (bucket "" means
// DefaultPolicyBucket) with the given replica count (0 means 1).
func NewPolicies(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Policies, error) {
	kv, keys, err := openBucket(ctx, js, bucket, DefaultPolicyBucket,
		"Ferry client-version policies (p.<platform>: JSON of migrate.VersionPolicy)", 5, replicas)
	if err != nil {
		return nil, err
	}
	return &Policies{kv: kv, keys: keys}, nil
}

// Get reads a platform's policy, or returns an error wrapping
// migrate.ErrPolicyNotFound.
func (s *Policies) Get(ctx context.Context, platform string) (migrate.VersionPolicy, error) {
	if err := migrate.CheckPlatform(platform); err != nil {
		return migrate.VersionPolicy{}, err
	}
	e, err := s.kv.Get(ctx, policyKeyPrefix+platform)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return migrate.VersionPolicy{}, fmt.Errorf("migratestore: policy %s: %w", platform, migrate.ErrPolicyNotFound)
	}
	if err != nil {
		return migrate.VersionPolicy{}, fmt.Errorf("migratestore: read policy %s: %w", platform, err)
	}
	var p migrate.VersionPolicy
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return migrate.VersionPolicy{}, fmt.Errorf("migratestore: decode policy %s: %w", platform, err)
	}
	if policyKeyPrefix+p.Platform != e.Key() {
		return migrate.VersionPolicy{}, fmt.Errorf("migratestore: decode policy %s: record names %q", e.Key(), p.Platform)
	}
	p.Revision = e.Revision()
	return p, nil
}

// Put writes p if the stored policy's revision is still p.Revision (0: the
// platform has no policy yet); otherwise it returns an error wrapping
// migrate.ErrConflict.
func (s *Policies) Put(ctx context.Context, p migrate.VersionPolicy) (migrate.VersionPolicy, error) {
	if err := p.Validate(); err != nil {
		return migrate.VersionPolicy{}, err
	}
	rev := p.Revision
	p.Revision = 0
	data, err := json.Marshal(p)
	if err != nil {
		return migrate.VersionPolicy{}, fmt.Errorf("migratestore: encode policy %s: %w", p.Platform, err)
	}
	out, err := putRecord(ctx, s.kv, policyKeyPrefix+p.Platform, "policy "+p.Platform, data, rev)
	if err != nil {
		return migrate.VersionPolicy{}, err
	}
	p.Revision = out
	return p, nil
}

// Modify reads a platform's policy (a fresh one when it has none), applies
// fn and writes the result with a compare-and-set, retrying a few times when
// another writer got there first.
func (s *Policies) Modify(ctx context.Context, platform string, fn func(migrate.VersionPolicy) (migrate.VersionPolicy, error)) (migrate.VersionPolicy, error) {
	return modify(
		func() (migrate.VersionPolicy, error) { return s.getOrNew(ctx, platform) },
		func(cur migrate.VersionPolicy) (migrate.VersionPolicy, error) {
			next, err := fn(cur.Clone())
			next.Platform, next.Revision = platform, cur.Revision
			return next, err
		},
		func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) { return s.Put(ctx, p) },
	)
}

// ModifyAudited is Modify for an audited change: fn returns the changed
// policy and the change's event, which is written to audit first, as the
// intent of each compare-and-set, on the policy's chain (see Audit and
// modifyAudited); the record carries the event's sequence in Audit and
// opID in LastOp. A repeat (the record's LastOp is already opID, not "")
// returns the record and writes nothing (wrote is false); a refusal (fn's
// error, or a policy that does not validate) writes no event either.
func (s *Policies) ModifyAudited(ctx context.Context, audit *Audit, platform, opID string, fn func(migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error)) (p migrate.VersionPolicy, wrote bool, err error) {
	if err := migrate.CheckPlatform(platform); err != nil {
		return migrate.VersionPolicy{}, false, err
	}
	return modifyAudited(ctx, audit, policyChain(platform), opID,
		func(p *migrate.VersionPolicy) (*uint64, *string, *uint64) { return &p.Audit, &p.LastOp, &p.Revision },
		func() (migrate.VersionPolicy, error) { return s.getOrNew(ctx, platform) },
		func(cur migrate.VersionPolicy) (migrate.VersionPolicy, migrate.AuditEvent, error) {
			next, ev, err := fn(cur.Clone())
			if err != nil {
				return migrate.VersionPolicy{}, ev, err
			}
			next.Platform = platform
			return next, ev, next.Validate()
		},
		func(p migrate.VersionPolicy) (migrate.VersionPolicy, error) { return s.Put(ctx, p) },
	)
}

// getOrNew reads a platform's policy, or a fresh one (revision 0) when it
// has none.
func (s *Policies) getOrNew(ctx context.Context, platform string) (migrate.VersionPolicy, error) {
	cur, err := s.Get(ctx, platform)
	if errors.Is(err, migrate.ErrPolicyNotFound) {
		return migrate.VersionPolicy{Platform: platform}, nil
	}
	return cur, err
}

// List returns every policy, by platform.
func (s *Policies) List(ctx context.Context) ([]migrate.VersionPolicy, error) {
	return listByPrefix(ctx, s.keys, policyKeyPrefix, migrate.ErrPolicyNotFound,
		func(name string) (migrate.VersionPolicy, error) { return s.Get(ctx, name) })
}
