package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
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
	// Protocols counts the row's devices by protocol band (ProtocolBand),
	// and Capabilities by capability they declared, for the devices the
	// device census holds; Unseen counts the others (evicted, or seen
	// before the census was kept).
	Protocols    map[string]int `json:"protocols,omitempty"`
	Capabilities map[string]int `json:"capabilities,omitempty"`
	Unseen       int            `json:"unseen,omitempty"`
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
// With a device census dc, each row also counts its devices by protocol band
// and capability.
func TakeCensus(sn *Snapshot, dc *DeviceCensus, platform string, activeWithin time.Duration, now time.Time) Census {
	type key struct {
		platform, band string
		phase          Phase
	}
	rows := map[key]*CensusRow{}
	c := Census{At: now.UTC()}
	seenBy := dc.byKey()
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
			if dc != nil {
				countDeclared(r, seenBy, censusKey{u.ID, d.ID})
			}
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

// countDeclared adds what the device census knows of one device to r.
func countDeclared(r *CensusRow, seen map[censusKey]CensusDevice, k censusKey) {
	cd, ok := seen[k]
	if !ok {
		r.Unseen++
		return
	}
	if r.Protocols == nil {
		r.Protocols, r.Capabilities = map[string]int{}, map[string]int{}
	}
	r.Protocols[cd.ProtocolBand()]++
	for _, capability := range cd.Capabilities {
		r.Capabilities[capability]++
	}
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

// DefaultCensusMax is how many devices a DeviceCensus keeps in memory when
// its cap is not set: about 300 bytes each, so some 30 MB at the cap.
const DefaultCensusMax = 100_000

// Limits on one census entry, so that a self-declared hello or certificate
// cannot make an entry large.
const (
	maxCensusCaps   = 32
	maxCensusString = 128
)

// Sources a census entry comes from.
const (
	// SourceLegacy: a registration at a supernode.
	SourceLegacy = "legacy"
	// SourceCloud: a hello on the cloud WebSocket.
	SourceCloud = "cloud"
	// SourceBridge: a legacy device of a cloud-home user, through the bridge.
	SourceBridge = "bridge"
)

// CensusDevice is one device as the enforcement points last saw it: what it
// declares (platform, version, capabilities) and the protocol version it
// actually speaks (0 when the point could not tell).
type CensusDevice struct {
	User          string    `json:"user"`
	ID            string    `json:"id"`
	Source        string    `json:"source"`
	Platform      string    `json:"platform"`
	ClientVersion string    `json:"client_version"`
	Protocol      int       `json:"protocol,omitempty"`
	Capabilities  []string  `json:"capabilities,omitempty"`
	LastSeen      time.Time `json:"last_seen"`
}

// ErrInvalidCensusDevice is returned by ParseCensusDevice, and by
// DeviceCensus.See for an entry without a user or device id.
var ErrInvalidCensusDevice = errors.New("migrate: invalid census device")

// ParseCensusDevice reads a census entry as it is persisted (JSON) and
// checks it: user and device id set, strings and capabilities bounded, a
// non-negative protocol and a last-seen time.
func ParseCensusDevice(b []byte) (CensusDevice, error) {
	var d CensusDevice
	if err := json.Unmarshal(b, &d); err != nil {
		return CensusDevice{}, fmt.Errorf("%w: %v", ErrInvalidCensusDevice, err)
	}
	if err := d.check(); err != nil {
		return CensusDevice{}, err
	}
	return d, nil
}

func (d CensusDevice) check() error {
	if d.User == "" || d.ID == "" {
		return fmt.Errorf("%w: user and device id are required", ErrInvalidCensusDevice)
	}
	for _, s := range []string{d.User, d.ID, d.Source, d.Platform, d.ClientVersion} {
		if len(s) > maxCensusString {
			return fmt.Errorf("%w: a field is longer than %d bytes", ErrInvalidCensusDevice, maxCensusString)
		}
	}
	if len(d.Capabilities) > maxCensusCaps {
		return fmt.Errorf("%w: %d capabilities, at most %d", ErrInvalidCensusDevice, len(d.Capabilities), maxCensusCaps)
	}
	for _, c := range d.Capabilities {
		if len(c) > maxCensusString {
			return fmt.Errorf("%w: a capability is longer than %d bytes", ErrInvalidCensusDevice, maxCensusString)
		}
	}
	if d.Protocol < 0 {
		return fmt.Errorf("%w: negative protocol %d", ErrInvalidCensusDevice, d.Protocol)
	}
	if d.LastSeen.IsZero() {
		return fmt.Errorf("%w: no last_seen", ErrInvalidCensusDevice)
	}
	return nil
}

// ProtocolBand names the protocol generation the device speaks, by network:
// "legacy/2", "cloud/5", or "<source>/unknown" when the point could not tell.
// Sources are few and versions are small integers, so bands stay few.
func (d CensusDevice) ProtocolBand() string {
	src := d.Source
	if src == "" {
		src = "unknown"
	}
	if d.Protocol <= 0 {
		return src + "/unknown"
	}
	return src + "/" + strconv.Itoa(d.Protocol)
}

// ClientDevice is the decision input for the device as the census knows
// it: unlike a user's record, the census has its capabilities and the
// protocol version it speaks.
func (d CensusDevice) ClientDevice(known bool) ClientDevice {
	caps := d.Capabilities
	if caps == nil {
		caps = []string{}
	}
	return ClientDevice{ID: d.ID, Platform: d.Platform, Version: d.ClientVersion, Capabilities: slices.Clone(caps), Protocol: d.Protocol, Network: d.Source, Known: known}
}

func (d CensusDevice) sameDeclaration(o CensusDevice) bool {
	return d.Source == o.Source && d.Platform == o.Platform && d.ClientVersion == o.ClientVersion &&
		d.Protocol == o.Protocol && slices.Equal(d.Capabilities, o.Capabilities)
}

type censusKey struct{ user, device string }

type censusEntry struct {
	dev CensusDevice
	// persisted is the LastSeen of the version last written to the store;
	// zero when it never was.
	persisted time.Time
	index     int // in DeviceCensus.heap
}

// DeviceCensus is the in-memory census of devices: every device the
// enforcement points saw, with what it declared and the protocol it spoke,
// bounded in size. Beyond its cap the least recently seen device is evicted
// (and counted); the persisted copy of it stays in the store. It is safe for
// concurrent use; entries handed out are copies.
//
// Users' records (Device) keep platform, version and last seen for every
// device, which is what plans and gates need; the census adds what only an
// enforcement point knows, for as many devices as its cap allows.
type DeviceCensus struct {
	mu         sync.Mutex
	max        int
	resolution time.Duration
	entries    map[censusKey]*censusEntry
	heap       []*censusEntry // min-heap on dev.LastSeen
	evicted    uint64
}

// NewDeviceCensus returns an empty census of at most max devices
// (DefaultCensusMax when max <= 0). See asks for a write to the store when
// a device is new, changed what it declares, or was last persisted more than
// resolution before it was seen again.
func NewDeviceCensus(max int, resolution time.Duration) *DeviceCensus {
	if max <= 0 {
		max = DefaultCensusMax
	}
	return &DeviceCensus{max: max, resolution: resolution, entries: map[censusKey]*censusEntry{}}
}

// See records a sighting and reports whether the entry should be written
// to the store (then call Persisted once it is). A sighting older than the
// one already recorded only updates what the device declares when that is
// all that changed, never moves LastSeen back.
func (c *DeviceCensus) See(d CensusDevice) (persist bool, err error) {
	if err := d.check(); err != nil {
		return false, err
	}
	d.LastSeen = d.LastSeen.UTC()
	d.Capabilities = slices.Clone(d.Capabilities)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[censusKey{d.User, d.ID}]
	if e == nil {
		c.insert(&censusEntry{dev: d})
		return true, nil
	}
	changed := !e.dev.sameDeclaration(d)
	if d.LastSeen.Before(e.dev.LastSeen) {
		d.LastSeen = e.dev.LastSeen // reports may arrive out of order
	}
	e.dev = d
	c.fix(e)
	return changed || e.persisted.IsZero() || d.LastSeen.Sub(e.persisted) > c.resolution, nil
}

// Persisted records that the entry of the user's device was written to the
// store as last seen at lastSeen.
func (c *DeviceCensus) Persisted(user, device string, lastSeen time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[censusKey{user, device}]; e != nil && lastSeen.After(e.persisted) {
		e.persisted = lastSeen
	}
}

// Load puts an entry read back from the store: the newer of it and what the
// census has wins, and it counts as persisted. Evictions apply as in See.
func (c *DeviceCensus) Load(d CensusDevice) error {
	if _, err := c.See(d); err != nil {
		return err
	}
	c.Persisted(d.User, d.ID, d.LastSeen.UTC())
	return nil
}

// Get returns a copy of the entry of the user's device.
func (c *DeviceCensus) Get(user, device string) (CensusDevice, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[censusKey{user, device}]
	if e == nil {
		return CensusDevice{}, false
	}
	d := e.dev
	d.Capabilities = slices.Clone(d.Capabilities)
	return d, true
}

// Len is how many devices the census holds.
func (c *DeviceCensus) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Evicted is how many devices were evicted for the cap since the census
// was made.
func (c *DeviceCensus) Evicted() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evicted
}

// Devices returns a copy of every entry, in no particular order. Entries
// share their Capabilities slices with nothing the census changes later.
func (c *DeviceCensus) Devices() []CensusDevice {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]CensusDevice, 0, len(c.entries))
	for _, e := range c.entries {
		out = append(out, e.dev) // See never changes a stored slice in place
	}
	return out
}

