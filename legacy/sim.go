package legacy

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Simulator defaults and bounds.
const (
	// DefaultSimRate is SimConfig.Rate when zero: messages per second per user.
	DefaultSimRate = 0.5
	// DefaultSimUserPrefix is SimConfig.UserPrefix when empty.
	DefaultSimUserPrefix = "sim-"
	// MaxSimUsers bounds SimConfig.Users: every simulated device is a host
	// with its own listener in this process (about 20,000 descriptors).
	MaxSimUsers = 2000
	// DefaultSimProgress is SimConfig.Progress when zero.
	DefaultSimProgress = 5 * time.Second
	// DefaultSimChurnDowntime is SimConfig.ChurnDowntime when zero.
	DefaultSimChurnDowntime = 10 * time.Second
	// simWorkers bounds the sends in flight.
	simWorkers = 32
	// simSetupParallelism bounds concurrent host creation and registration.
	simSetupParallelism = 16
	// simHostMaxConns sizes each simulated device's host.
	simHostMaxConns = 256
	// simSendTimeout bounds one simulated send (lookup plus chat).
	simSendTimeout = 10 * time.Second
	// simRefreshInterval is how often simulated devices renew their
	// registration, well inside the supernode's default record TTL.
	simRefreshInterval = DefaultRecordTTL / 3
	// SimFileSize is the size of the file simulated v3 devices offer
	// (SimConfig.FilePercent): three chunks and a bit.
	SimFileSize = 3*FileChunkSize + 1000
	// simAcceptParallelism bounds the file transfers simulated devices
	// run at once; offers beyond it are declined.
	simAcceptParallelism = 8
)

// simVersions are the client versions simulated devices claim, spread over
// the population.
var simVersions = []string{"5.9.2", "6.0.0", "6.1.4", "6.2.1"}

// SimConfig configures RunSim.
type SimConfig struct {
	// Users is the number of simulated users.
	Users int
	// DevicesPerUser is how many devices each user runs (default 1): a chat
	// v2 sender fans a message out to all of them.
	DevicesPerUser int
	// V1Percent is the share of devices, in percent, that are old clients
	// speaking chat v1 only (DeviceConfig.MaxChatVersion 1); they are
	// spread evenly over the population. Default 0.
	V1Percent int
	// V3Percent is the share of devices, in percent, that speak chat v3
	// (file transfer), spread evenly over the devices that are not v1; the
	// rest speak chat v2. Default 0.
	V3Percent int
	// FilePercent is the share, in percent, of a v3 device's sends that
	// are file offers (a SimFileSize file) instead of text messages. v3
	// recipients accept each offer and check its hash; v1 and v2
	// recipients get the text notice. Default 0.
	FilePercent int
	// CallPercent is the share, in percent, of a v2 or v3 device's sends
	// that are audio calls instead of text messages (signalling only: no
	// media stream). Callees answer after a short delay and the caller
	// hangs up a moment later; a callee whose devices speak chat v1 only
	// ends the call as unsupported. Default 0.
	CallPercent int
	// ChurnRate is devices leaving per second over the whole population (a
	// Poisson process): a leaving device closes its host and comes back
	// after an exponentially distributed downtime (mean ChurnDowntime) with
	// the same identity, re-registers and takes delivery of what the
	// supernode held for it. Default 0: no churn.
	ChurnRate float64
	// ChurnDowntime is the mean time a leaving device stays away; default
	// DefaultSimChurnDowntime.
	ChurnDowntime time.Duration
	// Fallbacks are further supernodes the devices fail over to.
	Fallbacks []peer.AddrInfo
	// Duration is how long the devices send; RunSim also stops when its
	// context ends.
	Duration time.Duration
	// Rate is messages per second per user, default DefaultSimRate. Sends
	// are a Poisson process (exponential gaps), so they come with jitter.
	Rate float64
	// UserPrefix names users UserPrefix+index; default DefaultSimUserPrefix.
	UserPrefix string
	// Contacts are extra recipients (cloud users, for example) that simulated
	// users message too.
	Contacts []string
	// Supernode is the directory the devices register with.
	Supernode peer.AddrInfo
	// Supernodes, when set, spreads the devices over several supernodes:
	// device i registers with Supernodes[i % len] and fails over to the
	// others (then Fallbacks). Supernode is then unused.
	Supernodes []peer.AddrInfo
	// Authority is the key peers' certificates must be signed by.
	Authority ed25519.PublicKey
	// Certify obtains a certificate for a simulated device. The platform and
	// client version the simulator picked for it are in ctx: see
	// SimProfileFromContext.
	Certify func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error)
	// Platforms are spread over the devices in turn; default desktop,
	// android, ios. A platform listed twice gets twice the share
	// (SimPlatformMix builds such a list from shares).
	Platforms []string
	// Progress is how often OnProgress is called; default
	// DefaultSimProgress.
	Progress time.Duration
	// OnProgress, when set, receives the counters every Progress while the
	// devices run, and once more when they stop, before their hosts close
	// (the population at its full size).
	OnProgress func(SimStats)
	// Ready, when set, is called once the devices are registered, before
	// any is sent to, with their number: it may wait until the directory
	// has taken them all in (SimNetwork.WaitReplicated). An error ends the
	// simulation with it.
	Ready func(ctx context.Context, devices int) error
	// Logger receives the simulator's logs, tagged component=legacy.sim; nil
	// discards them.
	Logger *slog.Logger
}

