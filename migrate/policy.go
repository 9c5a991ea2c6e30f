package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
)

// Stage is where a version policy's schedule stands. Stages are stable
// strings: they appear in JSON, logs and metric labels.
type Stage string

// The stages of a version policy, in schedule order.
const (
	// StageDraft: written down, nothing counted or enforced.
	StageDraft Stage = "draft"
	// StageDryRun: affected devices are counted, nothing is enforced.
	StageDryRun Stage = "dry_run"
	// StageAnnounced: the schedule is public; still nothing is enforced.
	StageAnnounced Stage = "announced"
	// StageWarning: affected devices are told, and still admitted.
	StageWarning Stage = "warning"
	// StageSoftBlock: no new sign-ins or device links for affected devices;
	// devices already known keep working.
	StageSoftBlock Stage = "soft_block"
	// StageHardBlock: affected devices are refused, each from its own
	// moment inside the jitter window (so that refused clients do not all
	// go quiet, or all retry, at once).
	StageHardBlock Stage = "hard_block"
	// StageRetired: every affected device is refused.
	StageRetired Stage = "retired"
)

var stages = []Stage{StageDraft, StageDryRun, StageAnnounced, StageWarning, StageSoftBlock, StageHardBlock, StageRetired}

// Stages returns every stage in schedule order.
func Stages() []Stage { return slices.Clone(stages) }

// Valid reports whether s is one of the defined stages.
func (s Stage) Valid() bool { return slices.Contains(stages, s) }

func (s Stage) rank() int { return slices.Index(stages, s) }

// VersionOutcome is what a version decision tells an enforcement point to do.
type VersionOutcome string

// Outcomes of Decide.
const (
	// VersionAllow: admit the device.
	VersionAllow VersionOutcome = "allow"
	// VersionWarn: admit the device and deliver the notice.
	VersionWarn VersionOutcome = "warn"
	// VersionSoftBlock: refuse a new sign-in or device link; a device
	// already known keeps working.
	VersionSoftBlock VersionOutcome = "soft_block"
	// VersionHardBlock: refuse the device.
	VersionHardBlock VersionOutcome = "hard_block"
)

// VersionOutcomes returns every outcome, mildest first.
func VersionOutcomes() []VersionOutcome {
	return []VersionOutcome{VersionAllow, VersionWarn, VersionSoftBlock, VersionHardBlock}
}

// Valid reports whether o is one of the defined outcomes.
func (o VersionOutcome) Valid() bool { return slices.Contains(VersionOutcomes(), o) }

// Refuses reports whether an enforcement point refuses the device: always
// for a hard block, and for a soft block only when the device is new (not
// already linked to the user).
func (o VersionOutcome) Refuses(known bool) bool {
	return o == VersionHardBlock || (o == VersionSoftBlock && !known)
}

// UnknownAction says what a policy does with a client whose version cannot
// be parsed.
type UnknownAction string

// Unknown-version actions.
const (
	// UnknownAllow leaves unparsable versions alone (the default).
	UnknownAllow UnknownAction = "allow"
	// UnknownEnforce treats unparsable versions as below the minimum.
	UnknownEnforce UnknownAction = "enforce"
)

// Reasons a device is affected by a policy, stable for JSON and audit.
const (
	ReasonBlockedVersion     = "blocked_version"
	ReasonBelowMinimum       = "below_minimum"
	ReasonUnknownVersion     = "unknown_version"
	ReasonMissingCapability  = "missing_capability"
	ReasonProtocolTooOld     = "protocol_too_old"
	ReasonCurrent            = "current"
	ReasonOutOfScope         = "out_of_scope"
	ReasonNoPolicy           = "no_policy"
	ReasonNotYetEnforced     = "not_yet_enforced"
	ReasonWithinJitterWindow = "within_jitter_window"
)

// AuditVersions is the audit kind of version-policy changes and emergency
// blocks.
const AuditVersions = "versions"

// Limits on a policy.
const (
	maxBlocked      = 256
	maxCaps         = 32
	maxPolicyString = 512
	// MaxJitterWindow bounds a policy's hard-block jitter window.
	MaxJitterWindow = 90 * 24 * time.Hour
)

// ErrInvalidPolicy is returned by VersionPolicy.Validate and ParsePolicy,
// and by the policy stores and admin API that call them, for a policy that
// cannot be enforced.
var ErrInvalidPolicy = errors.New("migrate: invalid version policy")

