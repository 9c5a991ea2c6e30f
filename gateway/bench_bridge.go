package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// bridgeRig is an agent with k pairs of senders: legacy device "bl-i" and
// cloud device "cs-i" both send to cloud user "bc-i", whose device logs the
// latency of what it receives. The senders and recipients live in load
// processes (bridgeLoad), so that their libp2p and WebSocket work does not
// share the agent's process, and with -pin its CPU.
type bridgeRig struct {
	ba   *benchAgent
	k    int
	sink host.Host // the bare chat sink of bridge-intake, or nil
	load []*bridgeLoadProc
}

// bridgeLoadProc is one load process of a bridge benchmark and the pipes
// it takes commands and gives results on.
type bridgeLoadProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	enc   *json.Encoder
	dec   *json.Decoder
	pairs int
}

func startBridgeRig(ctx context.Context, o benchOptions, withSink bool) (*bridgeRig, error) {
	ba, err := startBenchAgent(ctx)
	if err != nil {
		return nil, err
	}
	r := &bridgeRig{ba: ba, k: o.Conns}
	if withSink {
		if r.sink, err = chatSink(); err != nil {
			return nil, errors.Join(err, r.close())
		}
	}
	if err := r.setup(ctx, min(max(o.Procs, 1), o.Conns)); err != nil {
		return nil, errors.Join(err, r.close())
	}
	if err := r.waitFlipsDone(ctx); err != nil {
		return nil, errors.Join(err, r.close())
	}
	return r, nil
}

