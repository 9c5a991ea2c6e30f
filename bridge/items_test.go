package bridge

import (
	"strconv"
	"testing"
)

// TestGroupNameCacheIsBounded checks that the group-name cache never holds
// more than maxGroupNames names.
func TestGroupNameCacheIsBounded(t *testing.T) {
	l := &ledger{groups: map[string]string{}}
	for i := range 2*maxGroupNames + 1 {
		l.setGroupName("g"+strconv.Itoa(i), "name")
		if len(l.groups) > maxGroupNames {
			t.Fatalf("cache holds %d names, cap %d", len(l.groups), maxGroupNames)
		}
	}
	if n, ok := l.groupName("g" + strconv.Itoa(2*maxGroupNames)); !ok || n != "name" {
		t.Fatal("the newest name is not cached")
	}
}