// ErrPolicyNotFound is returned by policy stores
// (migratestore.Policies.Get) when a platform has no policy.
var ErrPolicyNotFound = errors.New("migrate: version policy not found")

// StageAt is one dated step of a policy's schedule.
type StageAt struct {
	Stage Stage     `json:"stage"`
	At    time.Time `json:"at"`
}

// BlockedVersion is an exact version refused outright: an emergency block
// skips the schedule and carries its reason.
type BlockedVersion struct {
	Version string    `json:"version"`
	Reason  string    `json:"reason"`
	Since   time.Time `json:"since,omitzero"`
}

// VersionPolicy is the client-version retirement policy of one platform.
type VersionPolicy struct {
	Platform string `json:"platform"`
	// Recommended is the version notices point to.
	Recommended string `json:"recommended,omitempty"`
	// Minimum: devices below it are affected by the schedule.
	Minimum string `json:"minimum,omitempty"`
	// Blocked versions are refused whatever the schedule and the scope say.
	Blocked []BlockedVersion `json:"blocked,omitempty"`
	// RequiredCaps: a device lacking one of them is affected.
	RequiredCaps []string `json:"required_caps,omitempty"`
	// MinLegacyProtocol and MinCloudProtocol: a device that actually
	// speaks an older protocol version of its network (legacy chat 1-3,
	// cloud 1 and up: two scales that must not be compared) is affected,
	// whatever version it claims. 0 checks nothing. Policies saved before
	// the split carry one min_protocol; UnmarshalJSON moves it to the
	// network it can have meant.
	MinLegacyProtocol int `json:"min_legacy_protocol,omitempty"`
	MinCloudProtocol  int `json:"min_cloud_protocol,omitempty"`
	// Unknown says what to do with unparsable versions; default allow.
	Unknown UnknownAction `json:"unknown,omitempty"`
	// Scope, when set, limits the schedule to users in these phases (for
	// example cloud and finalized, so that nobody is locked out before their
	// cloud home exists). Emergency blocks ignore it.
	Scope []Phase `json:"scope,omitempty"`
	// Schedule dates the stages; stages must come in order and dates must
	// not go backwards. The current stage is the last one whose date has
	// passed (draft before the first).
	Schedule []StageAt `json:"schedule,omitempty"`
	// JitterWindow spreads the hard block: each device is refused from
	// hard_block's date plus its own share of the window.
	JitterWindow Duration `json:"jitter_window,omitempty"`
	// UpdateURL is where notices send people.
	UpdateURL string `json:"update_url,omitempty"`
	// Notice is the human-readable text shown to affected users; empty
	// means a default built from the fields above.
	Notice string `json:"notice,omitempty"`

	Updated time.Time `json:"updated,omitzero"`
	// LastOp is the id of the operation that last changed the policy: a
	// change repeated with it changes and audits nothing.
	LastOp string `json:"last_op,omitempty"`
	// Audit is the audit log's sequence of the event written (before the
	// record) for that change: the head of the policy's audit chain
	// (migratestore.Policies.ModifyAudited). Policies saved before audited
	// changes have neither.
	Audit    uint64 `json:"audit,omitempty"`
	Revision uint64 `json:"revision"`
}

// maxLegacyChatProtocol is the highest legacy chat protocol version
// (legacy.LatestChatVersion; migrate imports no transport, and a gateway
// test keeps the two equal). A pre-split min_protocol above it can only
// have meant the cloud protocol.
const maxLegacyChatProtocol = 3

