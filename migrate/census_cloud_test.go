package migrate

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// censusMap is a CensusSource over fixed entries.
type censusMap map[string]CensusDevice

func (m censusMap) Get(user, device string) (CensusDevice, bool) {
	d, ok := m[user+"/"+device]
	return d, ok
}

// both is a ShadowSource that is also a CensusSource, as the gateway's is.
type both struct {
	censusMap
}

func (both) Shadow(string) (ShadowReport, bool) { return ShadowReport{}, false }

func TestCloudCapability(t *testing.T) {
	for _, tc := range []struct {
		name           string
		d              CensusDevice
		capable, known bool
	}{
		{"cloud hello", CensusDevice{Source: SourceCloud, Protocol: 8}, true, true},
		{"legacy chat v1", CensusDevice{Source: SourceLegacy, Protocol: 1, Capabilities: []string{"chat3"}}, false, true},
		{"legacy chat v2", CensusDevice{Source: SourceLegacy, Protocol: 2}, true, true},
		{"bridge chat v3", CensusDevice{Source: SourceBridge, Protocol: 3}, true, true},
		{"protocol unknown, v3 claimed", CensusDevice{Source: SourceLegacy, Capabilities: []string{"chat3"}, ClientVersion: "9.9"}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capable, known, missing := tc.d.CloudCapability()
			if capable != tc.capable || known != tc.known {
				t.Fatalf("capable %v known %v, want %v %v", capable, known, tc.capable, tc.known)
			}
			if (missing != "") != (known && !capable) {
				t.Fatalf("missing %q", missing)
			}
		})
	}
}

// TestDeviceGateReadsCensus: the campaign's device gate judges a device by
// the protocol the census saw it speak, and by its declared version only
// when the census never saw it speak.
func TestDeviceGateReadsCensus(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	g := Gates{MinVersion: map[string]string{"android": "5.0"}, ActiveWithin: Duration(30 * 24 * time.Hour)}
	dev := func(id, version string) Device {
		return Device{ID: id, Platform: "android", ClientVersion: version, LastSeen: now.Add(-time.Hour)}
	}
	seen := func(id string, src string, proto int) CensusDevice {
		return CensusDevice{User: "u", ID: id, Source: src, Platform: "android", Protocol: proto, LastSeen: now}
	}
	dc := censusMap{
		"u/new-but-v1": seen("new-but-v1", SourceLegacy, 1),
		"u/old-but-v3": seen("old-but-v3", SourceLegacy, 3),
		"u/unknown":    seen("unknown", SourceLegacy, 0),
		"u/web":        seen("web", SourceCloud, 8),
	}
	for _, tc := range []struct {
		name string
		dev  Device
		want string
	}{
		{"declares 5.2, speaks chat v1", dev("new-but-v1", "5.2"), GateDeviceCapability},
		{"declares 4.0, speaks chat v3", dev("old-but-v3", "4.0"), ""},
		{"cloud device, old version", dev("web", "1.0"), ""},
		{"never seen, declared 5.1", dev("unseen", "5.1"), ""},
		{"never seen, declared 4.9", dev("unseen", "4.9"), GateDeviceVersion},
		{"protocol unknown, declared 4.9", dev("unknown", "4.9"), GateDeviceVersion},
		{"protocol unknown, declared 5.0", dev("unknown", "5.0"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := User{ID: "u", Phase: PhaseShadow, Devices: []Device{tc.dev}}
			if got := g.CheckDevices(&u, now, dc); got != tc.want {
				t.Fatalf("CheckDevices = %q, want %q", got, tc.want)
			}
		})
	}
	idle := User{ID: "u", Devices: []Device{{ID: "new-but-v1", Platform: "android", LastSeen: now.Add(-60 * 24 * time.Hour)}}}
	if got := g.CheckDevices(&idle, now, dc); got != GateDeviceInconclusive {
		t.Fatalf("no recently active device: %q, want inconclusive", got)
	}
}