// byKey returns the entries keyed by user and device, for one census pass.
func (c *DeviceCensus) byKey() map[censusKey]CensusDevice {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[censusKey]CensusDevice, len(c.entries))
	for k, e := range c.entries {
		out[k] = e.dev
	}
	return out
}

func (c *DeviceCensus) insert(e *censusEntry) {
	c.entries[censusKey{e.dev.User, e.dev.ID}] = e
	e.index = len(c.heap)
	c.heap = append(c.heap, e)
	c.up(e.index)
	for len(c.entries) > c.max {
		oldest := c.heap[0]
		c.remove(0)
		delete(c.entries, censusKey{oldest.dev.User, oldest.dev.ID})
		c.evicted++
	}
}

// The heap is written out rather than through container/heap to keep the
// entries typed; it orders by LastSeen, oldest at the root.
func (c *DeviceCensus) less(i, j int) bool {
	return c.heap[i].dev.LastSeen.Before(c.heap[j].dev.LastSeen)
}

func (c *DeviceCensus) swap(i, j int) {
	c.heap[i], c.heap[j] = c.heap[j], c.heap[i]
	c.heap[i].index, c.heap[j].index = i, j
}

func (c *DeviceCensus) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if !c.less(i, parent) {
			return
		}
		c.swap(i, parent)
		i = parent
	}
}

