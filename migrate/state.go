package migrate

import (
	"fmt"
	"sync"

	"github.com/hashicorp/go-memdb"
)

// maxTxnObjects caps the objects one memdb write transaction changes: larger
// transactions fall onto a slow path in memdb's radix tree (MACHINE.md).
const maxTxnObjects = 500

// Table and index names of the memdb schema.
const (
	tableUsers  = "users"
	tableCounts = "phase_counts"

	// indexID is the unique index of users by id.
	indexID = "id"
	// indexPhase indexes users by (phase, id), so that one phase's users can
	// be listed in id order from any point. Query it with "phase_prefix" and
	// the phase alone.
	indexPhase = "phase"
)

// phaseCount is the number of users in one phase, kept in its own table so
// that counts are read from the same snapshot as the records, in O(1).
type phaseCount struct {
	Phase string
	N     int
}

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		tableUsers: {
			Name: tableUsers,
			Indexes: map[string]*memdb.IndexSchema{
				indexID:    {Name: indexID, Unique: true, Indexer: userIDIndex{}},
				indexPhase: {Name: indexPhase, Unique: true, Indexer: phaseIDIndex{}},
			},
		},
		tableCounts: {
			Name: tableCounts,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Phase"}},
			},
		},
	}}
}

// State is the in-memory, indexed state of the migration: the latest known
// record of every user, in go-memdb. Every node materializes it from the
// store's watch; readers take a Snapshot, which is consistent and lock-free.
//
// Stored records are never mutated: a change inserts a fresh copy. Records
// that leave State are always copies the caller may change.
type State struct {
	db *memdb.MemDB

	// wmu serializes writers from their transaction through their listener
	// calls, so that listeners see changes in commit order.
	wmu sync.Mutex

	lmu       sync.Mutex
	onChange  []func(prev *User, cur User)
	onRemoved []func(prev User)
}

// NewState returns an empty State.
func NewState() (*State, error) {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, fmt.Errorf("migrate: memdb schema: %w", err)
	}
	txn := db.Txn(true)
	for _, p := range phases {
		if err := txn.Insert(tableCounts, &phaseCount{Phase: string(p)}); err != nil {
			txn.Abort()
			return nil, fmt.Errorf("migrate: init counts: %w", err)
		}
	}
	txn.Commit()
	return &State{db: db}, nil
}

// OnChange registers fn to be called for every record a Put changes, with the
// record it replaced (nil for a new user) and the new one. Calls are made
// synchronously from the goroutine that called Put, after the commit, in
// commit order and in registration order; fn receives copies. fn must not
// call Put or Remove, and should be quick: it delays every writer.
func (s *State) OnChange(fn func(prev *User, cur User)) {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	s.onChange = append(s.onChange, fn)
}

// OnRemove registers fn to be called, like OnChange listeners, with the
// record that each Remove took out of State.
func (s *State) OnRemove(fn func(prev User)) {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	s.onRemoved = append(s.onRemoved, fn)
}

func (s *State) listeners() ([]func(*User, User), []func(User)) {
	s.lmu.Lock()
	defer s.lmu.Unlock()
	return s.onChange, s.onRemoved
}

// change is one record replaced by a Put, for the listeners.
type change struct {
	prev *User
	cur  *User
}

// Put stores each record that is new to State or whose Revision is greater
// than the stored one's; others are stale and ignored, so the same revision
// may arrive from a writer and from the watch in either order. Records with an
// invalid id or phase are ignored too: stores validate what they decode.
// Changes are committed in transactions of at most 500 records; after each
// commit the OnChange listeners are called for the records it changed.
func (s *State) Put(users ...User) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(users) > 0 {
		n := min(len(users), maxTxnObjects)
		s.putBatch(users[:n])
		users = users[n:]
	}
}

func (s *State) putBatch(users []User) {
	txn := s.db.Txn(true)
	var changes []change
	delta := make(map[Phase]int)
	for i := range users {
		u := &users[i]
		if CheckUserID(u.ID) != nil || !u.Phase.Valid() {
			continue
		}
		raw, err := txn.First(tableUsers, indexID, u.ID)
		if err != nil {
			panic(fmt.Sprintf("migrate: memdb lookup: %v", err)) // schema bug
		}
		var prev *User
		if raw != nil {
			prev = raw.(*User)
			if u.Revision <= prev.Revision {
				continue
			}
			delta[prev.Phase]--
		}
		cur := u.Clone()
		if err := txn.Insert(tableUsers, &cur); err != nil {
			panic(fmt.Sprintf("migrate: memdb insert: %v", err)) // schema bug
		}
		delta[cur.Phase]++
		changes = append(changes, change{prev: prev, cur: &cur})
	}
	if len(changes) == 0 {
		txn.Abort()
		return
	}
	applyCounts(txn, delta)
	txn.Commit()

	onChange, _ := s.listeners()
	for _, c := range changes {
		for _, fn := range onChange {
			var prev *User
			if c.prev != nil {
				p := c.prev.Clone()
				prev = &p
			}
			fn(prev, c.cur.Clone())
		}
	}
}