// Validate reports whether the config can run.
func (c SimConfig) Validate() error {
	switch {
	case c.Users < 1 || c.Users > MaxSimUsers:
		return fmt.Errorf("%w: Users %d not in 1..%d", ErrInvalidConfig, c.Users, MaxSimUsers)
	case c.Duration <= 0:
		return fmt.Errorf("%w: Duration %v is not positive", ErrInvalidConfig, c.Duration)
	case c.DevicesPerUser < 0 || c.Users*max(c.DevicesPerUser, 1) > MaxSimUsers:
		return fmt.Errorf("%w: %d users of %d devices: at most %d devices", ErrInvalidConfig, c.Users, c.DevicesPerUser, MaxSimUsers)
	case c.V1Percent < 0 || c.V1Percent > 100:
		return fmt.Errorf("%w: V1Percent %d not in 0..100", ErrInvalidConfig, c.V1Percent)
	case c.V3Percent < 0 || c.V1Percent+c.V3Percent > 100:
		return fmt.Errorf("%w: V3Percent %d not in 0..%d", ErrInvalidConfig, c.V3Percent, 100-c.V1Percent)
	case c.FilePercent < 0 || c.CallPercent < 0 || c.FilePercent+c.CallPercent > 100:
		return fmt.Errorf("%w: FilePercent %d and CallPercent %d: each at least 0, together at most 100", ErrInvalidConfig, c.FilePercent, c.CallPercent)
	case c.Rate < 0:
		return fmt.Errorf("%w: Rate %v is negative", ErrInvalidConfig, c.Rate)
	case c.ChurnRate < 0 || c.ChurnDowntime < 0 || c.Progress < 0:
		return fmt.Errorf("%w: negative churn rate, downtime or progress interval", ErrInvalidConfig)
	case c.Supernode.ID == "" && len(c.Supernodes) == 0:
		return fmt.Errorf("%w: sim needs a supernode", ErrInvalidConfig)
	case len(c.Authority) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: sim needs an ed25519 authority key", ErrInvalidConfig)
	case c.Certify == nil:
		return fmt.Errorf("%w: sim needs a Certify function", ErrInvalidConfig)
	case c.Users == 1 && len(c.Contacts) == 0:
		return fmt.Errorf("%w: one user and no contacts: nobody to message", ErrInvalidConfig)
	}
	return nil
}

