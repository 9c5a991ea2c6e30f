package migrate

import (
	"bytes"
	"testing"

	"github.com/hashicorp/go-memdb"
)

// memdbUserIndexes are the reflective indexers the users table used before
// userIDIndex and phaseIDIndex: the keys must stay the same.
var (
	memdbIDIndex    = &memdb.StringFieldIndex{Field: "ID"}
	memdbPhaseIndex = &memdb.CompoundIndex{Indexes: []memdb.Indexer{
		&memdb.StringFieldIndex{Field: "Phase"},
		&memdb.StringFieldIndex{Field: "ID"},
	}}
)

// checkUserIndexes compares both indexers' keys for one record and for
// lookups by phase and id.
func checkUserIndexes(t *testing.T, phase, id string) {
	t.Helper()
	u := &User{ID: id, Phase: Phase(phase)}
	same := func(what string, ok1 bool, k1 []byte, err1 error, ok2 bool, k2 []byte, err2 error) {
		t.Helper()
		if ok1 != ok2 || !bytes.Equal(k1, k2) || (err1 == nil) != (err2 == nil) {
			t.Errorf("%s of (%q, %q): ours %v %q %v, memdb's %v %q %v", what, phase, id, ok1, k1, err1, ok2, k2, err2)
		}
	}
	ok1, k1, err1 := userIDIndex{}.FromObject(u)
	ok2, k2, err2 := memdbIDIndex.FromObject(u)
	same("id FromObject", ok1, k1, err1, ok2, k2, err2)
	ok1, k1, err1 = phaseIDIndex{}.FromObject(u)
	ok2, k2, err2 = memdbPhaseIndex.FromObject(u)
	same("phase FromObject", ok1, k1, err1, ok2, k2, err2)

	k1, err1 = userIDIndex{}.FromArgs(id)
	k2, err2 = memdbIDIndex.FromArgs(id)
	same("id FromArgs", true, k1, err1, true, k2, err2)
	k1, err1 = userIDIndex{}.PrefixFromArgs(id)
	k2, err2 = memdbIDIndex.PrefixFromArgs(id)
	same("id PrefixFromArgs", true, k1, err1, true, k2, err2)
	k1, err1 = phaseIDIndex{}.FromArgs(phase, id)
	k2, err2 = memdbPhaseIndex.FromArgs(phase, id)
	same("phase FromArgs", true, k1, err1, true, k2, err2)
	k1, err1 = phaseIDIndex{}.PrefixFromArgs(phase)
	k2, err2 = memdbPhaseIndex.PrefixFromArgs(phase)
	same("phase PrefixFromArgs(phase)", true, k1, err1, true, k2, err2)
	k1, err1 = phaseIDIndex{}.PrefixFromArgs(phase, id)
	k2, err2 = memdbPhaseIndex.PrefixFromArgs(phase, id)
	same("phase PrefixFromArgs(phase, id)", true, k1, err1, true, k2, err2)
}

func TestUserIndexesMatchMemdb(t *testing.T) {
	for _, c := range []struct{ phase, id string }{
		{"legacy", "alice"},
		{"cloud", "u-0000001"},
		{"", "bob"},
		{"shadow", ""},
		{"", ""},
		{"held", "a\x00b"},
		{"finalized", "ünïcode"},
	} {
		checkUserIndexes(t, c.phase, c.id)
	}

	// Wrong arguments fail on both sides.
	for _, args := range [][]any{{}, {1}, {"a", "b"}} {
		_, err1 := userIDIndex{}.FromArgs(args...)
		_, err2 := memdbIDIndex.FromArgs(args...)
		if err1 == nil || err2 == nil {
			t.Errorf("id FromArgs%v: ours %v, memdb's %v; want errors", args, err1, err2)
		}
	}
	for _, args := range [][]any{{}, {"a"}, {"a", 2}, {"a", "b", "c"}} {
		_, err1 := phaseIDIndex{}.FromArgs(args...)
		_, err2 := memdbPhaseIndex.FromArgs(args...)
		if err1 == nil || err2 == nil {
			t.Errorf("phase FromArgs%v: ours %v, memdb's %v; want errors", args, err1, err2)
		}
	}
	if _, _, err := (userIDIndex{}).FromObject(User{ID: "x"}); err == nil {
		t.Error("id FromObject of a User value (not a pointer): no error")
	}
}

// FuzzUserIndexes holds the indexers' keys to memdb's for any phase and id.
//
//	go test ./migrate/ -run '^$' -fuzz FuzzUserIndexes -fuzztime 30s
func FuzzUserIndexes(f *testing.F) {
	f.Add("legacy", "alice")
	f.Add("", "x")
	f.Add("cloud", "")
	f.Fuzz(func(t *testing.T, phase, id string) {
		checkUserIndexes(t, phase, id)
	})
}
