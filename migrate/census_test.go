package migrate

import (
	"fmt"
	"testing"
	"time"
)

// versionPopulation puts n users in st, spread over phases, each with one android
// device of a mixed version.
func versionPopulation(t testing.TB, n int) *State {
	t.Helper()
	st, err := NewState()
	if err != nil {
		t.Fatal(err)
	}
	phases := []Phase{PhaseLegacy, PhaseShadow, PhaseCloud, PhaseFinalized}
	versions := []string{"4.1", "4.8.2", "5.0", "5.3.1", "garbage"}
	var users []User
	for i := range n {
		u := NewUser(fmt.Sprintf("u%04d", i), policyT0)
		u.Phase = phases[i%len(phases)]
		u.Devices = []Device{{ID: fmt.Sprintf("dev%04d", i), Platform: "android", ClientVersion: versions[i%len(versions)], LastSeen: policyT0}}
		if i%7 == 0 {
			u.Devices = append(u.Devices, Device{ID: fmt.Sprintf("ios%04d", i), Platform: "ios", ClientVersion: "2.0", LastSeen: policyT0})
		}
		users = append(users, u)
	}
	st.Put(users...)
	return st
}

func TestCensus(t *testing.T) {
	st := versionPopulation(t, 200)
	c := TakeCensus(st.Snapshot(), "", 0, policyT0)
	if c.Users != 200 || c.Devices != 200+29 {
		t.Fatalf("census users=%d devices=%d, want 200 and 229", c.Users, c.Devices)
	}
	sum := 0
	for _, r := range c.Rows {
		sum += r.Devices
	}
	if sum != c.Devices {
		t.Fatalf("rows add up to %d devices, want %d", sum, c.Devices)
	}
	ios := TakeCensus(st.Snapshot(), "ios", 0, policyT0)
	if ios.Devices != 29 || len(ios.Rows) == 0 || ios.Rows[0].Band != "2.0" {
		t.Fatalf("ios census %+v", ios)
	}
	if stale := TakeCensus(st.Snapshot(), "", time.Hour, policyT0.Add(2*time.Hour)); stale.Devices != 0 {
		t.Fatalf("devices not seen for two hours counted as active: %d", stale.Devices)
	}
}

// TestScheduleWithFakeClock walks a population through a full schedule: the
// dry run's affected count is exactly what is refused once retired, the
// warning stage refuses nobody, a soft block refuses only new devices, the
// hard block spreads over its window, and with the scope limited to migrated
// users nobody in legacy is ever refused.
func TestScheduleWithFakeClock(t *testing.T) {
	st := versionPopulation(t, 400)
	sn := st.Snapshot()
	for _, scoped := range []bool{false, true} {
		t.Run(fmt.Sprintf("scoped=%v", scoped), func(t *testing.T) {
			p := testPolicy()
			p.RequiredCaps = nil
			if scoped {
				p.Scope = []Phase{PhaseCloud, PhaseFinalized}
			}
			dry := DryRun(sn, &p, 0, day(0))
			if dry.Stage != StageDryRun || dry.Enforced != 0 || dry.Pending != dry.AffectedDevices || dry.AffectedDevices == 0 {
				t.Fatalf("dry run %+v", dry)
			}
			if scoped && (dry.DevicesByPhase[PhaseLegacy] != 0 || dry.DevicesByPhase[PhaseShadow] != 0) {
				t.Fatalf("scoped dry run counts unmigrated users: %v", dry.DevicesByPhase)
			}
			refusedAt := func(now time.Time, known bool) (refused, warned int, byPhase map[Phase]int) {
				byPhase = map[Phase]int{}
				eachUser(sn, func(u *User) {
					for _, d := range u.Devices {
						dec := Decide(&p, u.Phase, ClientDeviceOf(d, known), now)
						if dec.Refuses(known) {
							refused++
							byPhase[u.Phase]++
						}
						if dec.Outcome == VersionWarn {
							warned++
						}
					}
				})
				return refused, warned, byPhase
			}
			if r, w, _ := refusedAt(day(2), false); r != 0 || w != dry.AffectedDevices {
				t.Fatalf("warning stage: refused %d warned %d, want 0 and %d", r, w, dry.AffectedDevices)
			}
			if r, _, _ := refusedAt(day(3), true); r != 0 {
				t.Fatalf("soft block refused %d known devices", r)
			}
			if r, _, _ := refusedAt(day(3), false); r != dry.AffectedDevices {
				t.Fatalf("soft block refused %d new devices, want %d", r, dry.AffectedDevices)
			}
			mid, _, _ := refusedAt(day(4).Add(12*time.Hour), true)
			if mid == 0 || mid == dry.AffectedDevices {
				t.Fatalf("halfway through the jitter window %d of %d refused: not spread", mid, dry.AffectedDevices)
			}
			r, _, byPhase := refusedAt(day(7), true)
			if r != dry.AffectedDevices {
				t.Fatalf("retired: refused %d, dry run said %d", r, dry.AffectedDevices)
			}
			for ph, n := range dry.DevicesByPhase {
				if byPhase[ph] != n {
					t.Fatalf("phase %s: refused %d, dry run said %d", ph, byPhase[ph], n)
				}
			}
			if scoped && byPhase[PhaseLegacy] != 0 {
				t.Fatalf("%d legacy devices refused under a migrated-only scope", byPhase[PhaseLegacy])
			}
			if late := DryRun(sn, &p, 0, day(7)); late.Enforced != dry.AffectedDevices || late.Pending != 0 {
				t.Fatalf("report after retirement %+v", late)
			}
		})
	}
}