// SimStats counts what happened during a simulation.
type SimStats struct {
	// Elapsed is the time since the devices started sending.
	Elapsed time.Duration
	// Devices is the simulated devices that registered; Online those
	// running now (not away by churn, not told to upgrade).
	Devices, Online int
	// Sent is the number of messages attempted (text and file offers;
	// calls are counted apart).
	Sent int64
	// Delivered is the number acked as delivered by a device of the
	// recipient (or the bridge).
	Delivered int64
	// Stored is the number the supernode held for a recipient with no
	// live device, to be handed over when one registers (Received counts
	// them then).
	Stored int64
	// Failed is the number refused or undeliverable.
	Failed int64
	// Expired is the supernode's reports of messages held too long and
	// dropped unread, handed to a device of their sender.
	Expired int64
	// Received is the number of distinct messages simulated devices received.
	Received int64
	// LatencyP50 and LatencyP99 are the median and 99th percentile of the
	// time from a text send to its delivered ack (within 5%).
	LatencyP50, LatencyP99 time.Duration
	// UpgradeRequired is the number of devices the supernode refused with
	// legacywire.CodeUpgradeRequired (at setup or at a refresh). Each one
	// logged the notice once and stopped registering and sending, as a
	// real client must.
	UpgradeRequired int64
	// Notices is the number of messages received from the official system
	// contact (legacywire.NoticesUser), counted in Received too.
	Notices int64
	// LastNotice is the text of the last upgrade notice or system-contact
	// message a device got, "" when none.
	LastNotice string
	// FilesOffered counts the sends that were file offers (in Sent too);
	// FilesReceived the offers a v3 recipient accepted, received whole and
	// verified; FilesFailed those whose transfer failed or was declined
	// for lack of room (simAcceptParallelism).
	FilesOffered, FilesReceived, FilesFailed int64
	// CallsPlaced counts the sends that were calls (not in Sent);
	// CallsConnected those a callee's device answered; CallsUnanswered
	// those that ended otherwise (unsupported, unreachable, timeout,
	// failed).
	CallsPlaced, CallsConnected, CallsUnanswered int64
	// ChurnLeft and ChurnReturned count devices leaving and coming back.
	ChurnLeft, ChurnReturned int64
}

// SimProfile is what a simulated device claims to be.
type SimProfile struct {
	Platform      string
	ClientVersion string
	// ChatVersion is the highest chat version the device speaks (1, 2 or
	// 3): Certify may grant legacywire.CapChat1, CapChat2 or CapChat3 to
	// match (SimCapabilities).
	ChatVersion int
}

type simProfileKey struct{}

// SimProfileFromContext returns the platform and client version RunSim
// picked for the device being certified, from the context it passes to
// SimConfig.Certify.
func SimProfileFromContext(ctx context.Context) (SimProfile, bool) {
	p, ok := ctx.Value(simProfileKey{}).(SimProfile)
	return p, ok
}

