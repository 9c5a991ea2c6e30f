package migrate

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
)

// Held-back reasons in a plan and in the driver's decisions.
const (
	HeldExempt = "exempt"
	HeldHeld   = "held"
	HeldFailed = "failed"
)

// Placement is where one user stands in a campaign.
type Placement struct {
	// Eligible is false when the filter leaves the user out.
	Eligible bool
	// Bucket is the user's cohort bucket under the campaign's salt.
	Bucket int
	// Step is the first step whose target covers the user, or -1 when no
	// step does. Opt-ins are in step 0.
	Step int
	// Exempt is true while an exemption runs.
	Exempt bool
}

// Place returns where u stands in c at now. It reads u without keeping it.
func (c *Campaign) Place(u *User, now time.Time) Placement {
	p := Placement{Step: -1}
	if !c.Filter.Eligible(u) {
		return p
	}
	p.Eligible = true
	p.Bucket = bucketNoAlloc(c.Salt, u.ID)
	p.Exempt = c.Exempt(u.ID, now)
	for _, id := range c.OptIns {
		if id == u.ID {
			p.Step = 0
			return p
		}
	}
	for i, s := range c.Steps {
		if p.Bucket < s.TargetBP {
			p.Step = i
			break
		}
	}
	return p
}

// reached reports whether phase is at or past the campaign's target.
func (c *Campaign) reached(p Phase) bool {
	switch p {
	case PhaseCloud, PhaseFinalized:
		return true
	case PhaseReady:
		return c.TargetPhase() == PhaseReady
	}
	return false
}

// NextPhase is the one edge the driver takes for a user in phase p on the way
// to the campaign's target, or "" when there is none (target reached, or a
// phase the driver does not move from).
func (c *Campaign) NextPhase(p Phase) Phase {
	if c.reached(p) {
		return ""
	}
	switch p {
	case PhaseLegacy:
		return PhaseShadow
	case PhaseShadow:
		return PhaseReady
	case PhaseReady:
		return PhaseCloud
	}
	return ""
}

// Verdict is what the campaign would do with one user at its step.
type Verdict struct {
	// Done: the user is at or past the target phase.
	Done bool
	// HeldBack is the reason the user will not move ("" when it will):
	// exempt, held, failed or a gate (GateDeviceVersion and the other
	// Gate constants).
	HeldBack string
	// Next is the next phase for a movable user.
	Next Phase
}

// Judge returns the verdict on u, which Place put in step (≥ 0); src feeds
// the shadow gates (nil: none, so those gates are inconclusive), and the
// device gates too when it is also a CensusSource. A user in ready goes to
// cloud only when Gates.CheckCloud passes, whatever the step's gates.
func (c *Campaign) Judge(u *User, pl Placement, now time.Time, src ShadowSource) Verdict {
	switch {
	case c.reached(u.Phase):
		return Verdict{Done: true}
	case pl.Exempt:
		return Verdict{HeldBack: HeldExempt}
	case u.Phase == PhaseHeld:
		return Verdict{HeldBack: HeldHeld}
	case u.Phase == PhaseFailed:
		return Verdict{HeldBack: HeldFailed}
	}
	dc, _ := src.(CensusSource) // the device gates read the census when src has it
	if u.Phase == PhaseLegacy || u.Phase == PhaseShadow {
		if g := c.Steps[pl.Step].Gates.CheckDevices(u, now, dc); g != "" {
			return Verdict{HeldBack: g}
		}
	}
	if u.Phase == PhaseReady && c.NextPhase(u.Phase) == PhaseCloud {
		if g := c.Steps[pl.Step].Gates.CheckCloud(u, now, dc); g != "" {
			return Verdict{HeldBack: g}
		}
	}
	if u.Phase == PhaseShadow {
		if g := c.Steps[pl.Step].Gates.CheckShadow(u, src); g != "" {
			return Verdict{HeldBack: g}
		}
	}
	return Verdict{Next: c.NextPhase(u.Phase)}
}

// OpID is the operation id of the driver's move of a user to a phase in a
// step: derived, so that a repeated move after a crash or by a second agent
// changes nothing.
func (c *Campaign) OpID(step int, user string, to Phase) string {
	return fmt.Sprintf("%s%d/%s/%s", c.OpPrefix(), step, user, to)
}

// RollbackOpID is the operation id of a rollback move.
func (c *Campaign) RollbackOpID(user string) string {
	return c.OpPrefix() + "rollback/" + user
}

// OpPrefix starts every operation id the campaign's driver issues; a
// rollback finds the campaign's users by it.
func (c *Campaign) OpPrefix() string { return "campaign/" + c.Name + "/" }

// MovedBy reports whether u's phase was last set by the campaign's driver.
func (c *Campaign) MovedBy(u *User) bool { return strings.HasPrefix(u.OpID, c.OpPrefix()) }

