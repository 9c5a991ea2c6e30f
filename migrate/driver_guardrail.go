package migrate

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// AuditGuardrail is the kind of audit event that records one evaluation of a
// campaign's guardrails, with every value and threshold.
const AuditGuardrail = "guardrail"

// guard evaluates c's guardrails when due and acts on a fail: it pauses the
// campaign or starts its rollback (OnGuardrailFail) and reports stopped.
// Between evaluations it returns the last outcome. A campaign without
// guardrails always passes.
func (d *Driver) guard(ctx context.Context, c Campaign, now time.Time) (outcome GuardrailOutcome, stopped bool, err error) {
	if len(c.Guardrails) == 0 {
		return GuardrailPass, false, nil
	}
	d.mu.Lock()
	last, ok := d.evals[c.Name]
	d.mu.Unlock()
	if ok && now.Sub(last.at) < d.cfg.GuardrailEvery {
		if last.outcome == GuardrailFail {
			// The fail's pause or rollback did not land (another writer
			// changed the campaign, the engine failed): act on it again
			// rather than move anyone until the next evaluation.
			return last.outcome, true, d.stopOnFail(ctx, c, last.event, now)
		}
		return last.outcome, false, nil
	}
	results := make([]GuardrailResult, 0, len(c.Guardrails))
	for _, g := range c.Guardrails {
		var r GuardrailResult
		switch {
		case g.Measure == MeasurePromQL && g.PromQL != nil:
			r = g.Evaluate(ctx, promSource{q: d.cfg.Prometheus, m: *g.PromQL, control: g.control()}, now)
		case d.cfg.Measures == nil:
			r = GuardrailResult{Guardrail: g.Name, Outcome: GuardrailInconclusive, Threshold: g.MaxExcess, Err: "no measurement source"}
		default:
			r = g.Evaluate(ctx, d.cfg.Measures, now)
		}
		results = append(results, r)
		if d.cfg.OnGuardrail != nil {
			d.cfg.OnGuardrail(c.Name, r)
		}
	}
	outcome = CombineGuardrails(results)
	ev := AuditEvent{At: now, Kind: AuditGuardrail, Actor: ActorDriver, Campaign: c.Name, Step: c.Step,
		To: string(outcome), Reason: describeGuardrails(results), Result: ResultOK,
		Values: map[string]float64{}, Thresholds: map[string]float64{}}
	for _, r := range results {
		ev.Values[r.Guardrail+".value"] = r.Value
		ev.Values[r.Guardrail+".cohort_total"] = r.Cohort.Total
		ev.Values[r.Guardrail+".cohort_bad"] = r.Cohort.Bad
		ev.Values[r.Guardrail+".control_total"] = r.Control.Total
		ev.Values[r.Guardrail+".control_bad"] = r.Control.Bad
		ev.Thresholds[r.Guardrail+".max_excess"] = r.Threshold
		ev.Thresholds[r.Guardrail+".min_samples"] = float64(r.MinSamples)
	}
	d.mu.Lock()
	d.evals[c.Name] = guardrailEval{at: now, outcome: outcome, results: results, event: ev}
	d.mu.Unlock()
	if err := d.cfg.Audit.Record(ctx, ev); err != nil {
		return outcome, outcome == GuardrailFail, fmt.Errorf("audit: %w", err)
	}
	if outcome != GuardrailFail {
		return outcome, false, nil
	}
	return outcome, true, d.stopOnFail(ctx, c, ev, now)
}

// stopOnFail pauses c or starts its rollback (OnGuardrailFail) for the
// failed evaluation ev, audited first with ev's values and thresholds. On
// an error the evaluation stays cached as a fail, so that every tick until
// the next evaluation tries again and moves nobody.
func (d *Driver) stopOnFail(ctx context.Context, c Campaign, ev AuditEvent, now time.Time) error {
	cmd := CmdPause
	switch c.OnGuardrailFail {
	case OnFailRollback:
		cmd = CmdRollback
	case OnFailRollbackStep:
		cmd = CmdRollbackStep
	}
	next, err := c.Lifecycle(cmd, "guardrail failed: "+ev.Reason, "", now)
	if err != nil {
		return err
	}
	cev := ev
	cev.At, cev.Step = now, c.Step
	cev.Kind, cev.From, cev.To, cev.Reason = AuditCampaign, string(c.State), string(next.State), next.Reason
	if err := d.decide(ctx, c, "guardrail-"+string(cmd), next, cev); err != nil {
		return err // changed meanwhile: tried again next tick
	}
	d.mu.Lock()
	delete(d.evals, c.Name) // a resumed campaign is judged afresh
	d.mu.Unlock()
	d.log.Warn("guardrail failed", "campaign", c.Name, "step", c.Step, "action", cmd, "detail", ev.Reason)
	return nil
}

// describeGuardrails is a one-line account of the evaluations, for the
// audit log and the campaign's reason.
func describeGuardrails(rs []GuardrailResult) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		s := fmt.Sprintf("%s %s: cohort %.4f (%g of %g) - control %.4f (%g of %g) = %.4f, max %.4f, min samples %d",
			r.Guardrail, r.Outcome, r.Cohort.Rate(), r.Cohort.Bad, r.Cohort.Total, r.Control.Rate(), r.Control.Bad, r.Control.Total,
			r.Value, r.Threshold, r.MinSamples)
		if r.Err != "" {
			s += " (" + r.Err + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}
