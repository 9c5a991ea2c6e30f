package main

import (
	"sync/atomic"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/migrate"
)

// shadowGate is the campaign gates' migrate.ShadowSource in an agent that
// runs the bridge: the backfill and shadow-mismatch gates read the bridge's
// per-user shadow summaries (bridge.ShadowStats, answered from memory). The
// bridge is attached once it has started; until then, and in an agent
// without the bridge role, it has a report for nobody, so those gates are
// inconclusive and hold users in shadow, never a pass by default.
type shadowGate struct {
	b atomic.Pointer[bridge.Bridge]
}

var _ migrate.ShadowSource = (*shadowGate)(nil)

// attach makes b the source of the reports.
func (g *shadowGate) attach(b *bridge.Bridge) { g.b.Store(b) }

// Shadow returns the bridge's report of user: backfill complete, compares
// that found a cloud copy, and mismatches among them.
func (g *shadowGate) Shadow(user string) (migrate.ShadowReport, bool) {
	b := g.b.Load()
	if b == nil {
		return migrate.ShadowReport{}, false
	}
	st, ok := b.ShadowStats(user)
	if !ok {
		return migrate.ShadowReport{}, false
	}
	return migrate.ShadowReport{BackfillDone: st.BackfillDone, Compared: st.Samples, Mismatched: st.Mismatches}, true
}
