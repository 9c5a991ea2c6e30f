package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
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
	c := TakeCensus(st.Snapshot(), nil, "", 0, policyT0)
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
	ios := TakeCensus(st.Snapshot(), nil, "ios", 0, policyT0)
	if ios.Devices != 29 || len(ios.Rows) == 0 || ios.Rows[0].Band != "2.0" {
		t.Fatalf("ios census %+v", ios)
	}
	if stale := TakeCensus(st.Snapshot(), nil, "", time.Hour, policyT0.Add(2*time.Hour)); stale.Devices != 0 {
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

			// The report (`versions report`: DryRun's pending and enforced)
			// taken at every moment of the schedule says what the
			// enforcement points do at that moment: enforced is exactly the
			// known devices refused, pending the rest of the affected, and
			// every warned device is told, with the date of the next stage.
			for _, now := range []time.Time{day(0), day(1), day(2), day(3), day(4), day(4).Add(6 * time.Hour),
				day(4).Add(12 * time.Hour), day(4).Add(18 * time.Hour), day(5), day(6), day(7)} {
				rep := DryRun(sn, &p, 0, now)
				refused, warned, byPhase := refusedAt(now, true)
				if rep.AffectedDevices != dry.AffectedDevices || rep.Enforced != refused || rep.Pending != dry.AffectedDevices-refused ||
					rep.ByOutcome[VersionWarn] != warned {
					t.Fatalf("%s (%s): report affected %d pending %d enforced %d warned %d; enforcement refuses %d known devices and warns %d",
						now.Format(time.RFC3339), rep.Stage, rep.AffectedDevices, rep.Pending, rep.Enforced, rep.ByOutcome[VersionWarn], refused, warned)
				}
				if scoped && byPhase[PhaseLegacy]+byPhase[PhaseShadow] != 0 {
					t.Fatalf("%s: unmigrated devices refused under a migrated-only scope: %v", now.Format(time.RFC3339), byPhase)
				}
				eachUser(sn, func(u *User) {
					for _, d := range u.Devices {
						dec := Decide(&p, u.Phase, ClientDeviceOf(d, true), now)
						if dec.Tells(true) && (dec.NextStage == "" || !strings.Contains(dec.Notice, dec.NextStageAt.UTC().Format("2006-01-02 15:04"))) {
							t.Fatalf("%s: %s is admitted with notice %q, which does not date the next stage %s", now.Format(time.RFC3339), d.ID, dec.Notice, dec.NextStage)
						}
						if dec.Outcome == VersionWarn && !dec.Tells(false) {
							t.Fatalf("%s: %s warned without a notice", now.Format(time.RFC3339), d.ID)
						}
					}
				})
			}
		})
	}
}

func censusDev(user, id string, seen time.Time) CensusDevice {
	return CensusDevice{User: user, ID: id, Source: SourceLegacy, Platform: "android", ClientVersion: "5.1.0",
		Protocol: 2, Capabilities: []string{"chat1", "chat2"}, LastSeen: seen}
}

// TestDeviceCensusPersist checks when a sighting asks to be written: a new
// device, a changed declaration, or a LastSeen past the resolution since the
// last write; never for a repeat within it, and never moving LastSeen back.
func TestDeviceCensusPersist(t *testing.T) {
	c := NewDeviceCensus(10, 10*time.Minute)
	see := func(d CensusDevice) bool {
		t.Helper()
		p, err := c.See(d)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	d := censusDev("alice", "p1", policyT0)
	if !see(d) {
		t.Fatal("a new device does not ask to be persisted")
	}
	if !see(d) {
		t.Fatal("a device never persisted does not ask again")
	}
	c.Persisted("alice", "p1", d.LastSeen)
	changed := func(f func(*CensusDevice)) CensusDevice {
		x := censusDev("alice", "p1", policyT0)
		f(&x)
		return x
	}
	for _, tc := range []struct {
		name string
		d    CensusDevice
		want bool
	}{
		{"repeat", censusDev("alice", "p1", policyT0.Add(time.Minute)), false},
		{"past resolution", censusDev("alice", "p1", policyT0.Add(12*time.Minute)), true},
		{"new version", changed(func(x *CensusDevice) { x.ClientVersion = "5.2.0" }), true},
		{"new protocol", changed(func(x *CensusDevice) { x.Protocol = 1 }), true},
		{"new caps", changed(func(x *CensusDevice) { x.Capabilities = []string{"chat1"} }), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := see(tc.d); got != tc.want {
				t.Fatalf("See = %v, want %v", got, tc.want)
			}
			e, _ := c.Get("alice", "p1")
			c.Persisted("alice", "p1", e.LastSeen) // as the recorder does after a write
			if see(e) {
				t.Fatal("the entry just persisted asks to be written again")
			}
		})
	}
	got, ok := c.Get("alice", "p1")
	if !ok || !got.LastSeen.Equal(policyT0.Add(12*time.Minute)) || got.Capabilities[0] != "chat1" {
		t.Fatalf("entry %+v: want the latest declaration and LastSeen not moved back", got)
	}
	if _, err := c.See(CensusDevice{ID: "x", LastSeen: policyT0}); !errors.Is(err, ErrInvalidCensusDevice) {
		t.Fatalf("See without a user: %v", err)
	}
	if b := (CensusDevice{Source: SourceCloud}).ProtocolBand(); b != "cloud/unknown" {
		t.Fatalf("band %q", b)
	}
}

