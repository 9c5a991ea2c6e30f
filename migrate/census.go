package migrate

import (
	"slices"
	"time"
)

// censusPage is how many records a census reads from a snapshot at a time.
const censusPage = 1000

// CensusRow counts devices and users of one platform, version band and
// phase. A user counts once per row in which they have a device.
type CensusRow struct {
	Platform string `json:"platform"`
	Band     string `json:"band"`
	Phase    Phase  `json:"phase"`
	Devices  int    `json:"devices"`
	Users    int    `json:"users"`
}

// Census groups the devices the users' records know of, read from one
// snapshot: who runs what, by platform, version band and phase.
type Census struct {
	At   time.Time   `json:"at"`
	Rows []CensusRow `json:"rows"`
	// Devices and Users are the totals (a user with no device is not
	// counted).
	Devices int `json:"devices"`
	Users   int `json:"users"`
}

// TakeCensus counts the devices of every user in sn, only those of
// platform when it is not empty, and only those seen within activeWithin of
// now when it is positive. Rows come sorted by platform, band and phase.
func TakeCensus(sn *Snapshot, platform string, activeWithin time.Duration, now time.Time) Census {
	type key struct {
		platform, band string
		phase          Phase
	}
	rows := map[key]*CensusRow{}
	c := Census{At: now.UTC()}
	eachUser(sn, func(u *User) {
		seen := map[key]bool{}
		counted := false
		for _, d := range u.Devices {
			if platform != "" && d.Platform != platform {
				continue
			}
			if activeWithin > 0 && now.Sub(d.LastSeen) > activeWithin {
				continue
			}
			k := key{d.Platform, VersionBand(d.ClientVersion), u.Phase}
			r := rows[k]
			if r == nil {
				r = &CensusRow{Platform: k.platform, Band: k.band, Phase: k.phase}
				rows[k] = r
			}
			r.Devices++
			c.Devices++
			if !seen[k] {
				seen[k] = true
				r.Users++
			}
			counted = true
		}
		if counted {
			c.Users++
		}
	})
	c.Rows = make([]CensusRow, 0, len(rows))
	for _, r := range rows {
		c.Rows = append(c.Rows, *r)
	}
	slices.SortFunc(c.Rows, func(a, b CensusRow) int {
		if a.Platform != b.Platform {
			return compareStrings(a.Platform, b.Platform)
		}
		if a.Band != b.Band {
			return CompareVersions(a.Band, b.Band)
		}
		return compareStrings(string(a.Phase), string(b.Phase))
	})
	return c
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// eachUser calls fn for every user of sn, a page at a time.
func eachUser(sn *Snapshot, fn func(*User)) {
	after := ""
	for {
		page := sn.List("", after, censusPage)
		for i := range page {
			fn(&page[i])
		}
		if len(page) < censusPage {
			return
		}
		after = page[len(page)-1].ID
	}
}

// Impact is a dry run of one policy over a snapshot: who it affects, what
// each of them would be told or refused at the time it was computed, and
// how many are affected but not refused yet (pending).
type Impact struct {
	Platform string    `json:"platform"`
	Stage    Stage     `json:"stage"`
	At       time.Time `json:"at"`
	// AffectedDevices and AffectedUsers are those the policy affects,
	// whatever its stage; a user counts once.
	AffectedDevices int `json:"affected_devices"`
	AffectedUsers   int `json:"affected_users"`
	// DevicesByPhase and UsersByPhase split the affected by the user's phase.
	DevicesByPhase map[Phase]int `json:"devices_by_phase"`
	UsersByPhase   map[Phase]int `json:"users_by_phase"`
	// ByReason splits affected devices by why they are affected.
	ByReason map[string]int `json:"by_reason"`
	// ByOutcome counts affected devices by the decision at At.
	ByOutcome map[VersionOutcome]int `json:"by_outcome"`
	// Pending counts affected devices that are not refused at At (allowed,
	// warned, or a known device under a soft block); Enforced the rest.
	Pending  int `json:"pending"`
	Enforced int `json:"enforced"`
}

// DryRun counts what policy p does to the devices in sn at now, without
// enforcing anything. A device in a user's record is a known device: a soft
// block does not refuse it. Only devices seen within activeWithin of now
// count when it is positive.
func DryRun(sn *Snapshot, p *VersionPolicy, activeWithin time.Duration, now time.Time) Impact {
	stage, _ := p.StageAt(now)
	im := Impact{Platform: p.Platform, Stage: stage, At: now.UTC(), DevicesByPhase: map[Phase]int{}, UsersByPhase: map[Phase]int{},
		ByReason: map[string]int{}, ByOutcome: map[VersionOutcome]int{}}
	eachUser(sn, func(u *User) {
		hit := false
		for _, d := range u.Devices {
			if d.Platform != p.Platform || (activeWithin > 0 && now.Sub(d.LastSeen) > activeWithin) {
				continue
			}
			dec := Decide(p, u.Phase, ClientDeviceOf(d, true), now)
			if !dec.Affected {
				continue
			}
			hit = true
			im.AffectedDevices++
			im.DevicesByPhase[u.Phase]++
			if dec.Reason == ReasonNotYetEnforced || dec.Reason == ReasonWithinJitterWindow {
				_, why := p.Affects(u.Phase, ClientDeviceOf(d, true))
				im.ByReason[why]++
			} else {
				im.ByReason[dec.Reason]++
			}
			im.ByOutcome[dec.Outcome]++
			if dec.Refuses(true) {
				im.Enforced++
			} else {
				im.Pending++
			}
		}
		if hit {
			im.AffectedUsers++
			im.UsersByPhase[u.Phase]++
		}
	})
	return im
}

// ClientDeviceOf is the decision input for a device as a user's record
// knows it: no capabilities or protocol version are recorded there, so
// policies that require them are decided at the enforcement points only.
func ClientDeviceOf(d Device, known bool) ClientDevice {
	return ClientDevice{ID: d.ID, Platform: d.Platform, Version: d.ClientVersion, Known: known}
}
