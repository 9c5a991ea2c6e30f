package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// benchSim measures the memory of the simulator's population: N simulated
// legacy clients (legacy.RunSim: a host, a certificate, a registration and
// traffic each) against N bare libp2p hosts connected to the same
// supernode, in the same process as the agent.
func benchSim(ctx context.Context, o benchOptions) ([]benchRow, error) {
	n := min(o.N, legacy.MaxSimUsers)
	ba, err := startBenchAgent(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := func() ([]benchRow, error) {
		sn, err := ba.a.supernodeInfo()
		if err != nil {
			return nil, err
		}
		run := 0
		var caseG, floorG []float64
		population := func(ctx context.Context) (float64, error) {
			run++
			mem0, g0 := heapAndStacks()
			base := ba.a.supernode.Devices()
			simCtx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() {
				_, err := legacy.RunSim(simCtx, legacy.SimConfig{
					Users: n, Duration: time.Hour, UserPrefix: fmt.Sprintf("sim%d-", run),
					Supernode: sn, Authority: ba.a.authority.PublicKey(),
					Certify: func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
						p, _ := legacy.SimProfileFromContext(ctx)
						return ba.a.authority.Certify(id, user, p.Platform, p.ClientVersion, nil, time.Hour)
					},
				})
				done <- err
			}()
			err := waitCount(ctx, "registered simulated devices", ba.a.supernode.Devices, base+n)
			var mem1 float64
			var g1 int
			if err == nil {
				time.Sleep(o.Duration) // the population runs: sends, acks, refreshes
				mem1, g1 = heapAndStacks()
			}
			stop()
			if err = errors.Join(err, <-done); err != nil {
				return 0, err
			}
			caseG = append(caseG, float64(g1-g0)/float64(n))
			return (mem1 - mem0) / float64(n), nil
		}
		bare := func(ctx context.Context) (float64, error) {
			mem0, g0 := heapAndStacks()
			hosts := make([]host.Host, 0, n)
			defer func() {
				for _, h := range hosts {
					h.Close()
				}
			}()
			for range n {
				h, err := legacy.NewHost(legacy.HostConfig{MaxConns: 256})
				if err != nil {
					return 0, err
				}
				hosts = append(hosts, h)
				if err := h.Connect(ctx, sn); err != nil {
					return 0, err
				}
			}
			time.Sleep(o.Duration)
			mem1, g1 := heapAndStacks()
			floorG = append(floorG, float64(g1-g0)/float64(n))
			return (mem1 - mem0) / float64(n), nil
		}
		cs, fs, err := alternate(ctx, o.Runs, population, bare)
		if err != nil {
			return nil, err
		}
		note := fmt.Sprintf("N=%d clients per run, heap in use + stacks after GC, both ends in one process (the supernode's side of each connection counts in both), measured after %s of traffic at the simulator's default rate; not pinned", n, o.Duration)
		return []benchRow{
			newRow("sim", "memory", "simulated legacy client", "bare libp2p host, connected", "bytes/client", cs, fs, nil, note),
			newRow("sim", "goroutines", "simulated legacy client", "bare libp2p host, connected", "goroutines/client", caseG, floorG, nil),
		}, nil
	}()
	return rows, errors.Join(err, ba.stop())
}