func (c *DeviceCensus) down(i int) {
	n := len(c.heap)
	for {
		small := i
		if l := 2*i + 1; l < n && c.less(l, small) {
			small = l
		}
		if r := 2*i + 2; r < n && c.less(r, small) {
			small = r
		}
		if small == i {
			return
		}
		c.swap(i, small)
		i = small
	}
}

// fix restores the heap after e's LastSeen changed (it only grows).
func (c *DeviceCensus) fix(e *censusEntry) { c.down(e.index) }

func (c *DeviceCensus) remove(i int) {
	last := len(c.heap) - 1
	c.swap(i, last)
	c.heap[last] = nil
	c.heap = c.heap[:last]
	if i < last {
		c.down(i)
		c.up(i)
	}
}

// OtherLabel stands for the platforms and version bands a bounded census
// folds together.
const OtherLabel = "other"

// Bounded returns the census rows for a metric with bounded labels: the
// maxPairs (platform, band) pairs with the most devices keep their rows;
// the rest, and every platform that CheckPlatform refuses (platforms are
// self-declared), are summed into platform and band "other", per phase.
// Phases are few, so there are at most (maxPairs+1) times as many rows as
// phases. Users are not summed (a user may sit in several rows).
func (c Census) Bounded(maxPairs int) []CensusRow {
	type pair struct{ platform, band string }
	total := map[pair]int{}
	for _, r := range c.Rows {
		if CheckPlatform(r.Platform) == nil {
			total[pair{r.Platform, r.Band}] += r.Devices
		}
	}
	pairs := make([]pair, 0, len(total))
	for p := range total {
		pairs = append(pairs, p)
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if total[a] != total[b] {
			return total[b] - total[a]
		}
		if a.platform != b.platform {
			return compareStrings(a.platform, b.platform)
		}
		return compareStrings(a.band, b.band)
	})
	keep := map[pair]bool{}
	for _, p := range pairs[:min(len(pairs), max(maxPairs, 0))] {
		keep[p] = true
	}
	var out []CensusRow
	other := map[Phase]int{}
	for _, r := range c.Rows {
		if keep[pair{r.Platform, r.Band}] {
			out = append(out, CensusRow{Platform: r.Platform, Band: r.Band, Phase: r.Phase, Devices: r.Devices})
			continue
		}
		other[r.Phase] += r.Devices
	}
	for _, ph := range slices.Sorted(maps.Keys(other)) {
		out = append(out, CensusRow{Platform: OtherLabel, Band: OtherLabel, Phase: ph, Devices: other[ph]})
	}
	return out
}