// MovedByStep reports whether u's phase was last set by the campaign's
// driver during step (OpID's step part): a step rollback moves back only
// these users.
func (c *Campaign) MovedByStep(u *User, step int) bool {
	return strings.HasPrefix(u.OpID, c.OpPrefix()+strconv.Itoa(step)+"/")
}

// RollbackStepOpID is the operation id of a step rollback's move.
func (c *Campaign) RollbackStepOpID(step int, user string) string {
	return fmt.Sprintf("%srollback/step%d/%s", c.OpPrefix(), step, user)
}

// Plan is what a campaign would do, computed from one consistent snapshot.
type Plan struct {
	Campaign string    `json:"campaign"`
	At       time.Time `json:"at"`
	Salt     string    `json:"salt"`
	// Users is the number of users in the snapshot.
	Users int `json:"users"`
	// Ineligible is how many of them the filter leaves out.
	Ineligible int `json:"ineligible"`
	// Beyond is how many eligible users no step reaches.
	Beyond int        `json:"beyond"`
	Steps  []StepPlan `json:"steps"`
}

// StepPlan counts the users that a step adds to the campaign (the users the
// earlier steps cover are counted there).
type StepPlan struct {
	Step     int `json:"step"`
	TargetBP int `json:"target_bp"`
	// Cohort is the number of users the step adds.
	Cohort int `json:"cohort"`
	// Done are already at the target phase.
	Done int `json:"done"`
	// Move is the number of users the step would move; ByPhase,
	// ByPlatform and ByVersionBand break it down.
	Move          int            `json:"move"`
	ByPhase       map[Phase]int  `json:"by_phase"`
	ByPlatform    map[string]int `json:"by_platform"`
	ByVersionBand map[string]int `json:"by_version_band"`
	// HeldBack counts the users that will not move, by reason.
	HeldBack map[string]int `json:"held_back"`
}

// PlanCampaign computes c's plan over sn at now, with src feeding the shadow
// gates. A campaign that has no salt yet is planned with salt, the one it
// would start with. It reads each user once and allocates per step, not per
// user.
func PlanCampaign(sn *Snapshot, c Campaign, salt string, now time.Time, src ShadowSource) Plan {
	if c.Salt == "" {
		c.Salt = salt
	}
	p := Plan{Campaign: c.Name, At: now, Salt: c.Salt, Steps: make([]StepPlan, len(c.Steps))}
	for i, s := range c.Steps {
		p.Steps[i] = StepPlan{Step: i, TargetBP: s.TargetBP, ByPhase: map[Phase]int{},
			ByPlatform: map[string]int{}, ByVersionBand: map[string]int{}, HeldBack: map[string]int{}}
	}
	// Platform and version strings repeat across users: count them per
	// distinct value first, band them at the end.
	versions := make([]map[string]int, len(c.Steps))
	for i := range versions {
		versions[i] = map[string]int{}
	}
	sn.each(func(u *User) {
		p.Users++
		pl := c.Place(u, now)
		if !pl.Eligible {
			p.Ineligible++
			return
		}
		if pl.Step < 0 {
			p.Beyond++
			return
		}
		sp := &p.Steps[pl.Step]
		sp.Cohort++
		v := c.Judge(u, pl, now, src)
		switch {
		case v.Done:
			sp.Done++
		case v.HeldBack != "":
			sp.HeldBack[v.HeldBack]++
		default:
			sp.Move++
			sp.ByPhase[u.Phase]++
			d, ok := u.Primary()
			platform := d.Platform
			if !ok || platform == "" {
				platform = "unknown"
			}
			sp.ByPlatform[platform]++
			versions[pl.Step][d.ClientVersion]++
		}
	})
	for i, vs := range versions {
		for v, n := range vs {
			p.Steps[i].ByVersionBand[VersionBand(v)] += n
		}
	}
	return p
}

// each calls fn with every stored user, in id order. fn must not change or
// keep the record.
func (sn *Snapshot) each(fn func(*User)) {
	it, err := sn.txn.Get(tableUsers, indexID)
	if err != nil {
		panic(fmt.Sprintf("migrate: memdb scan: %v", err)) // schema bug
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		fn(raw.(*User))
	}
}

// eachInPhase calls fn with every user in phase p, in id order, until fn
// returns false.
func (sn *Snapshot) eachInPhase(p Phase, fn func(*User) bool) {
	var it memdb.ResultIterator
	it, err := sn.txn.Get(tableUsers, indexPhase+"_prefix", string(p))
	if err != nil {
		panic(fmt.Sprintf("migrate: memdb scan: %v", err)) // schema bug
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if !fn(raw.(*User)) {
			return
		}
	}
}
