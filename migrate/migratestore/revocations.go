package migratestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferrygw/ferry/migrate"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultRevocationBucket is the KV bucket of legacy device revocations.
const DefaultRevocationBucket = "ferry_revocations"

// revocationKeyPrefix starts a revocation's key: "r.<peer id>".
const revocationKeyPrefix = "r."

// Revocation is the stored record of a legacy device's revocation, the
// gateway's own copy of what it handed the supernode: the signed
// revocation as the authority made it (the JSON of a
// legacywire.Revocation, kept as bytes: the domain store imports no wire
// package), so that a retry hands the supernode the same revocation, with
// its audit link.
type Revocation struct {
	PeerID string          `json:"peer_id"`
	User   string          `json:"user"`
	Signed json.RawMessage `json:"signed"`
	// LastOp is the id of the operation that last revoked the device.
	LastOp string `json:"last_op,omitempty"`
	// Audit is the audit log's sequence of the event written (before the
	// record) for that operation: the head of the revocation's chain (see
	// Audit).
	Audit uint64 `json:"audit,omitempty"`
	// Revision is the key's revision (0: none stored); not stored.
	Revision uint64 `json:"-"`
}

// Revocations keeps one Revocation per legacy device in a JetStream KV
// bucket, every write a compare-and-set on the key's revision.
type Revocations struct {
	kv   jetstream.KeyValue
	keys KeyIndex
}

// NewRevocations creates or opens the revocation bucket (bucket "" means
// DefaultRevocationBucket) with the given replica count (0 means 1).
func NewRevocations(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Revocations, error) {
	kv, keys, err := openBucket(ctx, js, bucket, DefaultRevocationBucket,
		"Ferry legacy device revocations (r.<peer id>: JSON of migratestore.Revocation)", 1, replicas)
	if err != nil {
		return nil, err
	}
	return &Revocations{kv: kv, keys: keys}, nil
}

// errNoRevocation is List's "deleted meanwhile".
var errNoRevocation = errors.New("migratestore: no revocation")

// List returns every stored revocation, by peer id: what a supernode
// starting afresh must know again.
func (s *Revocations) List(ctx context.Context) ([]Revocation, error) {
	return listByPrefix(ctx, s.keys, revocationKeyPrefix, errNoRevocation, func(peer string) (Revocation, error) {
		r, found, err := s.Get(ctx, peer)
		if err == nil && !found {
			err = errNoRevocation
		}
		return r, err
	})
}

// checkPeerKey reports whether peer can be a key token: 1 to 128 ASCII
// letters and digits (a peer id in its base58 or base32 text form).
func checkPeerKey(peer string) error {
	if len(peer) == 0 || len(peer) > 128 {
		return fmt.Errorf("migratestore: peer id %q: 1 to 128 characters: %w", peer, migrate.ErrInvalidDevice)
	}
	for i := 0; i < len(peer); i++ {
		c := peer[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("migratestore: peer id %q: letters and digits only: %w", peer, migrate.ErrInvalidDevice)
		}
	}
	return nil
}

// Get reads the revocation of peer; found is false when there is none.
func (s *Revocations) Get(ctx context.Context, peer string) (r Revocation, found bool, err error) {
	if err := checkPeerKey(peer); err != nil {
		return Revocation{}, false, err
	}
	e, err := s.kv.Get(ctx, revocationKeyPrefix+peer)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Revocation{PeerID: peer}, false, nil
	}
	if err != nil {
		return Revocation{}, false, fmt.Errorf("migratestore: read revocation %s: %w", peer, err)
	}
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return Revocation{}, false, fmt.Errorf("migratestore: decode revocation %s: %w", peer, err)
	}
	if r.PeerID != peer {
		return Revocation{}, false, fmt.Errorf("migratestore: decode revocation %s: record names %q", peer, r.PeerID)
	}
	r.Revision = e.Revision()
	return r, true, nil
}

// put writes r if the stored record's revision is still r.Revision (0:
// none stored); otherwise it returns an error wrapping migrate.ErrConflict.
func (s *Revocations) put(ctx context.Context, r Revocation) (Revocation, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return Revocation{}, fmt.Errorf("migratestore: encode revocation %s: %w", r.PeerID, err)
	}
	rev, err := putRecord(ctx, s.kv, revocationKeyPrefix+r.PeerID, "revocation "+r.PeerID, data, r.Revision)
	if err != nil {
		return Revocation{}, err
	}
	r.Revision = rev
	return r, nil
}

// RevokeAudited stores the revocation of peer that fn makes from the
// stored one (cur.Signed is nil when peer was never revoked), writing fn's
// event to audit first, as the intent of the compare-and-set on the
// revocation's chain (see Audit and modifyAudited): the record carries the
// event's sequence in Audit and opID in LastOp. A repeat (the record's
// LastOp is already opID, not "") returns the record and writes nothing,
// so the caller hands the same signed revocation on again; a refusal (fn's
// error) writes no event either.
func (s *Revocations) RevokeAudited(ctx context.Context, audit *Audit, peer, opID string, fn func(cur Revocation) (Revocation, migrate.AuditEvent, error)) (Revocation, error) {
	if err := checkPeerKey(peer); err != nil {
		return Revocation{}, err
	}
	r, _, err := modifyAudited(ctx, audit, revocationChain(peer), opID,
		func(r *Revocation) (*uint64, *string, *uint64) { return &r.Audit, &r.LastOp, &r.Revision },
		func() (Revocation, error) {
			r, _, err := s.Get(ctx, peer)
			return r, err
		},
		func(cur Revocation) (Revocation, migrate.AuditEvent, error) {
			next, ev, err := fn(cur)
			next.PeerID = peer
			if err == nil && len(next.Signed) == 0 {
				err = fmt.Errorf("migratestore: revocation %s: nothing signed", peer)
			}
			return next, ev, err
		},
		func(r Revocation) (Revocation, error) { return s.put(ctx, r) },
	)
	return r, err
}
