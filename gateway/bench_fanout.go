package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudtest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// fanoutMaxMembers caps cloud-fanout's group below cloudwire.MaxGroupMembers.
const fanoutMaxMembers = 200

// fanoutRig is one side of cloud-fanout: a sender and the member devices
// that receive what it sends to conv, each logging latencies.
type fanoutRig struct {
	sender  *cloud.Client
	members []*cloud.Client
	conv    string
	current atomic.Pointer[latencyLog]
}

func (f *fanoutRig) close() {
	f.sender.Close()
	for _, c := range f.members {
		c.Close()
	}
}

// dialFanout dials the sender and n members at url, with tokens of key.
func dialFanout(ctx context.Context, url string, tok func(user string) (string, error), n int) (*fanoutRig, error) {
	f := &fanoutRig{}
	dial := func(user string) (*cloud.Client, error) {
		t, err := tok(user)
		if err != nil {
			return nil, err
		}
		c, err := cloud.Dial(ctx, cloud.ClientConfig{URL: url, Token: t,
			Hello: cloudwire.Hello{Device: "bench", Platform: "bench", ClientVersion: version}})
		if err != nil {
			return nil, fmt.Errorf("dial %s as %s: %w", url, user, err)
		}
		return c, nil
	}
	var err error
	if f.sender, err = dial("fan-sender"); err != nil {
		return nil, err
	}
	go func() {
		for range f.sender.Events() {
		}
	}()
	for i := range n {
		c, err := dial("fan-" + strconv.Itoa(i))
		if err != nil {
			f.close()
			return nil, err
		}
		f.members = append(f.members, c)
		go recordLatencies(c, &f.current)
	}
	return f, nil
}

// send sends one stamped message to the group.
func (f *fanoutRig) send(ctx context.Context, due time.Time) error {
	if _, err := f.sender.Send(ctx, cloudwire.Send{Conv: f.conv, Text: stampText(due)}); err != nil {
		return fmt.Errorf("send to the group: %w", err)
	}
	return nil
}

// collect waits until the members took sent messages each from l and
// returns the deliveries per second since start.
func (f *fanoutRig) collect(ctx context.Context, l *latencyLog, sent int, start time.Time) (float64, error) {
	want := sent * len(f.members)
	l.waitFor(ctx, want)
	got := l.count()
	elapsed := time.Since(start)
	f.current.Store(nil)
	if got < want {
		return 0, fmt.Errorf("members got %d of %d deliveries", got, want)
	}
	return float64(got) / elapsed.Seconds(), nil
}

// closedLoop sends to the group for d with o.Conns sends in flight, each
// sent when the last was acknowledged, and returns the deliveries per
// second the members took: the throughput figure.
func (f *fanoutRig) closedLoop(ctx context.Context, o benchOptions) (float64, error) {
	l := &latencyLog{}
	f.current.Store(l)
	var sent atomic.Int64
	start := time.Now()
	_, err := rate(ctx, o.Duration, o.Conns, func(int) error {
		if err := f.send(ctx, time.Now()); err != nil {
			return err
		}
		sent.Add(1)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return f.collect(ctx, l, int(sent.Load()), start)
}

// openLoop sends to the group at perSec for d whatever the service does
// (openLoop), and appends the p50 and p99 of the members' latencies, from
// the time each message was due to its arrival, in milliseconds.
func (f *fanoutRig) openLoop(ctx context.Context, o benchOptions, perSec float64, p50s, p99s *[]float64) (float64, error) {
	l := &latencyLog{}
	f.current.Store(l)
	var sent atomic.Int64
	start := time.Now()
	err := openLoop(ctx, o.Duration, perSec, func(_ int, due time.Time) error {
		if err := f.send(ctx, due); err != nil {
			return err
		}
		sent.Add(1)
		return nil
	})
	if err != nil {
		return 0, err
	}
	v, err := f.collect(ctx, l, int(sent.Load()), start)
	if err != nil {
		return 0, err
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	*p50s, *p99s = append(*p50s, ms(l.quantile(0.5))), append(*p99s, ms(l.quantile(0.99)))
	return v, nil
}

func benchCloudFanout(ctx context.Context, o benchOptions) ([]benchRow, error) {
	n := min(o.N, fanoutMaxMembers)
	bc, err := startBenchCloud(ctx)
	if err != nil {
		return nil, err
	}
	hub := cloudtest.NewBroadcast()
	floorSrv, err := startWSServer(hub.Serve)
	if err != nil {
		return nil, errors.Join(err, bc.stop())
	}
	rows, err := func() ([]benchRow, error) {
		tok := func(user string) (string, error) { return benchToken(bc.key, user) }
		svc, err := dialFanout(ctx, bc.http.url, tok, n)
		if err != nil {
			return nil, err
		}
		defer svc.close()
		members := make([]string, n)
		for i := range members {
			members[i] = "fan-" + strconv.Itoa(i)
		}
		ack, err := svc.sender.Group(ctx, cloudwire.Group{Op: cloudwire.GroupCreate, Name: "fan-out", Members: members})
		if err != nil {
			return nil, fmt.Errorf("create group: %w", err)
		}
		svc.conv = ack.Conv
		raw, err := dialFanout(ctx, floorSrv.url, tok, n)
		if err != nil {
			return nil, err
		}
		defer raw.close()
		raw.conv = svc.conv // a valid group id, which the hub does not check
		cs, fs, err := alternate(ctx, o.Runs,
			func(ctx context.Context) (float64, error) { return svc.closedLoop(ctx, o) },
			func(ctx context.Context) (float64, error) { return raw.closedLoop(ctx, o) })
		if err != nil {
			return nil, err
		}
		// Latency under open-loop load at half the service's measured
		// throughput, the same offered rate on both sides.
		perSec := median(cs) / float64(n) / 2
		var caseP50, caseP99, floorP50, floorP99 []float64
		if _, _, err := alternate(ctx, o.Runs,
			func(ctx context.Context) (float64, error) { return svc.openLoop(ctx, o, perSec, &caseP50, &caseP99) },
			func(ctx context.Context) (float64, error) { return raw.openLoop(ctx, o, perSec, &floorP50, &floorP99) }); err != nil {
			return nil, err
		}
		note := fmt.Sprintf("one group of %d member devices (cloud.Client each), %d sends in flight (closed loop); service on the embedded engine; load and server in one process, not pinned", n, o.Conns)
		latNote := fmt.Sprintf("open loop: %.0f sends/s (half the service's closed-loop median, %.0f deliveries/s) offered to both sides; from the time each send was due to each member's arrival", perSec, perSec*float64(n))
		return []benchRow{
			newRow("cloud-fanout", "deliveries", "cloud.Service group", "raw WebSocket broadcast", "deliveries/s", cs, fs,
				&benchTarget{Of: "ratio", Op: ">=", Value: 0.5}, note),
			newRow("cloud-fanout", "p50", "cloud.Service group", "raw WebSocket broadcast", "ms", caseP50, floorP50, nil, latNote),
			newRow("cloud-fanout", "p99", "cloud.Service group", "raw WebSocket broadcast", "ms", caseP99, floorP99,
				&benchTarget{Of: "case", Op: "<=", Value: 50}, latNote),
		}, nil
	}()
	floorSrv.stop()
	return rows, errors.Join(err, bc.stop())
}