// waitFlipsDone waits, bounded, until the recipients' flips to the cloud
// have ended: while a recipient flips, the bridge acknowledges a legacy
// message once its flip hold has it (before the cloud stored it), which is
// not the path the benchmarks measure. It sends one message from every
// legacy device and waits for all to arrive, until a round goes by in
// which the bridge held none of them.
func (r *bridgeRig) waitFlipsDone(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for ctx.Err() == nil && time.Now().Before(deadline) {
		held := r.ba.counter(bridgeHeldCounter)
		res, err := r.run(ctx, bridgeLoadCmd{Op: "each", Path: "bridge"})
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if r.ba.counter(bridgeHeldCounter) == held && len(res.Lat) == r.k {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return errors.Join(ctx.Err(), errors.New("the recipients' flips to the cloud did not end within a minute"))
}

// setup moves the recipients and cloud senders to the cloud, makes every
// legacy sender's identity and certificate and every cloud device's
// token, and hands them to procs load processes, which start the devices
// and say when their routes resolve to the bridge.
func (r *bridgeRig) setup(ctx context.Context, procs int) error {
	a := r.ba.a
	sn, err := a.supernodeInfo()
	if err != nil {
		return err
	}
	base := bridgeLoadSetup{CloudURL: a.cloudURL(), Supernode: sn, Authority: a.authority.PublicKey(),
		Bridge: peer.AddrInfo{ID: a.brHost.ID(), Addrs: a.brHost.Addrs()}}
	if r.sink != nil {
		base.Sink = &peer.AddrInfo{ID: r.sink.ID(), Addrs: r.sink.Addrs()}
	}
	i := 0
	for p := range procs {
		su := base
		for range share(r.k, procs, p) {
			n := strconv.Itoa(i)
			if err := r.ba.toCloud(ctx, "bc-"+n, "cs-"+n); err != nil {
				return err
			}
			key, _, err := crypto.GenerateEd25519Key(rand.Reader)
			if err != nil {
				return err
			}
			id, err := peer.IDFromPrivateKey(key)
			if err != nil {
				return err
			}
			pair := bridgeLoadPair{N: i}
			if pair.Key, err = crypto.MarshalPrivateKey(key); err != nil {
				return err
			}
			if pair.Cert, err = a.authority.Certify(id, "bl-"+n, "desktop", "7.4.1", nil, time.Hour); err != nil {
				return err
			}
			if pair.SenderToken, err = a.tokens.issue("cs-"+n, cloudwire.RoleUser, 24*time.Hour); err != nil {
				return err
			}
			if pair.RecipientToken, err = a.tokens.issue("bc-"+n, cloudwire.RoleUser, 24*time.Hour); err != nil {
				return err
			}
			su.Pairs = append(su.Pairs, pair)
			i++
		}
		cmd, in, out, err := startLoadProcess(ctx, nil, bridgeLoadArg)
		if err != nil {
			return err
		}
		lp := &bridgeLoadProc{cmd: cmd, in: in, enc: json.NewEncoder(in), dec: json.NewDecoder(out), pairs: len(su.Pairs)}
		r.load = append(r.load, lp)
		if err := lp.enc.Encode(su); err != nil {
			return fmt.Errorf("load process %d: %w", p, err)
		}
	}
	for p, lp := range r.load {
		if _, err := lp.result(); err != nil {
			return fmt.Errorf("load process %d: setup: %w", p, err)
		}
	}
	return nil
}

// result reads the next result of lp.
func (lp *bridgeLoadProc) result() (bridgeLoadResult, error) {
	var res bridgeLoadResult
	if err := lp.dec.Decode(&res); err != nil {
		return res, fmt.Errorf("read result: %w", err)
	}
	if res.Err != "" {
		return res, errors.New(res.Err)
	}
	return res, nil
}

// run has every load process run c at once, an open-loop rate split by
// their shares of the senders, and adds up their results: rates and sent
// counts summed, latencies pooled.
func (r *bridgeRig) run(ctx context.Context, c bridgeLoadCmd) (bridgeLoadResult, error) {
	var total bridgeLoadResult
	for p, lp := range r.load {
		pc := c
		pc.PerSec = c.PerSec * float64(lp.pairs) / float64(r.k)
		if err := lp.enc.Encode(pc); err != nil {
			return total, fmt.Errorf("load process %d: %w", p, err)
		}
	}
	var errs []error
	for p, lp := range r.load {
		res, err := lp.result()
		if err != nil {
			errs = append(errs, fmt.Errorf("load process %d: %s: %w", p, c.Op, err))
		}
		total.Rate += res.Rate
		total.Sent += res.Sent
		total.CPU += res.CPU
		total.Lat = append(total.Lat, res.Lat...)
	}
	return total, errors.Join(append(errs, ctx.Err())...)
}

func (r *bridgeRig) close() error {
	var errs []error
	for p, lp := range r.load {
		lp.in.Close() // the end of its standard input stops a load process
		if err := lp.cmd.Wait(); err != nil {
			errs = append(errs, fmt.Errorf("load process %d: %w", p, err))
		}
	}
	if r.sink != nil {
		errs = append(errs, r.sink.Close())
	}
	return errors.Join(append(errs, r.ba.stop())...)
}

// closedLoop measures messages per second over path ("bridge" or
// "direct") with every sender sending its next message when the last was
// acknowledged, and appends the p99 of the recipients' latencies, in
// microseconds, to p99s and the run's CPU cost to cost.
func (r *bridgeRig) closedLoop(o benchOptions, path string, p99s *[]float64, cost *cpuCost) measureFunc {
	return func(ctx context.Context) (float64, error) {
		res, err := r.measured(ctx, bridgeLoadCmd{Op: "closed", Path: path, Duration: o.Duration}, cost)
		*p99s = append(*p99s, micros(res.quantile(0.99)))
		return res.Rate, err
	}
}

// measured runs c like run and adds what it cost to cost.
func (r *bridgeRig) measured(ctx context.Context, c bridgeLoadCmd, cost *cpuCost) (bridgeLoadResult, error) {
	cpu0, t0 := processCPU(), time.Now()
	res, err := r.run(ctx, c)
	cost.add(processCPU()-cpu0, res.CPU, res.Sent, time.Since(t0))
	return res, err
}

// cpuCost is the CPU time per message of one path's runs, one entry per
// run, in microseconds: the bench process's (the agent: engine,
// supernode, cloud, bridge; and bridge-intake's sink) and the load
// processes'. Unlike a rate, that hardly moves when other work shares the
// machine, so it says what each path costs. busy is the share of the
// machine's cores the bench and load processes used together during the
// run: near 1, the rate is bounded by CPU and the ratio of two rates is
// the inverse ratio of their costs.
type cpuCost struct{ agent, load, busy []float64 }

func (c *cpuCost) add(agent, load time.Duration, sent int, wall time.Duration) {
	if sent == 0 || wall <= 0 {
		return
	}
	c.agent = append(c.agent, micros(agent)/float64(sent))
	c.load = append(c.load, micros(load)/float64(sent))
	c.busy = append(c.busy, float64(agent+load)/float64(wall)/float64(runtime.NumCPU()))
}

// percent formats a share (0.93) as a percentage ("93%").
func percent(v float64) string { return fmt.Sprintf("%.0f%%", 100*v) }

// total is the median of the runs' CPU per message over all processes.
func (c *cpuCost) total() float64 {
	xs := make([]float64, len(c.agent))
	for i := range xs {
		xs[i] = c.agent[i] + c.load[i]
	}
	return median(xs)
}

// processCPU is the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// latencySamples is how many messages a latency run aims to measure, so
// that its p99 is the 10th-worst of them rather than one straggler; a run
// lasts at most latencyRunsMax times -duration to get them.
const (
	latencySamples = 1000
	latencyRunsMax = 5
)

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func benchBridge(ctx context.Context, o benchOptions) ([]benchRow, error) {
	r, err := startBridgeRig(ctx, o, false)
	if err != nil {
		return nil, err
	}
	rows, err := func() ([]benchRow, error) {
		var caseP99, floorP99 []float64
		var caseCPU, floorCPU cpuCost
		cs, fs, err := alternate(ctx, o.Runs, r.closedLoop(o, "bridge", &caseP99, &caseCPU), r.closedLoop(o, "direct", &floorP99, &floorCPU))
		if err != nil {
			return nil, fmt.Errorf("throughput: %w", err)
		}
		// Half the bridge's load, at least enough messages for a quantile.
		half := max(median(cs)/2, 50/o.Duration.Seconds())
		// Both paths get the same schedule, long enough for latencySamples
		// (a smoke run only checks the harness: it keeps -duration).
		latDur := min(max(o.Duration, time.Duration(latencySamples/half*float64(time.Second))), latencyRunsMax*o.Duration)
		if o.Smoke {
			latDur = o.Duration
		}
		var bridgedP50, bridgedP99, directP50, directP99, samples []float64
		// The agent's own histograms over each path's runs: the bridge's
		// segment (taking a message to the cloud's ack) and the cloud's
		// storing of a send, to say where the bridged path's tail is.
		var bridgeSeg, bridgedQueue, bridgedStore, directStore histSum
		atHalf := func(path string, p50s, p99s *[]float64) measureFunc {
			return func(ctx context.Context) (float64, error) {
				seg0, queue0, store0 := r.ba.histogram(bridgeDeliveryHist, "legacy_to_cloud"), r.ba.histogram(bridgeQueueHist, ""), r.ba.histogram(cloudSendHist, "")
				res, err := r.run(ctx, bridgeLoadCmd{Op: "open", Path: path, Duration: latDur, PerSec: half})
				store := r.ba.histogram(cloudSendHist, "").minus(store0)
				if path == "bridge" {
					bridgeSeg.add(r.ba.histogram(bridgeDeliveryHist, "legacy_to_cloud").minus(seg0))
					bridgedQueue.add(r.ba.histogram(bridgeQueueHist, "").minus(queue0))
					bridgedStore.add(store)
				} else {
					directStore.add(store)
				}
				*p50s, *p99s = append(*p50s, micros(res.quantile(0.5))), append(*p99s, micros(res.quantile(0.99)))
				samples = append(samples, float64(len(res.Lat)))
				return 0, err
			}
		}
		if _, _, err := alternate(ctx, o.Runs, atHalf("bridge", &bridgedP50, &bridgedP99), atHalf("direct", &directP50, &directP99)); err != nil {
			return nil, fmt.Errorf("latency at half load: %w", err)
		}
		queueShare, queueBound := bridgedQueue.shareAbove(0.001)
		procs := fmt.Sprintf("%d load process(es)", len(r.load))
		setup := fmt.Sprintf("%d legacy and %d cloud senders, one cloud recipient each, all in %s talking to the agent (engine, supernode, cloud, bridge) over loopback, not pinned", o.Conns, o.Conns, procs)
		schedule := fmt.Sprintf("open loop at %s messages/s (half the bridge's median throughput, at least 50 a run) for %s a run on both paths, the same schedule, latency from the time each message was due to its arrival at the recipient, %s messages measured a run (median); at most %d messages in flight per sender (the bridge resets streams beyond %d per peer), a message waiting for a slot counts its wait",
			fmtNum(half), latDur.Round(time.Millisecond), fmtNum(median(samples)), bridgeLoadInFlight, 512)
		return []benchRow{
			newRow("bridge", "throughput", "legacy→cloud via bridge", "cloud→cloud direct", "messages/s", cs, fs,
				&benchTarget{Of: "ratio", Op: ">=", Value: 0.7},
				"closed loop, "+setup,
				fmt.Sprintf("end-to-end p99 (send to the recipient's device): bridge %s µs, direct %s µs (medians of the runs); equal concurrency, not equal p99",
					fmtNum(median(caseP99)), fmtNum(median(floorP99))),
				fmt.Sprintf("agent CPU per message (bench process's CPU time over the closed-loop runs / messages sent, medians): bridge %s µs, direct %s µs; the load processes' (legacy and cloud clients): bridge %s µs, direct %s µs",
					fmtNum(median(caseCPU.agent)), fmtNum(median(floorCPU.agent)), fmtNum(median(caseCPU.load)), fmtNum(median(floorCPU.load)))),
			addedRow("added-p50", "p50", bridgedP50, directP50, 100, schedule+"; "+setup),
			addedRow("added-p99", "p99", bridgedP99, directP99, 1000,
				"the bridged path adds a libp2p hop the direct path does not make: the legacy client's chat frame to the bridge and its ack, on a chat stream it keeps open, after a directory lookup it remembers for legacy.RouteCacheTTL; measured once every recipient's flip to the cloud had ended (no message held)",
				fmt.Sprintf("inside the agent at half load (from its histograms, linear within buckets): the bridge's segment, taking a message to the cloud's ack (%s), p50 %s µs, p99 %s µs; within it, a send waiting in the cloud behind its legacy user's earlier ones (%s, cloud/dispatch.go) p99 %s µs, %s of sends over %s µs; the cloud storing a send (%s) p99 %s µs on the bridged runs, %s µs on the direct ones; the rest of the segment is the bridge's cloud link, both ways",
					bridgeDeliveryHist, fmtNum(bridgeSeg.quantileMicros(0.5)), fmtNum(bridgeSeg.quantileMicros(0.99)),
					bridgeQueueHist, fmtNum(bridgedQueue.quantileMicros(0.99)), percent(queueShare), fmtNum(queueBound*1e6),
					cloudSendHist, fmtNum(bridgedStore.quantileMicros(0.99)), fmtNum(directStore.quantileMicros(0.99)))),
		}, nil
	}()
	return rows, errors.Join(err, r.close())
}

// addedRow is a row of the latency the bridge adds at quantile q: the
// bridged and the direct latencies are its case and floor, both positive
// figures, and the target applies to their difference (the added
// latency). A difference of two noisy medians can come out negative when
// noise is larger than the bridge's cost: the bridged path makes strictly
// more hops, so that means "not measurable at this load", read as 0.
func addedRow(measure, q string, bridged, direct []float64, target float64, notes ...string) benchRow {
	r := newRow("bridge", measure, "legacy→cloud via bridge, "+q, "cloud→cloud direct, "+q, "µs", bridged, direct,
		&benchTarget{Of: "difference", Op: "<=", Value: target}, notes...)
	d := r.Medians.Case - r.Medians.Floor
	note := fmt.Sprintf("added %s (bridged median minus direct median): %s µs", q, fmtNum(d))
	if d < 0 {
		note += ", negative: the bridged path measured faster than the direct one, noise larger than the bridge's cost at this load; read as 0"
	}
	// The runs alternate, so each turn's difference shows how far noise
	// moves the figure.
	turns := make([]string, min(len(bridged), len(direct)))
	for i := range turns {
		turns[i] = fmtNum(bridged[i] - direct[i])
	}
	note += fmt.Sprintf("; per turn (bridged run minus the direct run after it): %s µs", strings.Join(turns, ", "))
	r.Notes = append([]string{note}, r.Notes...)
	return r
}

// Histograms and counters the bridge benchmarks read back from the agent's
// registry.
const (
	bridgeDeliveryHist = "gateway_bridge_delivery_seconds"
	cloudSendHist      = "gateway_cloud_send_duration_seconds"
	bridgeQueueHist    = "gateway_cloud_bridge_queue_seconds"
	bridgeHeldCounter  = "gateway_bridge_flip_held_total"
)

// histSum is a histogram's sample sum (seconds) and count, and its
// cumulative bucket counts (by upper bound, in seconds) for quantiles.
type histSum struct {
	sum    float64
	count  uint64
	bounds []float64
	cum    []uint64
}

func (h histSum) minus(o histSum) histSum {
	d := histSum{sum: h.sum - o.sum, count: h.count - o.count, bounds: h.bounds, cum: slices.Clone(h.cum)}
	if len(o.cum) == len(d.cum) {
		for i := range d.cum {
			d.cum[i] -= o.cum[i]
		}
	}
	return d
}

// add adds o's samples to h (the same buckets; h may be empty).
func (h *histSum) add(o histSum) {
	if h.bounds == nil {
		h.bounds, h.cum = o.bounds, make([]uint64, len(o.cum))
	}
	h.sum += o.sum
	h.count += o.count
	if len(o.cum) == len(h.cum) {
		for i := range h.cum {
			h.cum[i] += o.cum[i]
		}
	}
}

func (h histSum) meanMicros() float64 {
	if h.count == 0 {
		return math.NaN()
	}
	return h.sum / float64(h.count) * 1e6
}

// shareAbove is the share of h's samples above the first bucket bound at
// or over b seconds, and that bound (NaN and 0 when there are none).
func (h histSum) shareAbove(b float64) (share, bound float64) {
	i, _ := slices.BinarySearch(h.bounds, b)
	if h.count == 0 || i >= len(h.cum) {
		return math.NaN(), 0
	}
	return 1 - float64(h.cum[i])/float64(h.count), h.bounds[i]
}

// quantileMicros estimates the q-quantile in microseconds as Prometheus's
// histogram_quantile does: linear within the bucket that holds it. A
// quantile beyond the last finite bucket reads as that bucket's bound.
func (h histSum) quantileMicros(q float64) float64 {
	if h.count == 0 || len(h.cum) == 0 {
		return math.NaN()
	}
	rank := q * float64(h.count)
	lower, below := 0.0, uint64(0)
	for i, c := range h.cum {
		if float64(c) >= rank {
			in := c - below
			if in == 0 {
				return h.bounds[i] * 1e6
			}
			return (lower + (h.bounds[i]-lower)*(rank-float64(below))/float64(in)) * 1e6
		}
		lower, below = h.bounds[i], c
	}
	return lower * 1e6
}

// histogram sums the series of the histogram name in the agent's registry
// whose labels include the value label (every series when label is "").
func (ba *benchAgent) histogram(name, label string) histSum {
	var h histSum
	for _, m := range ba.series(name, label) {
		mh := m.GetHistogram()
		one := histSum{sum: mh.GetSampleSum(), count: mh.GetSampleCount()}
		for _, b := range mh.GetBucket() {
			one.bounds = append(one.bounds, b.GetUpperBound())
			one.cum = append(one.cum, b.GetCumulativeCount())
		}
		h.add(one)
	}
	return h
}

// counter sums every series of the counter name in the agent's registry.
func (ba *benchAgent) counter(name string) float64 {
	var v float64
	for _, m := range ba.series(name, "") {
		v += m.GetCounter().GetValue()
	}
	return v
}

// series returns the series of the metric name in the agent's registry
// whose labels include the value label (every series when label is "").
func (ba *benchAgent) series(name, label string) []*dto.Metric {
	mfs, err := ba.a.reg.Gather()
	if err != nil {
		return nil
	}
	var out []*dto.Metric
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetValue() == label }) {
				out = append(out, m)
			}
		}
	}
	return out
}

