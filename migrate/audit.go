package migrate

import "time"

// Kinds of audit events.
const (
	// AuditTransition: a user's phase changed, or a change was refused.
	AuditTransition = "transition"
	// AuditCampaign: a campaign was created, changed state or step.
	AuditCampaign = "campaign"
	// AuditFreeze: the global freeze was turned on or off.
	AuditFreeze = "freeze"
	// AuditExempt: a user was exempted from a campaign, or no longer.
	AuditExempt = "exempt"
	// AuditRevocation: a legacy device's certificate was revoked.
	AuditRevocation = "revocation"
)

// Actors other than an operator's token subject.
const (
	// ActorDriver is the campaign driver of an agent.
	ActorDriver = "driver"
)

// AuditEvent is one decision, automatic or manual, as the audit log keeps it
// (DESIGN.md: "every decision goes to the audit log with the values and
// thresholds that drove it").
type AuditEvent struct {
	At    time.Time `json:"at"`
	Kind  string    `json:"kind"`
	Actor string    `json:"actor"`
	OpID  string    `json:"op_id,omitempty"`
	// Campaign and Step say which campaign step decided; Step is -1 when
	// the event is not about a step.
	Campaign string `json:"campaign,omitempty"`
	Step     int    `json:"step"`
	User     string `json:"user,omitempty"`
	// From and To are phases for a transition, campaign states for a
	// campaign event, "on"/"off" for the freeze.
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Result is "ok", "refused" or "error".
	Result string `json:"result"`
	// Values and Thresholds are the measurements that drove the decision
	// and the limits they were held to (pace, target and actual basis
	// points, gate values).
	Values     map[string]float64 `json:"values,omitempty"`
	Thresholds map[string]float64 `json:"thresholds,omitempty"`
}

// Results of an audited decision.
const (
	ResultOK      = "ok"
	ResultRefused = "refused"
	ResultError   = "error"
)

// ResultRepeat is the result the driver reports (DriverConfig.OnTransition)
// for a move a batch mover found already made (ErrRepeated). It is never
// audited: the move it repeats was.
const ResultRepeat = "repeat"
