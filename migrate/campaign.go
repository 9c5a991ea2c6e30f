package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"time"
)

// BasisPoints is the size of the cohort space: a user's bucket is in
// [0, BasisPoints), and a step's target of N basis points takes the users
// whose bucket is below N.
const BasisPoints = 10000

// Bucket returns the user's cohort bucket for a campaign salt:
//
//	FNV-1a 64 (salt + ":" + user) mod 10000
//
// FNV-1a was chosen over SHA-256 because the planner hashes every user of a
// snapshot (a million in well under a second) and the cohort needs spread,
// not secrecy: the salt is not a secret. The function is part of the
// contract with operators (a user's bucket must never change while a campaign
// runs, nor between releases); testdata/bucket_vectors.txt pins it.
func Bucket(salt, user string) int {
	h := fnv.New64a()
	h.Write([]byte(salt))
	h.Write([]byte{':'})
	h.Write([]byte(user))
	return int(h.Sum64() % BasisPoints)
}

// bucketNoAlloc is Bucket without the hash.Hash allocation, for the planner's
// hot loop. TestBucketVectors checks that both agree.
func bucketNoAlloc(salt, user string) int {
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(salt); i++ {
		h ^= uint64(salt[i])
		h *= prime64
	}
	h ^= uint64(':')
	h *= prime64
	for i := 0; i < len(user); i++ {
		h ^= uint64(user[i])
		h *= prime64
	}
	return int(h % BasisPoints)
}

// CampaignState is where a campaign stands. Its values are stable: they
// appear in logs, JSON and metric labels.
type CampaignState string

// The campaign states of DESIGN.md "Campaigns".
const (
	// CampaignDraft: created, editable, nothing moves.
	CampaignDraft CampaignState = "draft"
	// CampaignPlanned: a plan was computed and reviewed; nothing moves.
	CampaignPlanned CampaignState = "planned"
	// CampaignRunning: the driver moves users toward the current step.
	CampaignRunning CampaignState = "running"
	// CampaignPaused: nothing moves; resume continues where it stopped.
	CampaignPaused CampaignState = "paused"
	// CampaignCompleted: every step reached its target and soaked.
	CampaignCompleted CampaignState = "completed"
	// CampaignAborted: stopped for good; users stay where they are.
	CampaignAborted CampaignState = "aborted"
	// CampaignRollingBack: the driver moves the campaign's cloud users back
	// to shadow; the campaign becomes aborted when none is left. With
	// RollbackStep set, only the users that step moved go back, and the
	// campaign becomes paused at that step instead.
	CampaignRollingBack CampaignState = "rolling_back"
)

var campaignStates = []CampaignState{CampaignDraft, CampaignPlanned, CampaignRunning, CampaignPaused, CampaignCompleted, CampaignAborted, CampaignRollingBack}

// CampaignStates returns every campaign state in lifecycle order.
func CampaignStates() []CampaignState { return slices.Clone(campaignStates) }

// Valid reports whether s is one of the campaign states.
func (s CampaignState) Valid() bool { return slices.Contains(campaignStates, s) }

// Command is an operator's (or the driver's) lifecycle command on a campaign.
type Command string

// The lifecycle commands.
const (
	CmdPlan     Command = "plan"
	CmdStart    Command = "start"
	CmdPause    Command = "pause"
	CmdResume   Command = "resume"
	CmdAbort    Command = "abort"
	CmdRollback Command = "rollback"
	// CmdRollbackStep rolls back only the current step: the users whose
	// phase that step set return to shadow, then the campaign pauses at
	// the step (resume runs it again).
	CmdRollbackStep Command = "rollback_step"
	// CmdComplete is issued by the driver after the last step soaked.
	CmdComplete Command = "complete"
	// CmdRolledBack is issued by the driver when a rollback has nobody
	// left to move.
	CmdRolledBack Command = "rolled_back"
	// CmdStepRolledBack is issued by the driver when a step rollback has
	// nobody left to move.
	CmdStepRolledBack Command = "step_rolled_back"
)