// chatSink is the floor of bridge-intake: a bare libp2p host whose chat v2
// handler reads the hello and one frame and acks it, checking and storing
// nothing.
func chatSink() (host.Host, error) {
	h, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		return nil, err
	}
	h.SetStreamHandler(legacywire.ChatV2ProtocolID, func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		var hello legacywire.ChatHello
		var f legacywire.ChatFrame
		if legacywire.ReadFrame(br, &hello) != nil || legacywire.ReadFrame(br, &f) != nil {
			s.Reset()
			return
		}
		bw := bufio.NewWriter(s)
		ack := legacywire.ChatFrame{Type: legacywire.FrameAck, ID: f.ID, Ack: &legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}}
		if legacywire.WriteFrame(bw, ack) != nil || bw.Flush() != nil {
			s.Reset()
		}
	})
	return h, nil
}

func benchBridgeIntake(ctx context.Context, o benchOptions) ([]benchRow, error) {
	r, err := startBridgeRig(ctx, o, true)
	if err != nil {
		return nil, err
	}
	rows, err := func() ([]benchRow, error) {
		// The same client code against both: one chat v2 stream per
		// message from each legacy device, acknowledged by the other end.
		intake := func(path string, cost *cpuCost) measureFunc {
			return func(ctx context.Context) (float64, error) {
				res, err := r.measured(ctx, bridgeLoadCmd{Op: "intake", Path: path, Duration: o.Duration}, cost)
				return res.Rate, err
			}
		}
		var caseCPU, floorCPU cpuCost
		bridgeBefore, cloudBefore := r.ba.histogram(bridgeDeliveryHist, "legacy_to_cloud"), r.ba.histogram(cloudSendHist, "")
		cs, fs, err := alternate(ctx, o.Runs, intake("bridge", &caseCPU), intake("sink", &floorCPU))
		if err != nil {
			return nil, err
		}
		// Only the case's runs write into the cloud, so these are theirs.
		handled := r.ba.histogram(bridgeDeliveryHist, "legacy_to_cloud").minus(bridgeBefore)
		stored := r.ba.histogram(cloudSendHist, "").minus(cloudBefore)
		return []benchRow{newRow("bridge-intake", "intake", "bridge (acks once the cloud stored it)", "bare libp2p stream sink", "messages/s", cs, fs,
			&benchTarget{Of: "ratio", Op: ">=", Value: 0.85},
			fmt.Sprintf("%d legacy devices in %d load process(es), closed loop, one chat v2 stream per message, no directory lookup; agent and sink in the bench process, not pinned", o.Conns, len(r.load)),
			fmt.Sprintf("per bridged message, mean: %s µs from the bridge taking it to the cloud's ack (%s), of which %s µs in the cloud service storing it (%s, server side); the rest is waiting for the cloud's answer (the cloud link and the cloud's dispatch, cloud/dispatch.go); measured once every recipient's flip to the cloud had ended, so no message was only held",
				fmtNum(handled.meanMicros()), bridgeDeliveryHist, fmtNum(stored.meanMicros()), cloudSendHist),
			fmt.Sprintf("CPU per message over every process (medians of the runs): bridge %s µs (agent %s, load %s), sink %s µs (sink %s, load %s), a cost ratio of %s; the bench and load processes used %s and %s of the machine's %d cores during the bridge's and the sink's runs",
				fmtNum(caseCPU.total()), fmtNum(median(caseCPU.agent)), fmtNum(median(caseCPU.load)),
				fmtNum(floorCPU.total()), fmtNum(median(floorCPU.agent)), fmtNum(median(floorCPU.load)),
				fmtNum(floorCPU.total()/caseCPU.total()), percent(median(caseCPU.busy)), percent(median(floorCPU.busy)), runtime.NumCPU()))}, nil
	}()
	return rows, errors.Join(err, r.close())
}