// TestDeviceCensusEvicts fills a census past its cap in shuffled order and
// checks that the least recently seen devices are the ones evicted, counted.
func TestDeviceCensusEvicts(t *testing.T) {
	const max, n = 50, 80
	c := NewDeviceCensus(max, time.Minute)
	for _, i := range rand.New(rand.NewPCG(1, 2)).Perm(n) {
		if _, err := c.See(censusDev(fmt.Sprintf("u%02d", i), "d", policyT0.Add(time.Duration(i)*time.Second))); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != max {
		t.Fatalf("census holds %d devices, cap %d", c.Len(), max)
	}
	if c.Evicted() != n-max {
		t.Fatalf("evicted %d, want %d", c.Evicted(), n-max)
	}
	for i := range n {
		_, ok := c.Get(fmt.Sprintf("u%02d", i), "d")
		if want := i >= n-max; ok != want {
			t.Errorf("u%02d kept=%v, want %v (least recently seen go first)", i, ok, want)
		}
	}
	// Seeing the oldest device again makes it recent: the next one out is
	// the device after it.
	for _, d := range []CensusDevice{censusDev("u30", "d", policyT0.Add(time.Hour)), censusDev("new", "d", policyT0.Add(2*time.Hour))} {
		if _, err := c.See(d); err != nil {
			t.Fatal(err)
		}
	}
	_, kept30 := c.Get("u30", "d")
	_, kept31 := c.Get("u31", "d")
	if !kept30 || kept31 || c.Evicted() != n-max+1 {
		t.Fatalf("after refreshing u30: u30 kept=%v, u31 kept=%v, evicted %d", kept30, kept31, c.Evicted())
	}
	if err := c.Load(censusDev("u00", "d", policyT0.Add(-time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("u00", "d"); ok || c.Evicted() != n-max+2 {
		t.Fatalf("a loaded entry older than every other one stays: evicted %d", c.Evicted())
	}
}

func TestCensusWithDevices(t *testing.T) {
	st := versionPopulation(t, 20)
	dc := NewDeviceCensus(0, time.Minute)
	for i := range 10 {
		d := CensusDevice{User: fmt.Sprintf("u%04d", i), ID: fmt.Sprintf("dev%04d", i), Source: SourceLegacy, Platform: "android",
			ClientVersion: "x", Protocol: 1 + i%2, Capabilities: []string{"chat1"}, LastSeen: policyT0}
		if _, err := dc.See(d); err != nil {
			t.Fatal(err)
		}
	}
	c := TakeCensus(st.Snapshot(), dc, "android", 0, policyT0)
	protocols, caps, unseen := map[string]int{}, 0, 0
	for _, r := range c.Rows {
		for b, n := range r.Protocols {
			protocols[b] += n
		}
		caps += r.Capabilities["chat1"]
		unseen += r.Unseen
	}
	if protocols["legacy/1"] != 5 || protocols["legacy/2"] != 5 || caps != 10 || unseen != 10 {
		t.Fatalf("protocols %v, chat1 %d, unseen %d; want 5+5, 10, 10", protocols, caps, unseen)
	}
}

// FuzzParseCensusDevice checks that what the parser accepts is a valid
// entry the census takes, and that it round-trips through JSON.
func FuzzParseCensusDevice(f *testing.F) {
	b, _ := json.Marshal(censusDev("alice", "p1", policyT0))
	f.Add(b)
	f.Add([]byte(`{"user":"a","id":"b","protocol":-1,"last_seen":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"user":"a","id":"b"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseCensusDevice(b)
		if err != nil {
			return
		}
		if _, err := NewDeviceCensus(1, time.Minute).See(d); err != nil {
			t.Fatalf("parsed entry refused by the census: %v", err)
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseCensusDevice(again); err != nil {
			t.Fatalf("entry does not round-trip: %v", err)
		}
	})
}

// TestCensusBounded checks that a census for a metric keeps the largest
// (platform, band) pairs and folds the rest, and self-declared platforms
// that cannot be a label, into "other" without losing a device.
func TestCensusBounded(t *testing.T) {
	c := Census{Rows: []CensusRow{
		{Platform: "android", Band: "5.1", Phase: PhaseLegacy, Devices: 50},
		{Platform: "android", Band: "5.1", Phase: PhaseCloud, Devices: 10},
		{Platform: "android", Band: "4.2", Phase: PhaseLegacy, Devices: 5},
		{Platform: "ios", Band: "2.0", Phase: PhaseLegacy, Devices: 30},
		{Platform: "Evil Platform{}", Band: "9.9", Phase: PhaseLegacy, Devices: 100},
		{Platform: "ios", Band: "1.0", Phase: PhaseShadow, Devices: 1},
	}}
	rows := c.Bounded(2)
	got := map[string]int{}
	sum := 0
	for _, r := range rows {
		got[r.Platform+"/"+r.Band+"/"+string(r.Phase)] = r.Devices
		sum += r.Devices
	}
	want := map[string]int{"android/5.1/legacy": 50, "android/5.1/cloud": 10, "ios/2.0/legacy": 30, "other/other/legacy": 105, "other/other/shadow": 1}
	if len(got) != len(want) || sum != 196 {
		t.Fatalf("rows %v, want %v (196 devices)", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s = %d, want %d", k, got[k], n)
		}
	}
}