// lifecycle is the campaign state table: lifecycle[from][cmd] is the state a
// command leads to; absent means refused.
var lifecycle = map[CampaignState]map[Command]CampaignState{
	CampaignDraft:       {CmdPlan: CampaignPlanned, CmdStart: CampaignRunning, CmdAbort: CampaignAborted},
	CampaignPlanned:     {CmdPlan: CampaignPlanned, CmdStart: CampaignRunning, CmdAbort: CampaignAborted},
	CampaignRunning:     {CmdPause: CampaignPaused, CmdAbort: CampaignAborted, CmdRollback: CampaignRollingBack, CmdRollbackStep: CampaignRollingBack, CmdComplete: CampaignCompleted},
	CampaignPaused:      {CmdResume: CampaignRunning, CmdAbort: CampaignAborted, CmdRollback: CampaignRollingBack, CmdRollbackStep: CampaignRollingBack},
	CampaignCompleted:   {CmdRollback: CampaignRollingBack, CmdRollbackStep: CampaignRollingBack},
	CampaignAborted:     {CmdRollback: CampaignRollingBack},
	CampaignRollingBack: {CmdRolledBack: CampaignAborted, CmdStepRolledBack: CampaignPaused, CmdAbort: CampaignAborted},
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("90m"), so that campaign files stay readable.
type Duration time.Duration

// MarshalJSON writes d as "1h30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a Go duration string, or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want a string such as \"1h\": %w", err)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Filter selects the users eligible for a campaign. Empty fields select
// everyone.
type Filter struct {
	// Platforms lists the platforms whose users are eligible (the platform
	// of the user's most recently seen device).
	Platforms []string `json:"platforms,omitempty"`
	// MinVersion and MaxVersion bound the client version (inclusive) of
	// the user's most recently seen device; dotted numbers.
	MinVersion string `json:"min_version,omitempty"`
	MaxVersion string `json:"max_version,omitempty"`
	// Users, when not empty, is an explicit list: only these users are
	// eligible.
	Users []string `json:"users,omitempty"`
	// Exclude lists users never eligible.
	Exclude []string `json:"exclude,omitempty"`
}

// Gates are the per-user conditions to leave shadow for ready (DESIGN.md
// "Migration phases"): every recently active device speaks the cloud
// protocol (MinVersion), the backfill is complete (Backfill) and the shadow
// mismatch rate is under a limit with enough samples (Mismatch). A gate
// without the evidence to decide is inconclusive, which holds the user
// back like a failure would: never pass by default.
type Gates struct {
	// ActiveWithin is how far back a device counts as recently active;
	// zero means every known device.
	ActiveWithin Duration `json:"active_within,omitempty"`
	// MinVersion turns the device gate on: every recently active device
	// must have the cloud capability. The device census decides for a
	// device it saw speak (CheckDevices); for the others MinVersion maps a
	// platform to the lowest declared client version taken to have it, and
	// a device of an unlisted platform fails the gate.
	MinVersion map[string]string `json:"min_version,omitempty"`
	// Backfill requires the bridge to report the user's history copied
	// into the cloud in full (ShadowReport.BackfillDone).
	Backfill bool `json:"backfill,omitempty"`
	// Mismatch is the shadow mismatch gate; nil means none.
	Mismatch *MismatchGate `json:"shadow_mismatch,omitempty"`
}

// Step is one stage of a campaign's ramp.
type Step struct {
	// TargetBP is the share of the cohort space, in basis points, that
	// this step moves to the campaign's target phase.
	TargetBP int `json:"target_bp"`
	// MinSoak is how long the step runs, at least, once every movable user
	// arrived, before the next step starts.
	MinSoak Duration `json:"min_soak,omitempty"`
	// Gates must hold for a user to leave shadow.
	Gates Gates `json:"gates"`
}

// Window is a daily change window in UTC, [Start, End) in minutes after
// midnight; End before Start wraps past midnight.
type Window struct {
	Start string `json:"start"` // "HH:MM"
	End   string `json:"end"`   // "HH:MM"
	// Days limits the window to some weekdays ("mon".."sun"); empty is
	// every day. For a window that wraps, the day is the day it opens.
	Days []string `json:"days,omitempty"`
}

// Pace limits how fast the driver moves users.
type Pace struct {
	// PerMinute is the maximum number of transitions per minute; zero
	// means DefaultPerMinute. Only transitions that land count: the
	// driver tries another user in place of a refused one.
	PerMinute int `json:"per_minute,omitempty"`
	// Windows are the change windows; none means any time.
	Windows []Window `json:"windows,omitempty"`
}

// DefaultPerMinute is the pace of a campaign that sets none.
const DefaultPerMinute = 600

// Exemption keeps one user out of a campaign until it expires.
type Exemption struct {
	// Until is when the exemption lapses; zero means never.
	Until  time.Time `json:"until,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// Campaign moves a cohort of users toward a target phase in steps
// (DESIGN.md "Campaigns"). Values are plain data; Clone gives an independent
// copy.
type Campaign struct {
	Name  string        `json:"name"`
	State CampaignState `json:"state"`
	// Salt seeds the cohort hash. It is fixed when the campaign starts (a
	// random one is chosen then if none was given) and never changes after.
	Salt string `json:"salt,omitempty"`
	// Target is the phase the cohort is moved to: ready or cloud (default
	// cloud).
	Target Phase  `json:"target"`
	Filter Filter `json:"filter"`
	Steps  []Step `json:"steps"`
	Pace   Pace   `json:"pace"`
	// Exemptions maps a user id to its exemption.
	Exemptions map[string]Exemption `json:"exemptions,omitempty"`
	// OptIns are users in the campaign from its first step, whatever their
	// bucket (still subject to the filter and gates).
	OptIns []string `json:"opt_ins,omitempty"`
	// Guardrails are evaluated while the campaign runs (every
	// DriverConfig.GuardrailEvery): a fail pauses or rolls back (see
	// OnGuardrailFail), an inconclusive result holds the campaign at its
	// current step.
	Guardrails []Guardrail `json:"guardrails,omitempty"`
	// OnGuardrailFail is OnFailPause (default), OnFailRollback or
	// OnFailRollbackStep.
	OnGuardrailFail string `json:"on_guardrail_fail,omitempty"`

	// Step is the index of the current step while running.
	Step int `json:"step"`
	// StepSince is when the current step started.
	StepSince time.Time `json:"step_since,omitzero"`
	// StepReached is when every movable user of the step arrived; the soak
	// counts from it. Zero while users are still moving.
	StepReached time.Time `json:"step_reached,omitzero"`
	Created     time.Time `json:"created"`
	Updated     time.Time `json:"updated"`
	// RollbackStep, while rolling back, is the step whose users go back
	// (CmdRollbackStep); nil rolls back the whole campaign.
	RollbackStep *int `json:"rollback_step,omitempty"`
	// Reason is why the state last changed.
	Reason string `json:"reason,omitempty"`
	// LastOp is the id of the operation that last changed the record;
	// repeating that operation changes nothing and audits nothing.
	LastOp string `json:"last_op,omitempty"`
	// Audit is the audit log's sequence of the event written (before the
	// record, as an intent) for the record's last audited change: the head
	// of the campaign's audit chain (see migratestore.Audit). Zero before
	// the first.
	Audit uint64 `json:"audit,omitempty"`
	// Revision is the store's revision, set on read.
	Revision uint64 `json:"revision"`
}

// Clone returns a deep copy of c.
func (c Campaign) Clone() Campaign {
	c.Filter.Platforms = slices.Clone(c.Filter.Platforms)
	c.Filter.Users = slices.Clone(c.Filter.Users)
	c.Filter.Exclude = slices.Clone(c.Filter.Exclude)
	c.Steps = slices.Clone(c.Steps)
	for i := range c.Steps {
		if g := c.Steps[i].Gates.Mismatch; g != nil {
			m := *g
			c.Steps[i].Gates.Mismatch = &m
		}
		if m := c.Steps[i].Gates.MinVersion; m != nil {
			n := make(map[string]string, len(m))
			for k, v := range m {
				n[k] = v
			}
			c.Steps[i].Gates.MinVersion = n
		}
	}
	c.Pace.Windows = slices.Clone(c.Pace.Windows)
	if c.Exemptions != nil {
		m := make(map[string]Exemption, len(c.Exemptions))
		for k, v := range c.Exemptions {
			m[k] = v
		}
		c.Exemptions = m
	}
	c.OptIns = slices.Clone(c.OptIns)
	c.Guardrails = slices.Clone(c.Guardrails)
	for i := range c.Guardrails {
		if q := c.Guardrails[i].PromQL; q != nil {
			cp := *q
			c.Guardrails[i].PromQL = &cp
		}
	}
	if c.RollbackStep != nil {
		n := *c.RollbackStep
		c.RollbackStep = &n
	}
	return c
}

// CheckCampaignName returns an error wrapping ErrInvalidCampaign unless name
// follows the user id rules (1 to 64 of [A-Za-z0-9_-]): it is a KV key and
// a subject token.
func CheckCampaignName(name string) error {
	if err := CheckUserID(name); err != nil {
		return fmt.Errorf("%w: name %q: 1 to 64 letters, digits, '_' or '-'", ErrInvalidCampaign, name)
	}
	return nil
}

// Validate reports a campaign definition that cannot run.
func (c Campaign) Validate() error {
	var errs []error
	if CheckUserID(c.Name) != nil { // CheckCampaignName's rule, without its ErrInvalidCampaign prefix: the join below adds it once
		errs = append(errs, fmt.Errorf("name %q: 1 to 64 letters, digits, '_' or '-'", c.Name))
	}
	if c.State != "" && !c.State.Valid() {
		errs = append(errs, fmt.Errorf("state %q is not a campaign state", c.State))
	}
	switch c.Target {
	case "", PhaseReady, PhaseCloud:
	default:
		errs = append(errs, fmt.Errorf("target phase %q: want ready or cloud", c.Target))
	}
	if len(c.Steps) == 0 {
		errs = append(errs, errors.New("at least one step is needed"))
	}
	prev := 0
	for i, s := range c.Steps {
		if s.TargetBP <= 0 || s.TargetBP > BasisPoints {
			errs = append(errs, fmt.Errorf("step %d: target %d bp: want 1 to %d", i, s.TargetBP, BasisPoints))
		}
		if s.TargetBP < prev {
			errs = append(errs, fmt.Errorf("step %d: target %d bp is below the previous step's %d", i, s.TargetBP, prev))
		}
		prev = s.TargetBP
		if s.MinSoak < 0 || s.Gates.ActiveWithin < 0 {
			errs = append(errs, fmt.Errorf("step %d: negative duration", i))
		}
		for p, v := range s.Gates.MinVersion {
			if _, ok := parseVersion(v); !ok {
				errs = append(errs, fmt.Errorf("step %d: gate min version %q for %s is not a dotted number", i, v, p))
			}
		}
		if m := s.Gates.Mismatch; m != nil && (m.MaxRate < 0 || m.MaxRate > 1 || m.MinSamples < 0) {
			errs = append(errs, fmt.Errorf("step %d: shadow mismatch gate: max_rate must be in [0, 1] and min_samples not negative", i))
		}
	}
	for _, v := range []string{c.Filter.MinVersion, c.Filter.MaxVersion} {
		if _, ok := parseVersion(v); v != "" && !ok {
			errs = append(errs, fmt.Errorf("filter version %q is not a dotted number", v))
		}
	}
	if c.Pace.PerMinute < 0 {
		errs = append(errs, fmt.Errorf("pace %d per minute is negative", c.Pace.PerMinute))
	}
	for i, w := range c.Pace.Windows {
		if _, _, err := w.bounds(); err != nil {
			errs = append(errs, fmt.Errorf("window %d: %w", i, err))
		}
	}
	for _, id := range append(slices.Clone(c.OptIns), append(c.Filter.Users, c.Filter.Exclude...)...) {
		if err := CheckUserID(id); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, validateGuardrails(c.Guardrails, c.OnGuardrailFail)...)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCampaign, err)
	}
	return nil
}

// Lifecycle applies a lifecycle command at now and returns the campaign it
// leads to, or an error wrapping ErrCampaignState. An empty state is
// draft. Starting fixes the salt
// (salt is used only when the campaign has none) and starts step 0.
func (c Campaign) Lifecycle(cmd Command, reason, salt string, now time.Time) (Campaign, error) {
	from := c.State
	if from == "" {
		from = CampaignDraft
	}
	to, ok := lifecycle[from][cmd]
	if !ok {
		return Campaign{}, fmt.Errorf("%w: cannot %s a campaign that is %s", ErrCampaignState, cmd, from)
	}
	next := c.Clone()
	next.State = to
	next.Reason = reason
	next.Updated = now
	next.RollbackStep = nil
	switch cmd {
	case CmdRollbackStep:
		step := c.Step
		next.RollbackStep = &step
	case CmdStepRolledBack:
		// The step runs again from the start when the campaign resumes.
		next.StepSince, next.StepReached = now, time.Time{}
	}
	if cmd == CmdStart {
		if next.Salt == "" {
			next.Salt = salt
		}
		next.Step = 0
		next.StepSince = now
		next.StepReached = time.Time{}
	}
	return next, nil
}

// TargetPhase is c.Target, or cloud when unset.
func (c Campaign) TargetPhase() Phase {
	if c.Target == "" {
		return PhaseCloud
	}
	return c.Target
}

// PerMinute is the campaign's pace, with the default applied.
func (c Campaign) PerMinute() int {
	if c.Pace.PerMinute == 0 {
		return DefaultPerMinute
	}
	return c.Pace.PerMinute
}

// Exempt reports whether the user is exempt at now.
func (c Campaign) Exempt(user string, now time.Time) bool {
	e, ok := c.Exemptions[user]
	return ok && (e.Until.IsZero() || now.Before(e.Until))
}

// InWindow reports whether now is inside one of the change windows (always,
// when there are none).
func (c Campaign) InWindow(now time.Time) bool {
	if len(c.Pace.Windows) == 0 {
		return true
	}
	now = now.UTC()
	for _, w := range c.Pace.Windows {
		if w.contains(now) {
			return true
		}
	}
	return false
}

var weekdays = map[string]time.Weekday{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}

func (w Window) bounds() (start, end int, err error) {
	start, err = parseClock(w.Start)
	if err == nil {
		end, err = parseClock(w.End)
	}
	if err == nil && start == end {
		err = errors.New("empty window: start equals end")
	}
	for _, d := range w.Days {
		if _, ok := weekdays[d]; !ok && err == nil {
			err = fmt.Errorf("day %q: want mon, tue, wed, thu, fri, sat or sun", d)
		}
	}
	return start, end, err
}

func (w Window) contains(now time.Time) bool {
	start, end, err := w.bounds()
	if err != nil {
		return false
	}
	m := now.Hour()*60 + now.Minute()
	day := now.Weekday()
	var in bool
	switch {
	case start < end:
		in = m >= start && m < end
	case m >= start:
		in = true
	case m < end:
		in = true
		day = (day + 6) % 7 // the window opened the day before
	}
	if !in || len(w.Days) == 0 {
		return in
	}
	for _, d := range w.Days {
		if weekdays[d] == day {
			return true
		}
	}
	return false
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || (hh == 24 && mm != 0) || len(m) != 2 {
		return 0, fmt.Errorf("time %q: want HH:MM", s)
	}
	return hh*60 + mm, nil
}

// parseVersion reads a dotted version ("5.12.1", "v5.12"); ok is false for
// anything else.
func parseVersion(v string) (parts [3]int, ok bool) {
	v = strings.TrimPrefix(v, "v")
	if v == "" {
		return parts, false
	}
	fields := strings.Split(v, ".")
	if len(fields) > 3 {
		return parts, false
	}
	for i, f := range fields {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return parts, false
		}
		parts[i] = n
	}
	return parts, true
}

// CompareVersions compares two dotted versions like strings.Compare; an
// unparsable version sorts before every parsable one.
func CompareVersions(a, b string) int {
	pa, oka := parseVersion(a)
	pb, okb := parseVersion(b)
	switch {
	case !oka && !okb:
		return strings.Compare(a, b)
	case !oka:
		return -1
	case !okb:
		return 1
	}
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// VersionBand is the major.minor band of a client version ("5.12" for
// "5.12.3"), or "unknown". Plans and metrics group by band so that the
// number of groups stays small.
func VersionBand(v string) string {
	p, ok := parseVersion(v)
	if !ok {
		return "unknown"
	}
	return strconv.Itoa(p[0]) + "." + strconv.Itoa(p[1])
}

// Primary returns the user's most recently seen device, which speaks for the
// user's platform and version in filters and plans.
func (u User) Primary() (Device, bool) {
	if len(u.Devices) == 0 {
		return Device{}, false
	}
	best := u.Devices[0]
	for _, d := range u.Devices[1:] {
		if d.LastSeen.After(best.LastSeen) {
			best = d
		}
	}
	return best, true
}

// Eligible reports whether the filter selects the user.
func (f Filter) Eligible(u *User) bool {
	if len(f.Users) > 0 && !slices.Contains(f.Users, u.ID) {
		return false
	}
	if slices.Contains(f.Exclude, u.ID) {
		return false
	}
	if len(f.Platforms) == 0 && f.MinVersion == "" && f.MaxVersion == "" {
		return true
	}
	d, _ := u.Primary()
	if len(f.Platforms) > 0 && !slices.Contains(f.Platforms, d.Platform) {
		return false
	}
	if f.MinVersion != "" && CompareVersions(d.ClientVersion, f.MinVersion) < 0 {
		return false
	}
	if f.MaxVersion != "" && CompareVersions(d.ClientVersion, f.MaxVersion) > 0 {
		return false
	}
	return true
}

// Check is CheckDevices without a device census: declared versions alone.
func (g Gates) Check(u *User, now time.Time) string { return g.CheckDevices(u, now, nil) }

// CheckDevices returns "" when the user passes the device gate at now, or
// why not. The gate is on when MinVersion is set; it judges every recently
// active device (ActiveWithin; every known device when zero):
//   - by the census (dc) when it saw the device speak: a device that spoke
//     a protocol without the cloud capability (CensusDevice.CloudCapability)
//     fails with GateDeviceCapability, whatever version it declares, and one
//     that spoke a cloud-capable protocol passes;
//   - by its declared version only when the census never saw it, or could
//     not tell what it spoke: below its platform's MinVersion, or of an
//     unlisted platform, fails with GateDeviceVersion.
//
// A user with no recently active device is GateDeviceInconclusive.
func (g Gates) CheckDevices(u *User, now time.Time, dc CensusSource) string {
	if len(g.MinVersion) == 0 {
		return ""
	}
	judged := 0
	for _, d := range u.Devices {
		if !g.recent(d, now) {
			continue
		}
		judged++
		if why := g.judgeDevice(u.ID, d, dc); why != "" {
			return why
		}
	}
	if judged == 0 {
		return GateDeviceInconclusive
	}
	return ""
}

// recent reports whether d counts as recently active at now.
func (g Gates) recent(d Device, now time.Time) bool {
	return g.ActiveWithin <= 0 || now.Sub(d.LastSeen) <= time.Duration(g.ActiveWithin)
}

// judgeDevice is one device's verdict for the device gates: "" (capable),
// GateDeviceCapability, GateDeviceVersion, or GateDeviceInconclusive when
// neither the census nor a MinVersion entry can tell.
func (g Gates) judgeDevice(user string, d Device, dc CensusSource) string {
	if dc != nil {
		if cd, ok := dc.Get(user, d.ID); ok {
			if capable, known, _ := cd.CloudCapability(); known {
				if !capable {
					return GateDeviceCapability
				}
				return ""
			}
		}
	}
	if len(g.MinVersion) == 0 {
		return GateDeviceInconclusive
	}
	min, ok := g.MinVersion[d.Platform]
	if !ok || CompareVersions(d.ClientVersion, min) < 0 {
		return GateDeviceVersion
	}
	return ""
}

// CheckCloud returns "" when the user may go from ready to cloud at now:
// no recently active device is known to lack the cloud capability. Unlike
// the shadow gates it always applies, whatever MinVersion says, because a
// device without the capability would be stranded by the move (DESIGN.md
// "Migration phases"). It holds on evidence, as the manual phase change
// refuses on evidence (CheckCloudMove): a device the census saw speak a
// protocol without the capability holds the user (GateDeviceCapability);
// one the census never saw speak is judged by its declared version when
// MinVersion lists its platform (GateDeviceVersion), and otherwise does not
// hold the user (records written before the census existed, or devices
// evicted from it, would hold every such user forever).
func (g Gates) CheckCloud(u *User, now time.Time, dc CensusSource) string {
	for _, d := range u.Devices {
		if !g.recent(d, now) {
			continue
		}
		if why := g.judgeDevice(u.ID, d, dc); why != "" && why != GateDeviceInconclusive {
			return why
		}
	}
	return ""
}