// bridgeLoadArg is the hidden first argument of "gateway bench" that makes
// the process a load process of the bridge benchmarks (bridgeLoad).
const bridgeLoadArg = "internal-bridge-load"

// bridgeLoadInFlight bounds the messages one sender of a load process has
// in flight at once: the bridge resets a peer's streams beyond 512 (its
// per-peer stream limit), which an open-loop schedule would reach when the
// machine stalls.
const bridgeLoadInFlight = 64

// bridgeLoadSetup is the first message the bench process writes to a load
// process's standard input (never its command line: it holds private keys
// and tokens): where the agent is and the senders it runs.
type bridgeLoadSetup struct {
	CloudURL  string            `json:"cloud_url"`
	Supernode peer.AddrInfo     `json:"supernode"`
	Bridge    peer.AddrInfo     `json:"bridge"`
	Sink      *peer.AddrInfo    `json:"sink,omitempty"` // bridge-intake's floor; nil in bridge
	Authority ed25519.PublicKey `json:"authority"`
	Pairs     []bridgeLoadPair  `json:"pairs"`
}

// bridgeLoadPair is sender pair N: legacy device bl-N (identity Key,
// certificate Cert) and cloud device cs-N, both sending to cloud user bc-N.
type bridgeLoadPair struct {
	N              int                    `json:"n"`
	Key            []byte                 `json:"key"` // crypto.MarshalPrivateKey
	Cert           legacywire.Certificate `json:"cert"`
	SenderToken    string                 `json:"sender_token"`
	RecipientToken string                 `json:"recipient_token"`
}

