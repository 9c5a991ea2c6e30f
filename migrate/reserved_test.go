package migrate

import (
	"errors"
	"testing"
)

func TestReservedUserID(t *testing.T) {
	for _, id := range []string{NoticesUser, "Ferry-Notices", "FERRY-NOTICES"} {
		err := CheckUserID(id)
		if !errors.Is(err, ErrReservedUserID) || !errors.Is(err, ErrInvalidUserID) {
			t.Errorf("CheckUserID(%q) = %v, want ErrReservedUserID", id, err)
		}
	}
	for _, id := range []string{"ferry-notices2", "ferry", "notices"} {
		if err := CheckUserID(id); err != nil {
			t.Errorf("CheckUserID(%q) = %v", id, err)
		}
	}
}
