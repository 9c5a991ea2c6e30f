package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultCampaignBucket is the KV bucket of campaigns and the global freeze.
const DefaultCampaignBucket = "ferry_campaigns"

// Keys of the campaign bucket: "c.<name>" holds a campaign's JSON,
// freezeKey the global freeze.
const (
	campaignKeyPrefix = "c."
	freezeKey         = "control.freeze"
)

// Freeze is the global change freeze: while On, no campaign moves anyone
// forward.
type Freeze struct {
	On     bool      `json:"on"`
	Reason string    `json:"reason,omitempty"`
	Actor  string    `json:"actor,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Campaigns keeps campaigns in a JetStream KV bucket, every write a
// compare-and-set on the key's revision. It is safe for concurrent use, and
// every agent on the same NATS sees the same campaigns.
type Campaigns struct {
	kv   jetstream.KeyValue
	keys KeyIndex
}

// NewCampaigns creates or opens the campaign bucket (bucket "" means
// DefaultCampaignBucket) with the given replica count (0 means 1).
func NewCampaigns(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Campaigns, error) {
	if bucket == "" {
		bucket = DefaultCampaignBucket
	}
	if replicas == 0 {
		replicas = DefaultReplicas
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Ferry campaigns (c.<name>: JSON of migrate.Campaign) and the global freeze",
		History:     1,
		Replicas:    replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("migratestore: bucket %s: %w", bucket, err)
	}
	keys, err := OpenKeyIndex(ctx, js, bucket)
	if err != nil {
		return nil, err
	}
	return &Campaigns{kv: kv, keys: keys}, nil
}

// Create stores a new campaign, or returns an error wrapping
// migrate.ErrCampaignExists.
func (s *Campaigns) Create(ctx context.Context, c migrate.Campaign) (migrate.Campaign, error) {
	if err := c.Validate(); err != nil {
		return migrate.Campaign{}, err
	}
	data, err := encodeCampaign(c)
	if err != nil {
		return migrate.Campaign{}, err
	}
	rev, err := s.kv.Create(ctx, campaignKeyPrefix+c.Name, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return migrate.Campaign{}, fmt.Errorf("migratestore: campaign %s: %w", c.Name, migrate.ErrCampaignExists)
	}
	if err != nil {
		return migrate.Campaign{}, fmt.Errorf("migratestore: write campaign %s: %w", c.Name, err)
	}
	c.Revision = rev
	return c, nil
}

// Get reads a campaign, or returns an error wrapping
// migrate.ErrCampaignNotFound.
func (s *Campaigns) Get(ctx context.Context, name string) (migrate.Campaign, error) {
	if err := migrate.CheckCampaignName(name); err != nil {
		return migrate.Campaign{}, err
	}
	e, err := s.kv.Get(ctx, campaignKeyPrefix+name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return migrate.Campaign{}, fmt.Errorf("migratestore: campaign %s: %w", name, migrate.ErrCampaignNotFound)
	}
	if err != nil {
		return migrate.Campaign{}, fmt.Errorf("migratestore: read campaign %s: %w", name, err)
	}
	return decodeCampaign(e)
}

// Update writes c if the stored campaign's revision is still c.Revision;
// otherwise it returns an error wrapping migrate.ErrConflict.
func (s *Campaigns) Update(ctx context.Context, c migrate.Campaign) (migrate.Campaign, error) {
	if err := c.Validate(); err != nil {
		return migrate.Campaign{}, err
	}
	data, err := encodeCampaign(c)
	if err != nil {
		return migrate.Campaign{}, err
	}
	rev, err := s.kv.Update(ctx, campaignKeyPrefix+c.Name, data, c.Revision)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		return migrate.Campaign{}, fmt.Errorf("migratestore: campaign %s changed since revision %d: %w", c.Name, c.Revision, migrate.ErrConflict)
	}
	if err != nil {
		return migrate.Campaign{}, fmt.Errorf("migratestore: write campaign %s: %w", c.Name, err)
	}
	c.Revision = rev
	return c, nil
}

// Modify reads a campaign, applies fn and writes the result with a
// compare-and-set, retrying a few times when another writer got there first.
func (s *Campaigns) Modify(ctx context.Context, name string, fn func(migrate.Campaign) (migrate.Campaign, error)) (migrate.Campaign, error) {
	return modify(
		func() (migrate.Campaign, error) { return s.Get(ctx, name) },
		func(c migrate.Campaign) (migrate.Campaign, error) {
			next, err := fn(c)
			next.Revision = c.Revision
			return next, err
		},
		func(c migrate.Campaign) (migrate.Campaign, error) { return s.Update(ctx, c) },
	)
}

// CreateAudited is Create writing ev, the creation's audit event, to audit
// first, as the intent of the create on the campaign's chain (see Audit):
// the record carries the event's sequence in Audit, so a kill between the
// two writes neither loses the event of a campaign that was created nor
// leaves one for a create that did not land (Query drops it). ev gets the
// campaign's name and operation id c.LastOp.
func (s *Campaigns) CreateAudited(ctx context.Context, audit *Audit, c migrate.Campaign, ev migrate.AuditEvent) (migrate.Campaign, error) {
	if err := c.Validate(); err != nil {
		return migrate.Campaign{}, err
	}
	ev.Campaign, ev.OpID = c.Name, c.LastOp
	seq, err := audit.intendCampaign(ctx, ev, 0)
	if err != nil {
		return migrate.Campaign{}, err
	}
	c.Audit = seq
	return s.Create(ctx, c)
}

// ModifyAudited is Modify for an audited change of the campaign record
// (its state, step, exemptions or opt-ins): fn returns the changed
// campaign and the change's event, which is written to audit first, as
// the intent of each compare-and-set, on the campaign's chain (see Audit);
// the record carries the event's sequence in Audit and opID in LastOp. A
// repeat (the record's LastOp is already opID, not "") returns the record
// and writes nothing; a refusal (fn's error) writes no event either. ev
// gets the campaign's name and opID.
func (s *Campaigns) ModifyAudited(ctx context.Context, audit *Audit, name, opID string, fn func(migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error)) (migrate.Campaign, error) {
	var repeat bool
	return modify(
		func() (migrate.Campaign, error) { return s.Get(ctx, name) },
		func(c migrate.Campaign) (migrate.Campaign, error) {
			if repeat = opID != "" && c.LastOp == opID; repeat {
				return c, nil
			}
			next, ev, err := fn(c)
			if err != nil {
				return migrate.Campaign{}, err
			}
			ev.Campaign, ev.OpID = c.Name, opID
			seq, err := audit.intendCampaign(ctx, ev, c.Audit)
			if err != nil {
				return migrate.Campaign{}, err
			}
			next.Revision, next.Audit, next.LastOp = c.Revision, seq, opID
			return next, nil
		},
		func(c migrate.Campaign) (migrate.Campaign, error) {
			if repeat {
				return c, nil
			}
			return s.Update(ctx, c)
		},
	)
}

// DriverCampaigns is the campaign store as the campaign driver sees it
// (migrate.CampaignStore): Campaigns with the audit log its decisions go
// to first (see ModifyAudited).
type DriverCampaigns struct {
	*Campaigns
	Audit *Audit
}

// ModifyAudited is Campaigns.ModifyAudited on d's audit log.
func (d DriverCampaigns) ModifyAudited(ctx context.Context, name, opID string, fn func(migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error)) (migrate.Campaign, error) {
	return d.Campaigns.ModifyAudited(ctx, d.Audit, name, opID, fn)
}

// List returns every campaign, by name.
func (s *Campaigns) List(ctx context.Context) ([]migrate.Campaign, error) {
	return listByPrefix(ctx, s.keys, campaignKeyPrefix, migrate.ErrCampaignNotFound,
		func(name string) (migrate.Campaign, error) { return s.Get(ctx, name) })
}

// Frozen reports whether the global freeze is on.
func (s *Campaigns) Frozen(ctx context.Context) (bool, error) {
	f, err := s.Freeze(ctx)
	return f.On, err
}

// Freeze returns the global freeze (off when never set).
func (s *Campaigns) Freeze(ctx context.Context) (Freeze, error) {
	e, err := s.kv.Get(ctx, freezeKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Freeze{}, nil
	}
	if err != nil {
		return Freeze{}, fmt.Errorf("migratestore: read freeze: %w", err)
	}
	var f Freeze
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return Freeze{}, fmt.Errorf("migratestore: decode freeze: %w", err)
	}
	return f, nil
}

// SetFreeze turns the global freeze on or off.
func (s *Campaigns) SetFreeze(ctx context.Context, f Freeze) error {
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, freezeKey, data); err != nil {
		return fmt.Errorf("migratestore: write freeze: %w", err)
	}
	return nil
}

func encodeCampaign(c migrate.Campaign) ([]byte, error) {
	c.Revision = 0
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("migratestore: encode campaign %s: %w", c.Name, err)
	}
	return data, nil
}

func decodeCampaign(e jetstream.KeyValueEntry) (migrate.Campaign, error) {
	var c migrate.Campaign
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return migrate.Campaign{}, fmt.Errorf("migratestore: decode campaign %s: %w", e.Key(), err)
	}
	if campaignKeyPrefix+c.Name != e.Key() {
		return migrate.Campaign{}, fmt.Errorf("migratestore: decode campaign %s: record names %q", e.Key(), c.Name)
	}
	c.Revision = e.Revision()
	return c, nil
}