// bridgeLoadCmd is one run a load process does when told. Op is "each"
// (one bridged message from every sender), "closed" (closed loop for
// Duration), "open" (open loop at PerSec for Duration), or "intake" (bare
// chat v2 frames, closed loop, to the bridge or the sink). Path is
// "bridge", "direct" or "sink".
type bridgeLoadCmd struct {
	Op       string        `json:"op"`
	Path     string        `json:"path"`
	Duration time.Duration `json:"duration"`
	PerSec   float64       `json:"per_sec"`
}

// bridgeLoadResult is a load process's answer to its setup (empty) or to a
// command: messages per second of a closed loop, how many were sent, and
// the latency of every one that arrived at its recipient.
type bridgeLoadResult struct {
	Err  string          `json:"err,omitempty"`
	Rate float64         `json:"rate"`
	Sent int             `json:"sent"`
	Lat  []time.Duration `json:"lat,omitempty"`
	// CPU is the CPU time (user and system) the load process spent on
	// the command, summed over the load processes by bridgeRig.run.
	CPU time.Duration `json:"cpu_ns"`
}

// quantile returns the q quantile (0..1) of res's latencies, 0 when there
// are none.
func (res bridgeLoadResult) quantile(q float64) time.Duration {
	l := latencyLog{xs: res.Lat}
	return l.quantile(q)
}

