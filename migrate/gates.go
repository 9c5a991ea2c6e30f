package migrate

// Held-back reasons of the gates (Verdict.HeldBack, plan and status
// counts). A reason ending in "_inconclusive" means the evidence was
// missing or too thin: the user waits, neither passed nor failed.
const (
	GateDeviceVersion        = "gate:device_version"
	GateDeviceCapability     = "gate:device_capability"
	GateDeviceInconclusive   = "gate:device_inconclusive"
	GateBackfill             = "gate:backfill"
	GateBackfillInconclusive = "gate:backfill_inconclusive"
	GateMismatch             = "gate:shadow_mismatch"
	GateMismatchInconclusive = "gate:shadow_mismatch_inconclusive"
)

// inconclusiveSuffix ends every held-back reason of an inconclusive gate.
const inconclusiveSuffix = "_inconclusive"

// DefaultMismatchMinSamples is MismatchGate.MinSamples when unset.
const DefaultMismatchMinSamples = 100

// MismatchGate holds a user in shadow while the bridge's shadow compare of
// the user's traffic finds too many mismatches, or has compared too little.
type MismatchGate struct {
	// MaxRate is the highest mismatch rate (Mismatched/Compared) that
	// passes, a fraction.
	MaxRate float64 `json:"max_rate"`
	// MinSamples is how many compared items a verdict needs; fewer is
	// inconclusive. Default DefaultMismatchMinSamples.
	MinSamples int `json:"min_samples,omitempty"`
}

// ShadowReport is what the bridge measured of one user in shadow.
type ShadowReport struct {
	// BackfillDone is true once the user's history is in the cloud in full.
	BackfillDone bool `json:"backfill_done"`
	// Compared counts the items the shadow compare checked, Mismatched
	// those that differed between the two sides.
	Compared   int `json:"compared"`
	Mismatched int `json:"mismatched"`
}

// ShadowSource supplies the per-user measurements of the backfill and
// shadow-mismatch gates (gateway reads them from the bridge). The planner
// and the driver call it once per user in shadow, from one goroutine per
// survey: it must answer from memory.
type ShadowSource interface {
	// Shadow returns the user's report; ok is false when the source has
	// none, which makes the shadow gates inconclusive for the user.
	Shadow(user string) (r ShadowReport, ok bool)
}

// CheckShadow returns "" when u passes the backfill and shadow-mismatch
// gates, or the held-back reason. A nil src has no reports.
func (g Gates) CheckShadow(u *User, src ShadowSource) string {
	if !g.Backfill && g.Mismatch == nil {
		return ""
	}
	var r ShadowReport
	ok := false
	if src != nil {
		r, ok = src.Shadow(u.ID)
	}
	if g.Backfill {
		switch {
		case !ok:
			return GateBackfillInconclusive
		case !r.BackfillDone:
			return GateBackfill
		}
	}
	if m := g.Mismatch; m != nil {
		min := m.MinSamples
		if min <= 0 {
			min = DefaultMismatchMinSamples
		}
		switch {
		case !ok || r.Compared < min:
			return GateMismatchInconclusive
		case float64(r.Mismatched)/float64(r.Compared) > m.MaxRate:
			return GateMismatch
		}
	}
	return ""
}