// applyCounts adds delta to the stored phase counts inside txn.
func applyCounts(txn *memdb.Txn, delta map[Phase]int) {
	for p, d := range delta {
		if d == 0 {
			continue
		}
		raw, err := txn.First(tableCounts, indexID, string(p))
		if err != nil || raw == nil {
			panic(fmt.Sprintf("migrate: phase count %s missing: %v", p, err)) // NewState inserts them all
		}
		next := &phaseCount{Phase: string(p), N: raw.(*phaseCount).N + d}
		if err := txn.Insert(tableCounts, next); err != nil {
			panic(fmt.Sprintf("migrate: memdb insert: %v", err))
		}
	}
}

// Remove takes the user's record out of State, if it is there, and then
// calls the OnRemove listeners.
func (s *State) Remove(id string) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	txn := s.db.Txn(true)
	raw, err := txn.First(tableUsers, indexID, id)
	if err != nil {
		panic(fmt.Sprintf("migrate: memdb lookup: %v", err))
	}
	if raw == nil {
		txn.Abort()
		return
	}
	prev := raw.(*User)
	if err := txn.Delete(tableUsers, prev); err != nil {
		panic(fmt.Sprintf("migrate: memdb delete: %v", err))
	}
	applyCounts(txn, map[Phase]int{prev.Phase: -1})
	txn.Commit()

	_, onRemove := s.listeners()
	for _, fn := range onRemove {
		fn(prev.Clone())
	}
}

// Snapshot returns a consistent, read-only view of State as of now. Taking
// and reading one takes no lock and never blocks writers.
func (s *State) Snapshot() *Snapshot {
	return &Snapshot{txn: s.db.Txn(false)}
}

// Get returns the user's record, if State has it.
func (s *State) Get(id string) (User, bool) {
	return s.Snapshot().Get(id)
}

// Snapshot is a consistent view of State at one moment (a memdb read
// transaction). It is safe for concurrent use.
type Snapshot struct {
	txn *memdb.Txn
}

// Get returns the user's record, if the snapshot has it.
func (sn *Snapshot) Get(id string) (User, bool) {
	raw, err := sn.txn.First(tableUsers, indexID, id)
	if err != nil || raw == nil {
		return User{}, false
	}
	return raw.(*User).Clone(), true
}

// List returns users in ascending id order, starting after the id after (""
// for the first page), at most limit of them (0 or less: all). An empty phase
// lists every phase; otherwise only that phase's users.
func (sn *Snapshot) List(phase Phase, after string, limit int) []User {
	var (
		it  memdb.ResultIterator
		err error
	)
	if phase == "" {
		it, err = sn.txn.LowerBound(tableUsers, indexID, after)
	} else {
		it, err = sn.txn.LowerBound(tableUsers, indexPhase, string(phase), after)
	}
	if err != nil {
		panic(fmt.Sprintf("migrate: memdb list: %v", err)) // schema bug
	}
	var out []User
	for raw := it.Next(); raw != nil; raw = it.Next() {
		u := raw.(*User)
		if phase != "" && u.Phase != phase {
			break
		}
		if u.ID == after {
			continue
		}
		out = append(out, u.Clone())
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out
}

// CountByPhase returns how many users are in each phase; every phase is a
// key, with zero when nobody is in it.
func (sn *Snapshot) CountByPhase() map[Phase]int {
	out := make(map[Phase]int, len(phases))
	for _, p := range phases {
		out[p] = sn.count(p)
	}
	return out
}

// Count returns how many users are in the phase.
func (sn *Snapshot) Count(p Phase) int {
	return sn.count(p)
}

// Len returns the number of users in the snapshot.
func (sn *Snapshot) Len() int {
	n := 0
	for _, p := range phases {
		n += sn.count(p)
	}
	return n
}

func (sn *Snapshot) count(p Phase) int {
	raw, err := sn.txn.First(tableCounts, indexID, string(p))
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*phaseCount).N
}