// RunSim starts cfg.Users devices, each on its own host on 127.0.0.1,
// registers them, and has them message each other and cfg.Contacts at
// cfg.Rate until cfg.Duration passes or ctx ends, with churn when
// configured. It closes every host before returning. Ending by ctx is not
// an error; failing to set up a device is.
func RunSim(ctx context.Context, cfg SimConfig) (SimStats, error) {
	if err := cfg.Validate(); err != nil {
		return SimStats{}, err
	}
	cfg = cfg.withDefaults()
	log := componentLogger(cfg.Logger, "legacy.sim")

	s := &simRun{cfg: cfg, log: log, ctx: ctx}
	files, err := newSimFiles(ctx, log, &s.stats)
	if err != nil {
		return SimStats{}, err
	}
	s.files = files
	err = s.setup(ctx)
	defer s.closeAll()
	defer files.stop()
	if err != nil && ctx.Err() != nil {
		return s.snapshot(), nil // ended while setting up: not an error
	}
	if err != nil {
		return SimStats{}, err
	}
	log.Info("simulated devices registered", "devices", len(s.slots), "upgrade_required", s.stats.upgradeRequired.Load())
	if len(s.slots) == 0 {
		return s.snapshot(), nil
	}
	if cfg.Ready != nil {
		if err := cfg.Ready(ctx, len(s.slots)); err != nil {
			if ctx.Err() != nil {
				return s.snapshot(), nil
			}
			return SimStats{}, fmt.Errorf("legacy: sim: %w", err)
		}
	}

	recipients := make([]string, 0, cfg.Users+len(cfg.Contacts))
	for i := range cfg.Users {
		recipients = append(recipients, fmt.Sprintf("%s%d", cfg.UserPrefix, i))
	}
	recipients = append(recipients, cfg.Contacts...)

	s.start = time.Now()
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	jobs := make(chan simJob)
	var wg sync.WaitGroup
	for range min(simWorkers, len(s.slots)) {
		wg.Go(func() {
			for j := range jobs {
				s.send(ctx, j)
			}
		})
	}
	var bg sync.WaitGroup
	bg.Go(func() { s.refresh(runCtx) })
	bg.Go(func() { s.progress(runCtx) })
	if cfg.ChurnRate > 0 {
		bg.Go(func() { s.churn(runCtx) })
	}
	s.schedule(runCtx, recipients, jobs)
	close(jobs)
	wg.Wait()
	bg.Wait()
	s.calls.Wait()

	out := s.snapshot()
	if cfg.OnProgress != nil {
		cfg.OnProgress(out)
	}
	log.Info("simulation done", "sent", out.Sent, "delivered", out.Delivered, "stored", out.Stored,
		"failed", out.Failed, "received", out.Received)
	return out, nil
}

func (c SimConfig) withDefaults() SimConfig {
	if c.Rate == 0 {
		c.Rate = DefaultSimRate
	}
	if c.DevicesPerUser == 0 {
		c.DevicesPerUser = 1
	}
	if c.UserPrefix == "" {
		c.UserPrefix = DefaultSimUserPrefix
	}
	if len(c.Platforms) == 0 {
		c.Platforms = []string{"desktop", "android", "ios"}
	}
	if c.Progress == 0 {
		c.Progress = DefaultSimProgress
	}
	if c.ChurnDowntime == 0 {
		c.ChurnDowntime = DefaultSimChurnDowntime
	}
	if len(c.Supernodes) == 0 {
		c.Supernodes = []peer.AddrInfo{c.Supernode}
	}
	return c
}

// simRun is one simulation: its devices (slots) and counters.
type simRun struct {
	cfg   SimConfig
	log   *slog.Logger
	ctx   context.Context // RunSim's: ends background transfers and calls
	files *simFiles
	slots []*simSlot // the devices that run (not refused at setup)
	all   []*simSlot // every slot made, closed at the end
	stats simCounters
	start time.Time
	calls sync.WaitGroup // callee answers and caller hang-ups in flight
}

func (s *simRun) snapshot() SimStats {
	out := s.stats.snapshot()
	out.Devices = len(s.slots)
	for _, sl := range s.slots {
		if sl.online() {
			out.Online++
		}
	}
	if !s.start.IsZero() {
		out.Elapsed = time.Since(s.start)
	}
	return out
}

type simCounters struct {
	sent, delivered, stored, failed, expired, received atomic.Int64
	upgradeRequired, notices                           atomic.Int64
	filesOffered, filesReceived, filesFailed           atomic.Int64
	callsPlaced, callsConnected, callsUnanswered       atomic.Int64
	churnLeft, churnReturned                           atomic.Int64
	lastNotice                                         atomic.Pointer[string]
	latency                                            simLatency
}

func (c *simCounters) snapshot() SimStats {
	out := SimStats{Sent: c.sent.Load(), Delivered: c.delivered.Load(), Stored: c.stored.Load(), Failed: c.failed.Load(),
		Expired: c.expired.Load(), Received: c.received.Load(),
		LatencyP50: c.latency.quantile(0.5), LatencyP99: c.latency.quantile(0.99),
		UpgradeRequired: c.upgradeRequired.Load(), Notices: c.notices.Load(),
		FilesOffered: c.filesOffered.Load(), FilesReceived: c.filesReceived.Load(), FilesFailed: c.filesFailed.Load(),
		CallsPlaced: c.callsPlaced.Load(), CallsConnected: c.callsConnected.Load(), CallsUnanswered: c.callsUnanswered.Load(),
		ChurnLeft: c.churnLeft.Load(), ChurnReturned: c.churnReturned.Load()}
	if n := c.lastNotice.Load(); n != nil {
		out.LastNotice = *n
	}
	return out
}