// UnmarshalJSON reads a policy, moving the min_protocol of policies saved
// before the split to the network it can have meant: up to
// maxLegacyChatProtocol a legacy chat version, above it the cloud
// protocol. A policy that sets the new fields keeps them.
func (p *VersionPolicy) UnmarshalJSON(b []byte) error {
	type plain VersionPolicy // no methods: no recursion
	var v struct {
		plain
		MinProtocol int `json:"min_protocol"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = VersionPolicy(v.plain)
	switch old := v.MinProtocol; {
	case old == 0 || p.MinLegacyProtocol != 0 || p.MinCloudProtocol != 0:
	case old < 0:
		p.MinLegacyProtocol = old // Validate refuses it
	case old <= maxLegacyChatProtocol:
		p.MinLegacyProtocol = old
	default:
		p.MinCloudProtocol = old
	}
	return nil
}

// minProtocol is the policy's minimum protocol on the scale of network
// (ClientDevice.Network).
func (p *VersionPolicy) minProtocol(network string) int {
	if network == SourceCloud {
		return p.MinCloudProtocol
	}
	return p.MinLegacyProtocol
}

// ParsePolicy reads and validates a policy from JSON.
func ParsePolicy(b []byte) (VersionPolicy, error) {
	var p VersionPolicy
	if err := json.Unmarshal(b, &p); err != nil {
		return VersionPolicy{}, fmt.Errorf("%w: %v", ErrInvalidPolicy, err)
	}
	if err := p.Validate(); err != nil {
		return VersionPolicy{}, err
	}
	return p, nil
}

// Clone returns a deep copy of p.
func (p VersionPolicy) Clone() VersionPolicy {
	p.Blocked = slices.Clone(p.Blocked)
	p.RequiredCaps = slices.Clone(p.RequiredCaps)
	p.Scope = slices.Clone(p.Scope)
	p.Schedule = slices.Clone(p.Schedule)
	return p
}

// CheckPlatform reports whether s can name a platform (a KV key and a
// metric label): 1 to 32 of a-z, 0-9, '-' and '_'.
func CheckPlatform(s string) error {
	if len(s) == 0 || len(s) > 32 {
		return fmt.Errorf("%w: platform %q: 1 to 32 characters", ErrInvalidPolicy, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: platform %q: use a-z, 0-9, '-' and '_'", ErrInvalidPolicy, s)
		}
	}
	return nil
}

// Validate reports every reason the policy cannot be enforced.
func (p VersionPolicy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidPolicy}, args...)...))
	}
	if err := CheckPlatform(p.Platform); err != nil {
		errs = append(errs, err)
	}
	for name, v := range map[string]string{"minimum": p.Minimum, "recommended": p.Recommended} {
		if _, ok := parseVersion(v); v != "" && !ok {
			bad("%s %q is not a dotted version", name, v)
		}
	}
	if p.Minimum != "" && p.Recommended != "" && CompareVersions(p.Recommended, p.Minimum) < 0 {
		bad("recommended %s is below minimum %s", p.Recommended, p.Minimum)
	}
	if len(p.Blocked) > maxBlocked {
		bad("%d blocked versions, at most %d", len(p.Blocked), maxBlocked)
	}
	for _, b := range p.Blocked {
		if b.Version == "" || len(b.Version) > 64 {
			bad("blocked version %q: 1 to 64 characters", b.Version)
		}
		if strings.TrimSpace(b.Reason) == "" {
			bad("blocked version %q needs a reason", b.Version)
		}
	}
	if len(p.RequiredCaps) > maxCaps {
		bad("%d required capabilities, at most %d", len(p.RequiredCaps), maxCaps)
	}
	if p.MinLegacyProtocol < 0 || p.MinCloudProtocol < 0 {
		bad("negative min_legacy_protocol %d or min_cloud_protocol %d", p.MinLegacyProtocol, p.MinCloudProtocol)
	}
	switch p.Unknown {
	case "", UnknownAllow, UnknownEnforce:
	default:
		bad("unknown %q: allow or enforce", p.Unknown)
	}
	for _, ph := range p.Scope {
		if !ph.Valid() {
			bad("scope phase %q", ph)
		}
	}
	for i, s := range p.Schedule {
		if !s.Stage.Valid() {
			bad("schedule stage %q", s.Stage)
			continue
		}
		if s.At.IsZero() {
			bad("schedule stage %s has no date", s.Stage)
		}
		if i > 0 {
			prev := p.Schedule[i-1]
			if prev.Stage.Valid() && s.Stage.rank() <= prev.Stage.rank() {
				bad("schedule stage %s after %s: stages go forward", s.Stage, prev.Stage)
			}
			if s.At.Before(prev.At) {
				bad("schedule stage %s is dated before %s", s.Stage, prev.Stage)
			}
		}
	}
	if p.JitterWindow < 0 || time.Duration(p.JitterWindow) > MaxJitterWindow {
		bad("jitter_window %v: 0 to %v", time.Duration(p.JitterWindow), MaxJitterWindow)
	}
	if len(p.UpdateURL) > maxPolicyString || len(p.Notice) > maxPolicyString {
		bad("update_url and notice: at most %d bytes", maxPolicyString)
	}
	return errors.Join(errs...)
}

// StageAt returns the stage the schedule is in at now, and when it began
// (zero for draft before the first date).
func (p VersionPolicy) StageAt(now time.Time) (Stage, time.Time) {
	st, since := StageDraft, time.Time{}
	for _, s := range p.Schedule {
		if now.Before(s.At) {
			break
		}
		st, since = s.Stage, s.At
	}
	return st, since
}

// DateOf returns the date of a stage in the schedule, if it is there.
func (p VersionPolicy) DateOf(s Stage) (time.Time, bool) {
	for _, e := range p.Schedule {
		if e.Stage == s {
			return e.At, true
		}
	}
	return time.Time{}, false
}

// ClientDevice is what an enforcement point knows of a device when it
// decides: its self-declared platform and version, the capabilities its
// certificate or hello carries, and the protocol version it actually speaks
// (0 when the point cannot tell). Nil Capabilities means unknown and skips
// the capability check; a device with none has an empty, non-nil slice.
type ClientDevice struct {
	ID           string
	Platform     string
	Version      string
	Capabilities []string
	Protocol     int
	// Network says which scale Protocol is on: SourceCloud for the cloud
	// protocol; anything else (SourceLegacy, SourceBridge, empty) for a
	// legacy chat version.
	Network string
	// Known is true when the device is already linked to the user (seen
	// before): a soft block lets it keep working.
	Known bool
}

// Decision is the outcome of Decide with what drove it.
type Decision struct {
	Outcome VersionOutcome `json:"outcome"`
	Stage   Stage          `json:"stage"`
	// Reason is one of the Reason constants: why the device is affected,
	// or why it is not.
	Reason string `json:"reason"`
	// Affected is true when the device falls under the policy whatever the
	// stage: a dry run counts these.
	Affected bool `json:"affected"`
	// Deadline is when this device is (or will be) hard-blocked; zero when
	// the schedule has no hard block or the device is not affected.
	Deadline    time.Time `json:"deadline,omitzero"`
	Minimum     string    `json:"minimum,omitempty"`
	Recommended string    `json:"recommended,omitempty"`
	UpdateURL   string    `json:"update_url,omitempty"`
	// NextStage and NextStageAt are what comes next for this device and
	// when: the next dated stage of the schedule, at the device's own
	// moment for a hard block. Empty when nothing further is scheduled or
	// the device is not affected.
	NextStage   Stage     `json:"next_stage,omitempty"`
	NextStageAt time.Time `json:"next_stage_at,omitzero"`
	// Notice is the human-readable text for the user ("" when allowed):
	// what is wrong, the version to update to, where, and (while the
	// device is still admitted) the date of the next stage.
	Notice string `json:"notice,omitempty"`
}

// Refuses reports whether an enforcement point refuses the device.
func (d Decision) Refuses(known bool) bool { return d.Outcome.Refuses(known) }

// Tells reports whether an enforcement point admits the device but must
// pass the notice on: in the warning stage, and for a known device under a
// soft block (or inside the hard block's jitter window).
func (d Decision) Tells(known bool) bool { return d.Notice != "" && !d.Refuses(known) }

// Affects reports whether the device falls under the policy, whatever the
// stage, and why. Emergency blocks come first and ignore the scope.
func (p *VersionPolicy) Affects(phase Phase, d ClientDevice) (bool, string) {
	if p == nil || d.Platform != p.Platform {
		return false, ReasonNoPolicy
	}
	for _, b := range p.Blocked {
		if b.Version == d.Version {
			return true, ReasonBlockedVersion
		}
	}
	if len(p.Scope) > 0 && !slices.Contains(p.Scope, phase) {
		return false, ReasonOutOfScope
	}
	if p.Minimum != "" {
		if _, ok := parseVersion(d.Version); !ok {
			if p.Unknown == UnknownEnforce {
				return true, ReasonUnknownVersion
			}
		} else if CompareVersions(d.Version, p.Minimum) < 0 {
			return true, ReasonBelowMinimum
		}
	}
	if minProto := p.minProtocol(d.Network); minProto > 0 && d.Protocol > 0 && d.Protocol < minProto {
		return true, ReasonProtocolTooOld
	}
	for _, c := range p.RequiredCaps {
		if d.Capabilities != nil && !slices.Contains(d.Capabilities, c) {
			return true, ReasonMissingCapability
		}
	}
	return false, ReasonCurrent
}

// Decide is the version decision for one device of a user in phase at now.
// It is pure: the same inputs give the same decision on every node.
func Decide(p *VersionPolicy, phase Phase, d ClientDevice, now time.Time) Decision {
	if p == nil {
		return Decision{Outcome: VersionAllow, Stage: StageDraft, Reason: ReasonNoPolicy}
	}
	stage, _ := p.StageAt(now)
	dec := Decision{Outcome: VersionAllow, Stage: stage, Minimum: p.Minimum, Recommended: p.Recommended, UpdateURL: p.UpdateURL}
	affected, reason := p.Affects(phase, d)
	dec.Affected, dec.Reason = affected, reason
	if !affected {
		dec.Minimum, dec.Recommended, dec.UpdateURL = "", "", ""
		return dec
	}
	if reason == ReasonBlockedVersion {
		dec.Outcome, dec.Deadline = VersionHardBlock, now
		dec.Notice = p.notice(d, reason)
		return dec
	}
	if at, ok := p.DateOf(StageHardBlock); ok {
		dec.Deadline = at.Add(p.jitter(d.ID))
	} else if at, ok := p.DateOf(StageRetired); ok {
		dec.Deadline = at
	}
	switch stage {
	case StageWarning:
		dec.Outcome = VersionWarn
	case StageSoftBlock:
		dec.Outcome = VersionSoftBlock
	case StageHardBlock:
		dec.Outcome = VersionHardBlock
		if now.Before(dec.Deadline) {
			dec.Outcome, dec.Reason = VersionSoftBlock, ReasonWithinJitterWindow
		}
	case StageRetired:
		dec.Outcome = VersionHardBlock
	default:
		dec.Reason = ReasonNotYetEnforced
	}
	dec.NextStage, dec.NextStageAt = p.nextStage(now, dec.Deadline)
	if dec.Outcome != VersionAllow {
		dec.Notice = p.notice(d, reason)
		if dec.Outcome != VersionHardBlock {
			dec.Notice += nextStageNotice(dec.NextStage, dec.NextStageAt)
		}
	}
	return dec
}

// nextStage is the first stage of the schedule dated after now; a hard
// block comes at the device's own deadline inside the jitter window.
func (p *VersionPolicy) nextStage(now, deadline time.Time) (Stage, time.Time) {
	if hb, ok := p.DateOf(StageHardBlock); ok && !hb.After(now) && deadline.After(now) {
		return StageHardBlock, deadline // inside the jitter window
	}
	for _, s := range p.Schedule {
		if !s.At.After(now) {
			continue
		}
		if s.Stage == StageHardBlock && deadline.After(s.At) {
			return s.Stage, deadline
		}
		return s.Stage, s.At
	}
	return "", time.Time{}
}

// nextStageNotice tells an admitted user what the next stage changes for
// them, and from when (a date in UTC); "" when nothing more is scheduled.
func nextStageNotice(next Stage, at time.Time) string {
	var what string
	switch next {
	case StageSoftBlock:
		what = "new sign-ins and device links with this version will be refused"
	case StageHardBlock, StageRetired:
		what = "this version will stop working"
	default:
		return ""
	}
	return " From " + at.UTC().Format("2006-01-02 15:04 MST") + ", " + what + "."
}

// jitter is the device's share of the jitter window, from a stable hash of
// its id: the same on every node and across restarts.
func (p *VersionPolicy) jitter(device string) time.Duration {
	w := time.Duration(p.JitterWindow)
	if w <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(p.Platform))
	h.Write([]byte{0})
	h.Write([]byte(device))
	frac := int64(h.Sum64() % uint64(BasisPoints)) // #nosec G115 -- below BasisPoints (10,000)
	return w / BasisPoints * time.Duration(frac)
}

func (p *VersionPolicy) notice(d ClientDevice, reason string) string {
	if p.Notice != "" {
		return p.Notice
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Your %s app", p.Platform)
	if d.Version != "" {
		fmt.Fprintf(&b, " (version %s)", d.Version)
	}
	switch reason {
	case ReasonBlockedVersion:
		b.WriteString(" can no longer be used")
	case ReasonMissingCapability, ReasonProtocolTooOld:
		b.WriteString(" lacks features the service now requires")
	default:
		b.WriteString(" is no longer supported")
	}
	if p.Recommended != "" {
		fmt.Fprintf(&b, "; please update to %s or later", p.Recommended)
	} else if p.Minimum != "" {
		fmt.Fprintf(&b, "; please update to %s or later", p.Minimum)
	} else {
		b.WriteString("; please update")
	}
	if p.UpdateURL != "" {
		fmt.Fprintf(&b, " at %s", p.UpdateURL)
	}
	b.WriteString(".")
	return b.String()
}
