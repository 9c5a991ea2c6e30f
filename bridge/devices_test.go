package bridge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

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

// TestProbeAllBounded: a batch of looks runs every user once, never more
// than the workers at a time, and stops early when its context ends.
func TestProbeAllBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		users := make([]string, 200)
		for i := range users {
			users[i] = fmt.Sprintf("u%d", i)
		}
		var mu sync.Mutex
		seen, inFlight, most := map[string]int{}, 0, 0
		look := func(_ context.Context, u string) {
			mu.Lock()
			seen[u]++
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // a lookup and a history read
			mu.Lock()
			inFlight--
			mu.Unlock()
		}
		probeAll(t.Context(), slices.Clone(users), 4, 100*time.Millisecond, look)
		if len(seen) != len(users) || most > 4 || most < 2 {
			t.Fatalf("looked at %d of %d users, at most %d at a time; want all, 2 to 4 at a time", len(seen), len(users), most)
		}
		for u, n := range seen {
			if n != 1 {
				t.Fatalf("%s looked at %d times", u, n)
			}
		}

		ctx, cancel := context.WithCancel(t.Context())
		clear(seen)
		go func() {
			time.Sleep(200 * time.Millisecond)
			cancel()
		}()
		probeAll(ctx, slices.Clone(users), 4, 100*time.Millisecond, look)
		if len(seen) == 0 || len(seen) >= len(users) {
			t.Fatalf("a cancelled batch looked at %d of %d users", len(seen), len(users))
		}
	})
}