// toldToUpgrade reports whether err is the supernode's upgrade-required
// refusal and, when it is, shows the notice (the log stands for the user's
// screen) and counts the device as stopped.
func (c *simCounters) toldToUpgrade(log *slog.Logger, user string, err error) bool {
	var up *UpgradeRequiredError
	if !errors.As(err, &up) {
		return false
	}
	log.Info("simulated device told to upgrade; it stops registering", "user", user, "notice", up.Notice)
	c.upgradeRequired.Add(1)
	c.lastNotice.Store(&up.Notice)
	return true
}

// onMessage counts a received message, and a system notice apart.
func (c *simCounters) onMessage(log *slog.Logger, m legacywire.ChatMessage) {
	c.received.Add(1)
	if m.From == legacywire.NoticesUser {
		log.Info("simulated device got a notice", "user", m.To, "notice", m.Text)
		c.notices.Add(1)
		c.lastNotice.Store(&m.Text)
	}
}

type simJob struct {
	from *simSlot
	to   string
	seq  int64
}

// setup builds, certifies and registers the devices. A device refused
// with an upgrade notice is left out of s.slots: it neither sends nor
// registers again. The hosts of every slot made, kept or not, are closed
// by closeAll.
func (s *simRun) setup(ctx context.Context) error {
	cfg := s.cfg
	n := cfg.Users * cfg.DevicesPerUser
	versions := simChatVersions(n, cfg.V1Percent, cfg.V3Percent)
	slots := make([]*simSlot, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(simSetupParallelism)
	for i := range n {
		sl, err := s.newSlot(i, versions[i])
		if err != nil {
			s.all = slots
			return err
		}
		slots[i] = sl
		g.Go(func() error {
			profile := SimProfile{Platform: cfg.Platforms[i%len(cfg.Platforms)], ClientVersion: simVersions[i%len(simVersions)], ChatVersion: sl.chatVersion}
			cert, err := cfg.Certify(context.WithValue(gctx, simProfileKey{}, profile), sl.id, sl.user)
			if err != nil {
				return fmt.Errorf("certify %s: %w", sl.user, err)
			}
			sl.cert = cert
			if err := sl.up(gctx); err != nil {
				if s.stats.toldToUpgrade(s.log, sl.user, err) {
					sl.stopped.Store(true)
					return nil
				}
				return err
			}
			return nil
		})
	}
	err := g.Wait()
	s.all = slots
	if err != nil {
		return fmt.Errorf("legacy: sim setup: %w", err)
	}
	s.slots = slices.DeleteFunc(slices.Clone(slots), func(sl *simSlot) bool { return sl.stopped.Load() })
	return nil
}

// refresh renews every running device's registration, as a real client
// does, until ctx ends. A device told to upgrade stops refreshing (and
// sending), as a real client must, instead of retrying forever.
func (s *simRun) refresh(ctx context.Context) {
	every(ctx, simRefreshInterval, func() {
		for _, sl := range s.slots {
			d := sl.device()
			if d == nil || sl.stopped.Load() {
				continue
			}
			err := d.Register(ctx)
			if err != nil && s.stats.toldToUpgrade(s.log, sl.user, err) {
				sl.stopped.Store(true)
				continue
			}
			if err != nil && ctx.Err() == nil {
				s.log.Warn("simulated refresh failed", "user", sl.user, "err", err)
			}
		}
	})
}

// progress hands the counters to OnProgress every Progress until ctx ends.
func (s *simRun) progress(ctx context.Context) {
	if s.cfg.OnProgress != nil {
		every(ctx, s.cfg.Progress, func() { s.cfg.OnProgress(s.snapshot()) })
	}
}

// every runs f every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// schedule emits send jobs as a Poisson process of rate per running
// device until ctx ends. It blocks when every worker is busy, which slows
// the offered load rather than piling up goroutines.
func (s *simRun) schedule(ctx context.Context, recipients []string, jobs chan<- simJob) {
	rate := s.cfg.Rate * float64(len(s.slots))
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	var seq int64
	for {
		timer.Reset(time.Duration(rand.ExpFloat64() / rate * float64(time.Second)))
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		from := s.slots[rand.IntN(len(s.slots))]
		if !from.online() {
			continue // away (churn) or told to upgrade: a real client sends nothing
		}
		to := recipients[rand.IntN(len(recipients))]
		if to == from.user {
			continue
		}
		seq++
		select {
		case <-ctx.Done():
			return
		case jobs <- simJob{from: from, to: to, seq: seq}:
		}
	}
}

func (s *simRun) send(ctx context.Context, j simJob) {
	ctx, cancel := context.WithTimeout(ctx, simSendTimeout)
	defer cancel()
	d := j.from.device()
	if d == nil || j.from.stopped.Load() {
		return // left meanwhile, or told to upgrade
	}
	roll := rand.IntN(100)
	if j.from.chatVersion >= 2 && roll >= 100-s.cfg.CallPercent {
		s.call(ctx, d, j.to)
		return
	}
	s.stats.sent.Add(1)
	var (
		ack  legacywire.ChatAck
		err  error
		text = true
	)
	start := time.Now()
	if j.from.chatVersion == 3 && roll < s.cfg.FilePercent {
		s.stats.filesOffered.Add(1)
		text = false
		_, _, err = d.OfferFile(ctx, j.to, s.files.path)
	} else {
		_, ack, err = d.Send(ctx, j.to, fmt.Sprintf("simulated message %d from %s", j.seq, j.from.user))
	}
	if err != nil {
		s.stats.failed.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, context.Canceled) || !j.from.online() {
			level = slog.LevelDebug
		}
		s.log.Log(ctx, level, "simulated send failed", "from", j.from.user, "to", j.to, "err", err)
		return
	}
	if ack.Status == legacywire.StatusStored {
		s.stats.stored.Add(1)
		return
	}
	s.stats.delivered.Add(1)
	if text {
		s.stats.latency.add(time.Since(start))
	}
}

