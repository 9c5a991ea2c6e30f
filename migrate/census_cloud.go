package migrate

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MinCloudCapableChat is the lowest legacy chat version with the cloud
// capability: a legacy device of a user whose home is the cloud works
// through the bridge as one more cloud device, which needs what chat v2
// added (read receipts into the synced history, several devices per user,
// presence, call signalling). A chat v1 device would lose receipts and
// calls for good once the user moved, so it holds the move and cannot be
// linked afterwards.
const MinCloudCapableChat = 2

// DefaultCloudActiveWithin is how far back a device counts as recently
// active for the ready→cloud check of a manual phase change (campaigns use
// their step's Gates.ActiveWithin).
const DefaultCloudActiveWithin = 30 * 24 * time.Hour

// CensusSource is what the device gates read of the device census
// (*DeviceCensus implements it). The planner and the driver call it once per
// device judged: it must answer from memory. A ShadowSource handed to the
// planner or the driver that also implements CensusSource feeds the device
// gates with it.
type CensusSource interface {
	// Get returns what the census saw of the user's device.
	Get(user, device string) (CensusDevice, bool)
}

var _ CensusSource = (*DeviceCensus)(nil)

// CloudCapability tells, from what the device actually spoke, whether it
// has the cloud capability: a cloud device that said hello (it speaks the
// cloud protocol), or a legacy device (overlay or bridge) that speaks chat
// MinCloudCapableChat or later. known is false when the enforcement point
// could not tell the protocol (Protocol 0): capabilities and versions in a
// certificate or hello are claims, never evidence. missing says what the
// device lacks, for operators and notices ("" when capable or unknown).
func (d CensusDevice) CloudCapability() (capable, known bool, missing string) {
	if d.Protocol <= 0 {
		return false, false, ""
	}
	if d.Source == SourceCloud {
		return true, true, ""
	}
	if d.Protocol < MinCloudCapableChat {
		return false, true, "speaks legacy chat v" + strconv.Itoa(d.Protocol) +
			"; the cloud needs chat v" + strconv.Itoa(MinCloudCapableChat) + " or later (read receipts, several devices, calls) or the cloud app"
	}
	return true, true, ""
}

// DeviceGap is a recently active device that keeps a user from the cloud:
// known to lack the cloud capability, or (Inconclusive) never seen speak.
type DeviceGap struct {
	Device        string `json:"device"`
	Platform      string `json:"platform"`
	ClientVersion string `json:"client_version"`
	// Protocol is the protocol band it spoke (CensusDevice.ProtocolBand),
	// "" when the census never saw it.
	Protocol     string `json:"protocol,omitempty"`
	Missing      string `json:"missing,omitempty"`
	Inconclusive bool   `json:"inconclusive,omitempty"`
}

func (g DeviceGap) String() string {
	what := g.Missing
	if g.Inconclusive {
		what = "not seen speaking any protocol yet"
	}
	return fmt.Sprintf("%s %s device %s %s", g.Platform, g.ClientVersion, g.Device, what)
}

// CloudGaps returns the user's devices active within activeWithin of now
// (every device when activeWithin <= 0) that the census dc does not show
// to be cloud-capable, known gaps first.
func CloudGaps(u *User, dc CensusSource, activeWithin time.Duration, now time.Time) []DeviceGap {
	var gaps []DeviceGap
	for _, d := range u.Devices {
		if activeWithin > 0 && now.Sub(d.LastSeen) > activeWithin {
			continue
		}
		g := DeviceGap{Device: d.ID, Platform: d.Platform, ClientVersion: d.ClientVersion, Inconclusive: true}
		if dc != nil {
			if cd, ok := dc.Get(u.ID, d.ID); ok {
				capable, known, missing := cd.CloudCapability()
				if known && capable {
					continue
				}
				g.Protocol, g.Missing, g.Inconclusive = cd.ProtocolBand(), missing, !known
			}
		}
		gaps = append(gaps, g)
	}
	slices.SortStableFunc(gaps, func(a, b DeviceGap) int {
		switch {
		case a.Inconclusive == b.Inconclusive:
			return 0
		case b.Inconclusive:
			return -1
		}
		return 1
	})
	return gaps
}

// ErrNotCloudCapable is matched (errors.Is) by the *CloudCapabilityError
// that the gateway's phase change returns when a ready→cloud move would
// strand a device. It matches ErrIllegalTransition too: the move is refused,
// like any transition the table refuses, and audited as refused.
var ErrNotCloudCapable = errors.New("migrate: a recently active device lacks the cloud capability")