// bridgeLoader is the senders and recipients of one load process.
type bridgeLoader struct {
	su      bridgeLoadSetup
	legacy  []*legacy.Device
	hosts   []host.Host
	senders []*cloud.Client
	clients []*cloud.Client
	slots   []chan struct{} // per sender, bridgeLoadInFlight
	current atomic.Pointer[latencyLog]
}

// bridgeLoad is a load process of the bridge benchmarks: it reads its
// setup, starts its senders and recipients, answers an empty result once
// every legacy sender's lookup resolves to the bridge, then runs each
// command it reads and answers its result, until its standard input ends.
func bridgeLoad(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	dec, enc := json.NewDecoder(stdin), json.NewEncoder(stdout)
	var su bridgeLoadSetup
	if err := dec.Decode(&su); err != nil {
		return fmt.Errorf("bridge load: read setup: %w", err)
	}
	l := &bridgeLoader{su: su}
	defer l.close()
	answer := func(res bridgeLoadResult, err error) error {
		if err != nil {
			res.Err = err.Error()
		}
		return enc.Encode(res)
	}
	if err := answer(bridgeLoadResult{}, l.start(ctx)); err != nil {
		return err
	}
	for {
		var c bridgeLoadCmd
		if err := dec.Decode(&c); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("bridge load: read command: %w", err)
		}
		cpu0 := processCPU()
		res, err := l.do(ctx, c)
		res.CPU = processCPU() - cpu0
		if err := answer(res, err); err != nil {
			return err
		}
	}
}