// closeAll closes every device's host, a few at a time.
func (s *simRun) closeAll() {
	var g errgroup.Group
	g.SetLimit(simSetupParallelism)
	for _, sl := range s.all {
		if sl != nil {
			g.Go(sl.down)
		}
	}
	if err := g.Wait(); err != nil {
		s.log.Warn("close simulated hosts", "err", err)
	}
}

// SimShare is one platform's share of a simulated population, in percent
// (or any weight: SimPlatformMix uses the ratios).
type SimShare struct {
	Platform string
	Percent  int
}

// DefaultSimPlatformMix is a consumer messenger's installed base: mostly
// phones, then desktops.
var DefaultSimPlatformMix = []SimShare{{"windows", 30}, {"mac", 10}, {"linux", 5}, {"android", 40}, {"ios", 15}}

// SimPlatformMix returns a SimConfig.Platforms list that gives each
// platform its share: one entry per weight unit (after dividing by the
// weights' greatest common divisor), interleaved (smooth weighted round
// robin) so that a small population still gets a spread. Shares of zero
// are left out.
func SimPlatformMix(shares []SimShare) []string {
	g := 0
	for _, s := range shares {
		if s.Percent > 0 {
			g = gcd(g, s.Percent)
		}
	}
	if g == 0 {
		return nil
	}
	total := 0
	for _, s := range shares {
		total += max(s.Percent, 0) / g
	}
	out := make([]string, 0, total)
	current := make([]int, len(shares))
	for range total {
		best := -1
		for i, s := range shares {
			if s.Percent <= 0 {
				continue
			}
			current[i] += s.Percent / g
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		out = append(out, shares[best].Platform)
	}
	return out
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