// CloudCapabilityError refuses a move to the cloud and names the devices
// that lack the capability.
type CloudCapabilityError struct {
	User string
	Gaps []DeviceGap
}

func (e *CloudCapabilityError) Error() string {
	parts := make([]string, 0, len(e.Gaps))
	for _, g := range e.Gaps {
		parts = append(parts, g.String())
	}
	return fmt.Sprintf("cannot move %s from ready to cloud: a recently active device lacks the cloud capability: %s",
		e.User, strings.Join(parts, "; "))
}

// Is matches ErrNotCloudCapable and ErrIllegalTransition.
func (e *CloudCapabilityError) Is(target error) bool {
	return target == ErrNotCloudCapable || target == ErrIllegalTransition
}

// CheckCloudMove returns a *CloudCapabilityError when u, in ready, has a
// device active within activeWithin of now that the census knows lacks the
// cloud capability, and nil otherwise (any other phase, or no such device).
// A device the census never saw speak does not refuse a manual move on its
// own: an operator's explicit change needs evidence to be refused, where a
// campaign needs evidence to proceed (Gates.CheckCloud).
func CheckCloudMove(u *User, to Phase, dc CensusSource, activeWithin time.Duration, now time.Time) error {
	if u.Phase != PhaseReady || to != PhaseCloud {
		return nil
	}
	var known []DeviceGap
	for _, g := range CloudGaps(u, dc, activeWithin, now) {
		if !g.Inconclusive {
			known = append(known, g)
		}
	}
	if len(known) == 0 {
		return nil
	}
	return &CloudCapabilityError{User: u.ID, Gaps: known}
}

// ReasonNotCloudCapable is the reason of a refused device link: a new
// legacy device of a user whose home is the cloud speaks a chat version
// without the cloud capability (below MinCloudCapableChat).
const ReasonNotCloudCapable = "not_cloud_capable"

// GuardLink applies the rule for new devices of a user whose home is the
// cloud (phase cloud or finalized) to dec, the version decision for d: a
// device that is not cloud-capable cannot be linked. That is a legacy
// device seen speaking a chat version below MinCloudCapableChat, or (with a
// policy p) a device whose protocol or capabilities fall short of the
// policy's minimum protocol or required capabilities, whatever stage the
// schedule is in. Such a device gets the soft block's answer (refused when
// new, with the notice; a device already linked keeps working), which every
// enforcement point already gives. Any other case returns dec unchanged.
func GuardLink(p *VersionPolicy, dec Decision, phase Phase, d ClientDevice) Decision {
	if (phase != PhaseCloud && phase != PhaseFinalized) || d.Known || dec.Refuses(false) {
		return dec
	}
	reason := ""
	switch {
	case d.Network != SourceCloud && d.Protocol > 0 && d.Protocol < MinCloudCapableChat:
		reason = ReasonNotCloudCapable
	case p != nil:
		if _, why := p.Affects(phase, d); why == ReasonMissingCapability || why == ReasonProtocolTooOld {
			reason = why
		}
	}
	if reason == "" {
		return dec
	}
	out := Decision{Outcome: VersionSoftBlock, Stage: dec.Stage, Reason: reason, Affected: true, Deadline: dec.Deadline}
	if out.Stage == "" {
		out.Stage = StageDraft
	}
	var b strings.Builder
	b.WriteString("Your account has moved to the new service, and this")
	if d.Platform != "" {
		b.WriteString(" " + d.Platform)
	}
	b.WriteString(" app")
	if d.Version != "" {
		b.WriteString(" (version " + d.Version + ")")
	}
	b.WriteString(" cannot be added as a new device: ")
	if reason == ReasonNotCloudCapable {
		b.WriteString("it speaks chat v" + strconv.Itoa(d.Protocol) + ", and the new service needs chat v" + strconv.Itoa(MinCloudCapableChat) + " or later")
	} else {
		b.WriteString("it lacks features the new service requires")
	}
	if p != nil {
		out.Minimum, out.Recommended, out.UpdateURL = p.Minimum, p.Recommended, p.UpdateURL
		switch {
		case p.Recommended != "":
			b.WriteString("; please update to " + p.Recommended + " or later")
		case p.Minimum != "":
			b.WriteString("; please update to " + p.Minimum + " or later")
		default:
			b.WriteString("; please update")
		}
		if p.UpdateURL != "" {
			b.WriteString(" at " + p.UpdateURL)
		}
	} else {
		b.WriteString("; please update the app or use the new service's app")
	}
	b.WriteString(".")
	out.Notice = b.String()
	return out
}
