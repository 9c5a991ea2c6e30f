package main

import (
	"sync/atomic"

	"github.com/ferrygw/ferry/migrate"
)

// censusGate is the device gates' migrate.CensusSource: the agent's device
// census, attached once the device recorder exists (the campaign driver
// starts before it). Until then it has seen no device, so the gates fall
// back on declared versions or hold users as inconclusive, never pass on no
// evidence.
type censusGate struct {
	c atomic.Pointer[migrate.DeviceCensus]
}

var _ migrate.CensusSource = (*censusGate)(nil)

func (g *censusGate) attach(c *migrate.DeviceCensus) { g.c.Store(c) }

// Get returns what the census saw of the user's device.
func (g *censusGate) Get(user, device string) (migrate.CensusDevice, bool) {
	c := g.c.Load()
	if c == nil {
		return migrate.CensusDevice{}, false
	}
	return c.Get(user, device)
}

// campaignGates is what the campaign driver and planner read for their
// gates: the bridge's shadow reports (backfill, mismatch) and the device
// census (protocol spoken, for the device gates and the ready→cloud check).
type campaignGates struct {
	*shadowGate
	*censusGate
}

var (
	_ migrate.ShadowSource = campaignGates{}
	_ migrate.CensusSource = campaignGates{}
)