func (l *bridgeLoader) start(ctx context.Context) error {
	for _, p := range l.su.Pairs {
		n := strconv.Itoa(p.N)
		rc, err := cloudClient(ctx, l.su.CloudURL, p.RecipientToken)
		if err != nil {
			return fmt.Errorf("bc-%s: %w", n, err)
		}
		l.clients = append(l.clients, rc)
		go recordLatencies(rc, &l.current)
		sc, err := cloudClient(ctx, l.su.CloudURL, p.SenderToken)
		if err != nil {
			return fmt.Errorf("cs-%s: %w", n, err)
		}
		l.senders = append(l.senders, sc)
		go func() { // a sender's own messages land in its inbox too
			for range sc.Events() {
			}
		}()
		key, err := crypto.UnmarshalPrivateKey(p.Key)
		if err != nil {
			return err
		}
		d, h, err := legacyDevice(ctx, key, p.Cert, l.su.Authority, l.su.Supernode)
		if err != nil {
			return err
		}
		l.legacy, l.hosts = append(l.legacy, d), append(l.hosts, h)
		l.slots = append(l.slots, make(chan struct{}, bridgeLoadInFlight))
		if err := waitRoute(ctx, d, "bc-"+n, l.su.Bridge.ID); err != nil {
			return err
		}
	}
	return nil
}