// TestReadyToCloudNeedsCapability: the driver's verdict on a user in ready
// holds them while a recently active device is known to lack the cloud
// capability, whatever the step's gates; a device the census never saw
// speak is judged by the step's MinVersion when it lists the platform, and
// holds nobody otherwise.
func TestReadyToCloudNeedsCapability(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := Campaign{Name: "c", Target: PhaseCloud, Steps: []Step{{TargetBP: BasisPoints}}}
	pl := Placement{Eligible: true, Step: 0}
	src := both{censusMap{
		"u/v1":  {User: "u", ID: "v1", Source: SourceLegacy, Protocol: 1, LastSeen: now},
		"u/v2":  {User: "u", ID: "v2", Source: SourceLegacy, Protocol: 2, LastSeen: now},
		"u/web": {User: "u", ID: "web", Source: SourceCloud, Protocol: 8, LastSeen: now},
	}}
	user := func(ids ...string) User {
		u := User{ID: "u", Phase: PhaseReady}
		for _, id := range ids {
			u.Devices = append(u.Devices, Device{ID: id, Platform: "desktop", ClientVersion: "7.4.1", LastSeen: now.Add(-time.Hour)})
		}
		return u
	}
	for _, tc := range []struct {
		name     string
		u        User
		gates    Gates
		heldBack string
	}{
		{"chat v1 phone and a cloud app", user("v1", "web"), Gates{}, GateDeviceCapability},
		{"chat v2 phone and a cloud app", user("v2", "web"), Gates{}, ""},
		{"never seen", user("unseen"), Gates{}, ""},
		{"never seen, declared version passes", user("unseen"), Gates{MinVersion: map[string]string{"desktop": "7.0"}}, ""},
		{"never seen, declared version too old", user("unseen"), Gates{MinVersion: map[string]string{"desktop": "8.0"}}, GateDeviceVersion},
		{"chat v1 phone idle for two months", func() User {
			u := user("v1", "web")
			u.Devices[0].LastSeen = now.Add(-60 * 24 * time.Hour)
			return u
		}(), Gates{ActiveWithin: Duration(30 * 24 * time.Hour)}, ""},
		{"no device at all", user(), Gates{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.Steps[0].Gates = tc.gates
			v := c.Judge(&tc.u, pl, now, src)
			if v.HeldBack != tc.heldBack {
				t.Fatalf("held back %q, want %q", v.HeldBack, tc.heldBack)
			}
			if tc.heldBack == "" && v.Next != PhaseCloud {
				t.Fatalf("next %q, want cloud", v.Next)
			}
		})
	}
}

// TestCheckCloudMove: a manual ready→cloud change is refused, naming the
// device's platform, version and what it lacks, only on evidence.
func TestCheckCloudMove(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	dc := censusMap{"u/v1": {User: "u", ID: "v1", Source: SourceLegacy, Protocol: 1, LastSeen: now}}
	u := User{ID: "u", Phase: PhaseReady, Devices: []Device{
		{ID: "v1", Platform: "desktop", ClientVersion: "7.4.1", LastSeen: now.Add(-time.Hour)},
		{ID: "unseen", Platform: "ios", ClientVersion: "3.0", LastSeen: now.Add(-time.Hour)},
	}}
	err := CheckCloudMove(&u, PhaseCloud, dc, DefaultCloudActiveWithin, now)
	if !errors.Is(err, ErrNotCloudCapable) || !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("err %v", err)
	}
	var ce *CloudCapabilityError
	if !errors.As(err, &ce) || len(ce.Gaps) != 1 || ce.Gaps[0].Device != "v1" {
		t.Fatalf("gaps %+v", ce)
	}
	for _, want := range []string{"desktop 7.4.1", "chat v1", "chat v2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	for _, to := range []Phase{PhaseShadow, PhaseHeld} {
		if err := CheckCloudMove(&u, to, dc, DefaultCloudActiveWithin, now); err != nil {
			t.Errorf("ready→%s refused: %v", to, err)
		}
	}
	u.Devices = u.Devices[1:]
	if err := CheckCloudMove(&u, PhaseCloud, dc, DefaultCloudActiveWithin, now); err != nil {
		t.Fatalf("a device never seen speaking refused the move: %v", err)
	}
}
