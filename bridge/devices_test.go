package bridge

import (
	"errors"
	"testing"

	"github.com/ferrygw/ferry/migrate"
)

func TestCheckOwnDevice(t *testing.T) {
	const phone = "12D3KooWGzBkMkHBnWgHqkfvt9gSjK7PrUB8V5q4TfGqTEBZtC4S"
	user := func(phase, prior migrate.Phase, devices ...string) migrate.User {
		u := migrate.User{ID: "vera", Phase: phase, Prior: prior}
		for _, d := range devices {
			u.Devices = append(u.Devices, migrate.Device{ID: d, Platform: "desktop"})
		}
		return u
	}
	for _, tc := range []struct {
		name   string
		u      migrate.User
		device string
		want   error
	}{
		{"cloud, device on record", user(migrate.PhaseCloud, "", "web", phone), phone, nil},
		{"held on the way back from cloud", user(migrate.PhaseHeld, migrate.PhaseCloud, phone), phone, nil},
		{"legacy home", user(migrate.PhaseReady, "", phone), phone, ErrOverlayHome},
		{"finalized", user(migrate.PhaseFinalized, "", phone), phone, ErrFinalized},
		{"held after finalized", user(migrate.PhaseHeld, migrate.PhaseFinalized, phone), phone, ErrFinalized},
		{"not on record", user(migrate.PhaseCloud, "", "web"), phone, ErrDeviceNotOnRecord},
		{"a cloud device id", user(migrate.PhaseCloud, "", "web"), "web", ErrDeviceNotOnRecord},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckOwnDevice(tc.u, tc.device)
			if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Errorf("CheckOwnDevice = %v, want %v", err, tc.want)
			}
		})
	}
}