func (l *bridgeLoader) close() {
	for _, c := range append(l.clients, l.senders...) {
		c.Close()
	}
	for _, h := range l.hosts {
		h.Close()
	}
}

// send sends one message stamped with due from sender i over path, once
// the sender has a slot of its bridgeLoadInFlight.
func (l *bridgeLoader) send(ctx context.Context, path string, i int, due time.Time) error {
	select {
	case l.slots[i] <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-l.slots[i] }()
	to := "bc-" + strconv.Itoa(l.su.Pairs[i].N)
	switch path {
	case "bridge": // as a legacy client does: a lookup, then a chat stream to the bridge
		_, ack, err := l.legacy[i].Send(ctx, to, stampText(due))
		if err == nil && !ack.Delivered() {
			err = fmt.Errorf("bridge refused: %s %s", ack.Code, ack.Error)
		}
		return err
	case "direct":
		_, err := l.senders[i].Send(ctx, cloudwire.Send{To: to, Text: stampText(due)})
		return err
	}
	return fmt.Errorf("unknown path %q", path)
}

// intake sends one bare chat v2 frame from sender i to the bridge or the
// sink, with no directory lookup.
func (l *bridgeLoader) intake(ctx context.Context, path string, i int) error {
	to := l.su.Bridge
	if path == "sink" {
		if l.su.Sink == nil {
			return errors.New("no sink in this run")
		}
		to = *l.su.Sink
	}
	id, err := uuid.NewV7()
	if err != nil {
		return err
	}
	p := l.su.Pairs[i]
	msg := legacywire.ChatMessage{ID: id.String(), From: p.Cert.User, To: "bc-" + strconv.Itoa(p.N),
		Text: "benchmark message", SentAt: time.Now().UTC().Truncate(time.Millisecond)}
	ack, _, err := legacy.SendChatFrame(ctx, l.hosts[i], p.Cert, to, 0,
		legacywire.ChatFrame{Type: legacywire.FrameMsg, ID: msg.ID, Msg: &msg})
	if err == nil && !ack.Delivered() {
		err = fmt.Errorf("refused: %s %s", ack.Code, ack.Error)
	}
	return err
}

// do runs c and returns its result, with the latencies of what arrived.
func (l *bridgeLoader) do(ctx context.Context, c bridgeLoadCmd) (bridgeLoadResult, error) {
	var (
		res  bridgeLoadResult
		err  error
		sent atomic.Int64
		k    = len(l.legacy)
		log  = &latencyLog{}
	)
	l.current.Store(log)
	defer l.current.Store(nil)
	counted := func(i int, due time.Time) error {
		if err := l.send(ctx, c.Path, i, due); err != nil {
			return err
		}
		sent.Add(1)
		return nil
	}
	switch c.Op {
	case "each":
		for i := range k {
			if err = counted(i, time.Now()); err != nil {
				break
			}
		}
	case "closed":
		res.Rate, err = rate(ctx, c.Duration, k, func(i int) error { return counted(i, time.Now()) })
	case "open":
		err = openLoop(ctx, c.Duration, c.PerSec, func(n int, due time.Time) error { return counted(n%k, due) })
	case "intake":
		res.Rate, err = rate(ctx, c.Duration, k, func(i int) error {
			if err := l.intake(ctx, c.Path, i); err != nil {
				return err
			}
			sent.Add(1)
			return nil
		})
		res.Sent = int(sent.Load())
		return res, err
	default:
		return res, fmt.Errorf("unknown op %q", c.Op)
	}
	res.Sent = int(sent.Load())
	log.waitFor(ctx, res.Sent)
	log.mu.Lock()
	res.Lat = slices.Clone(log.xs)
	log.mu.Unlock()
	return res, err
}
