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

// run sends to the group for d from window senders in a closed loop and
// returns the deliveries per second the members took and their p99
// latency in milliseconds.
func (f *fanoutRig) run(ctx context.Context, o benchOptions, p99s *[]float64) (float64, error) {
	l := &latencyLog{}
	f.current.Store(l)
	var sent atomic.Int64
	start := time.Now()
	_, err := rate(ctx, o.Duration, o.Conns, func(int) error {
		if _, err := f.sender.Send(ctx, cloudwire.Send{Conv: f.conv, Text: stampText(time.Now())}); err != nil {
			return fmt.Errorf("send to the group: %w", err)
		}
		sent.Add(1)
		return nil
	})
	if err != nil {
		return 0, err
	}
	want := int(sent.Load()) * len(f.members)
	l.waitFor(ctx, want)
	got := l.count()
	elapsed := time.Since(start)
	f.current.Store(nil)
	if got < want {
		return 0, fmt.Errorf("members got %d of %d deliveries", got, want)
	}
	*p99s = append(*p99s, float64(l.quantile(0.99))/float64(time.Millisecond))
	return float64(got) / elapsed.Seconds(), nil
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
		var caseP99, floorP99 []float64
		cs, fs, err := alternate(ctx, o.Runs,
			func(ctx context.Context) (float64, error) { return svc.run(ctx, o, &caseP99) },
			func(ctx context.Context) (float64, error) { return raw.run(ctx, o, &floorP99) })
		if err != nil {
			return nil, err
		}
		note := fmt.Sprintf("one group of %d member devices (cloud.Client each), %d sends in flight (closed loop); service on the embedded engine; load and server in one process, not pinned", n, o.Conns)
		return []benchRow{
			newRow("cloud-fanout", "deliveries", "cloud.Service group", "raw WebSocket broadcast", "deliveries/s", cs, fs,
				&benchTarget{Of: "ratio", Op: ">=", Value: 0.5}, note),
			newRow("cloud-fanout", "p99", "cloud.Service group", "raw WebSocket broadcast", "ms", caseP99, floorP99,
				&benchTarget{Of: "case", Op: "<=", Value: 50}, "send to each member's arrival, at the throughput above"),
		}, nil
	}()
	floorSrv.stop()
	return rows, errors.Join(err, bc.stop())
}
