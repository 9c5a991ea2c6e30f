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
	On     bool   `json:"on"`
	Reason string `json:"reason,omitempty"`
	Actor  string `json:"actor,omitempty"`
	// Since is when the freeze turned on (or off): a repeated "on" keeps it.
	Since time.Time `json:"since,omitzero"`
	// LastOp is the id of the operation that last changed the freeze.
	LastOp string `json:"last_op,omitempty"`
	// Audit is the audit log's sequence of the event written (before the
	// record) for that change: the head of the freeze's chain (see Audit).
	// Records written before audited freezes have neither.
	Audit uint64 `json:"audit,omitempty"`
}

// freezeRecord is the stored freeze with its key's revision (0: never set).
type freezeRecord struct {
	Freeze
	rev uint64
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
	kv, keys, err := openBucket(ctx, js, bucket, DefaultCampaignBucket,
		"Ferry campaigns (c.<name>: JSON of migrate.Campaign) and the global freeze", 1, replicas)
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
	seq, err := audit.intendOn(ctx, chainCampaign, ev, 0)
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
	c, _, err := modifyAudited(ctx, audit, chainCampaign, opID,
		func(c *migrate.Campaign) (*uint64, *string, *uint64) { return &c.Audit, &c.LastOp, &c.Revision },
		func() (migrate.Campaign, error) { return s.Get(ctx, name) },
		func(c migrate.Campaign) (migrate.Campaign, migrate.AuditEvent, error) {
			next, ev, err := fn(c)
			ev.Campaign = c.Name
			return next, ev, err
		},
		func(c migrate.Campaign) (migrate.Campaign, error) { return s.Update(ctx, c) },
	)
	return c, err
}

// modifyAudited is the loop behind the audited changes of a record of the
// campaign bucket on chain (hdrChain's value): modify, where each
// compare-and-set (put) is preceded by its intent, fn's event with opID,
// whose previous link is the record's Audit; the record written carries
// the intent's sequence in Audit and opID in LastOp. links returns a
// record's Audit, LastOp and revision. A repeat (the record's LastOp is
// already opID, not "") returns the record and writes nothing; a refusal
// (fn's error) writes no event either. wrote tells a write from a repeat
// (the last attempt's outcome). An opID of an earlier change among
// the record's latest recentOps (a command retried after another change
// of the record) is refused with migrate.ErrConflict: applied again, it
// would undo the change made since.
func modifyAudited[T any](ctx context.Context, audit *Audit, chain, opID string, links func(*T) (auditSeq *uint64, lastOp *string, rev *uint64),
	get func() (T, error), fn func(T) (T, migrate.AuditEvent, error), put func(T) (T, error)) (out T, wrote bool, err error) {
	var repeat bool
	out, err = modify(get,
		func(cur T) (T, error) {
			var zero T
			curAudit, curOp, curRev := links(&cur)
			if repeat = opID != "" && *curOp == opID; repeat {
				return cur, nil
			}
			if stale, err := audit.appliedBefore(ctx, *curAudit, opID, ""); err != nil {
				return zero, err
			} else if stale {
				return zero, fmt.Errorf("migratestore: operation %s was applied before the last change (operation %s): %w", opID, *curOp, migrate.ErrConflict)
			}
			next, ev, err := fn(cur)
			if err != nil {
				return zero, err
			}
			ev.OpID = opID
			seq, err := audit.intendOn(ctx, chain, ev, *curAudit)
			if err != nil {
				return zero, err
			}
			nextAudit, nextOp, nextRev := links(&next)
			*nextAudit, *nextOp, *nextRev = seq, opID, *curRev
			return next, nil
		},
		func(next T) (T, error) {
			if repeat {
				return next, nil
			}
			return put(next)
		},
	)
	return out, err == nil && !repeat, err
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
	r, err := s.getFreeze(ctx)
	return r.Freeze, err
}

// getFreeze reads the freeze with its revision (0 when never set).
func (s *Campaigns) getFreeze(ctx context.Context) (freezeRecord, error) {
	e, err := s.kv.Get(ctx, freezeKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return freezeRecord{}, nil
	}
	if err != nil {
		return freezeRecord{}, fmt.Errorf("migratestore: read freeze: %w", err)
	}
	var f Freeze
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return freezeRecord{}, fmt.Errorf("migratestore: decode freeze: %w", err)
	}
	return freezeRecord{Freeze: f, rev: e.Revision()}, nil
}

// putFreeze writes r if the stored freeze's revision is still r.rev (0:
// if there is none); otherwise it returns an error wrapping
// migrate.ErrConflict.
func (s *Campaigns) putFreeze(ctx context.Context, r freezeRecord) (freezeRecord, error) {
	data, err := json.Marshal(r.Freeze)
	if err != nil {
		return freezeRecord{}, fmt.Errorf("migratestore: encode freeze: %w", err)
	}
	rev, err := putRecord(ctx, s.kv, freezeKey, "freeze", data, r.rev)
	if err != nil {
		return freezeRecord{}, err
	}
	r.rev = rev
	return r, nil
}

// SetFreezeAudited turns the global freeze on or off as f says (On,
// Reason, Actor, Since), writing its audit event (kind migrate.AuditFreeze,
// from and to "on" or "off") to audit first, as the intent of the
// compare-and-set on the freeze's chain (see Audit and modifyAudited): the
// record carries the event's sequence in Audit and opID in LastOp. A
// repeat (the stored LastOp is already opID) returns the stored freeze and
// writes no event.
func (s *Campaigns) SetFreezeAudited(ctx context.Context, audit *Audit, f Freeze, opID string) (Freeze, error) {
	return s.modifyFreeze(ctx, audit, opID, func(cur Freeze) (Freeze, migrate.AuditEvent, error) {
		at := f.Since
		if cur.On && f.On && !cur.Since.IsZero() {
			f.Since = cur.Since // frozen since the first "on", not the latest
		}
		return f, migrate.AuditEvent{At: at, Kind: migrate.AuditFreeze, Actor: f.Actor, Step: -1,
			From: onOff(cur.On), To: onOff(f.On), Reason: f.Reason, Result: migrate.ResultOK}, nil
	})
}

// modifyFreeze is the audited change of the freeze: fn returns the new
// freeze and its event (see modifyAudited).
func (s *Campaigns) modifyFreeze(ctx context.Context, audit *Audit, opID string, fn func(Freeze) (Freeze, migrate.AuditEvent, error)) (Freeze, error) {
	r, _, err := modifyAudited(ctx, audit, chainFreeze, opID,
		func(r *freezeRecord) (*uint64, *string, *uint64) { return &r.Audit, &r.LastOp, &r.rev },
		func() (freezeRecord, error) { return s.getFreeze(ctx) },
		func(cur freezeRecord) (freezeRecord, migrate.AuditEvent, error) {
			f, ev, err := fn(cur.Freeze)
			return freezeRecord{Freeze: f}, ev, err
		},
		func(r freezeRecord) (freezeRecord, error) { return s.putFreeze(ctx, r) },
	)
	return r.Freeze, err
}

// onOff is the freeze's state as its audit events name it.
func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
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
