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

	"github.com/libp2p/go-libp2p/core/host"
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
	// Authority is the key peers' certificates must be signed by.
	Authority ed25519.PublicKey
	// Certify obtains a certificate for a simulated device. The platform and
	// client version the simulator picked for it are in ctx: see
	// SimProfileFromContext.
	Certify func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error)
	// Platforms are spread over the devices; default desktop, android, ios.
	Platforms []string
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
	case c.FilePercent < 0 || c.FilePercent > 100:
		return fmt.Errorf("%w: FilePercent %d not in 0..100", ErrInvalidConfig, c.FilePercent)
	case c.Rate < 0:
		return fmt.Errorf("%w: Rate %v is negative", ErrInvalidConfig, c.Rate)
	case c.Supernode.ID == "":
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
	// Sent is the number of messages attempted.
	Sent int64
	// Delivered is the number acked as delivered.
	Delivered int64
	// Failed is the number refused or not delivered.
	Failed int64
	// Received is the number of distinct messages simulated devices received.
	Received int64
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
}

// SimProfile is what a simulated device claims to be.
type SimProfile struct {
	Platform      string
	ClientVersion string
	// ChatVersion is the highest chat version the device speaks (1, 2 or
	// 3): Certify may grant legacywire.CapChat1, CapChat2 or CapChat3 to
	// match.
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
// cfg.Rate until cfg.Duration passes or ctx ends. It closes every host before
// returning. Ending by ctx is not an error; failing to set up a device is.
func RunSim(ctx context.Context, cfg SimConfig) (SimStats, error) {
	if err := cfg.Validate(); err != nil {
		return SimStats{}, err
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultSimRate
	}
	if cfg.DevicesPerUser == 0 {
		cfg.DevicesPerUser = 1
	}
	if cfg.UserPrefix == "" {
		cfg.UserPrefix = DefaultSimUserPrefix
	}
	if len(cfg.Platforms) == 0 {
		cfg.Platforms = []string{"desktop", "android", "ios"}
	}
	log := componentLogger(cfg.Logger, "legacy.sim")

	var stats simCounters
	files, err := newSimFiles(ctx, log, &stats)
	if err != nil {
		return SimStats{}, err
	}
	devices, hosts, err := simSetup(ctx, cfg, log, &stats, files)
	defer closeHosts(log, hosts)
	defer files.stop()
	if err != nil {
		return SimStats{}, err
	}
	log.Info("simulated devices registered", "devices", len(devices), "upgrade_required", stats.upgradeRequired.Load())
	if len(devices) == 0 {
		return stats.snapshot(), nil
	}

	recipients := make([]string, 0, cfg.Users+len(cfg.Contacts))
	for i := range cfg.Users {
		recipients = append(recipients, fmt.Sprintf("%s%d", cfg.UserPrefix, i))
	}
	recipients = append(recipients, cfg.Contacts...)

	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	jobs := make(chan simJob)
	var wg sync.WaitGroup
	for range min(simWorkers, len(devices)) {
		wg.Go(func() {
			for j := range jobs {
				simSend(ctx, log, j, &stats, files, cfg.FilePercent)
			}
		})
	}
	stopped := make([]atomic.Bool, len(devices))
	wg.Go(func() { simRefresh(runCtx, log, devices, stopped, &stats) })
	simSchedule(runCtx, cfg.Rate*float64(len(devices)), devices, stopped, recipients, jobs)
	close(jobs)
	wg.Wait()

	out := stats.snapshot()
	log.Info("simulation done", "sent", out.Sent, "delivered", out.Delivered, "failed", out.Failed, "received", out.Received)
	return out, nil
}

type simCounters struct {
	sent, delivered, failed, received        atomic.Int64
	upgradeRequired, notices                 atomic.Int64
	filesOffered, filesReceived, filesFailed atomic.Int64
	lastNotice                               atomic.Pointer[string]
}

func (c *simCounters) snapshot() SimStats {
	out := SimStats{Sent: c.sent.Load(), Delivered: c.delivered.Load(), Failed: c.failed.Load(), Received: c.received.Load(),
		UpgradeRequired: c.upgradeRequired.Load(), Notices: c.notices.Load(),
		FilesOffered: c.filesOffered.Load(), FilesReceived: c.filesReceived.Load(), FilesFailed: c.filesFailed.Load()}
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
	from *Device
	// stopped is set once the sender was told to upgrade.
	stopped *atomic.Bool
	to      string
	seq     int64
}

// simSetup builds, certifies and registers the devices. It returns every
// host it created, even on error, so the caller can close them.
// A device refused with an upgrade notice is left out of the returned
// devices: it neither sends nor registers again.
func simSetup(ctx context.Context, cfg SimConfig, log *slog.Logger, stats *simCounters, files *simFiles) ([]*Device, []host.Host, error) {
	n := cfg.Users * cfg.DevicesPerUser
	versions := simChatVersions(n, cfg.V1Percent, cfg.V3Percent)
	devices := make([]*Device, n)
	hosts := make([]host.Host, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(simSetupParallelism)
	for i := range n {
		g.Go(func() error {
			h, err := NewHost(HostConfig{MaxConns: simHostMaxConns})
			if err != nil {
				return err
			}
			hosts[i] = h
			user := fmt.Sprintf("%s%d", cfg.UserPrefix, i/cfg.DevicesPerUser)
			chatVersion := versions[i]
			profile := SimProfile{Platform: cfg.Platforms[i%len(cfg.Platforms)], ClientVersion: simVersions[i%len(simVersions)], ChatVersion: chatVersion}
			cert, err := cfg.Certify(context.WithValue(gctx, simProfileKey{}, profile), h.ID(), user)
			if err != nil {
				return fmt.Errorf("certify %s: %w", user, err)
			}
			var self atomic.Pointer[Device]
			d, err := NewDevice(DeviceConfig{
				Host:           h,
				Cert:           cert,
				Authority:      cfg.Authority,
				Supernode:      cfg.Supernode,
				Fallbacks:      cfg.Fallbacks,
				Logger:         cfg.Logger,
				MaxChatVersion: chatVersion,
				OnMessage:      func(m legacywire.ChatMessage) { stats.onMessage(log, m) },
				OnFileOffer:    func(o legacywire.FileOffer) { files.accept(self.Load(), o) },
			})
			if err != nil {
				return fmt.Errorf("device %s: %w", user, err)
			}
			self.Store(d)
			if err := d.Register(gctx); err != nil {
				if stats.toldToUpgrade(log, user, err) {
					return nil
				}
				return err
			}
			devices[i] = d
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, hosts, fmt.Errorf("legacy: sim setup: %w", err)
	}
	return slices.DeleteFunc(devices, func(d *Device) bool { return d == nil }), hosts, nil
}

// simRefresh renews every device's registration, as a real client does, until
// ctx ends. A device told to upgrade stops refreshing (and sending: its
// stopped flag is set), as a real client must, instead of retrying forever.
func simRefresh(ctx context.Context, log *slog.Logger, devices []*Device, stopped []atomic.Bool, stats *simCounters) {
	t := time.NewTicker(simRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for i, d := range devices {
			if stopped[i].Load() {
				continue
			}
			err := d.Register(ctx)
			if err != nil && stats.toldToUpgrade(log, d.User(), err) {
				stopped[i].Store(true)
				continue
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("simulated refresh failed", "user", d.User(), "err", err)
			}
		}
	}
}

// simSchedule emits send jobs as a Poisson process of the given total rate
// until ctx ends. It blocks when every worker is busy, which slows the
// offered load rather than piling up goroutines.
func simSchedule(ctx context.Context, rate float64, devices []*Device, stopped []atomic.Bool, recipients []string, jobs chan<- simJob) {
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
		// recipients starts with the devices' users in device order: pick
		// anyone but the sender.
		fromIdx := rand.IntN(len(devices))
		toIdx := rand.IntN(len(recipients) - 1)
		if toIdx >= fromIdx {
			toIdx++
		}
		from, to := devices[fromIdx], recipients[toIdx]
		if to == from.User() {
			continue // a contact that is also a simulated user
		}
		seq++
		select {
		case <-ctx.Done():
			return
		case jobs <- simJob{from: from, stopped: &stopped[fromIdx], to: to, seq: seq}:
		}
	}
}

func simSend(ctx context.Context, log *slog.Logger, j simJob, stats *simCounters, files *simFiles, filePercent int) {
	ctx, cancel := context.WithTimeout(ctx, simSendTimeout)
	defer cancel()
	if j.stopped.Load() {
		return // told to upgrade: a real client no longer sends
	}
	stats.sent.Add(1)
	var err error
	if j.from.cfg.MaxChatVersion == 3 && rand.IntN(100) < filePercent {
		stats.filesOffered.Add(1)
		_, _, err = j.from.OfferFile(ctx, j.to, files.path)
	} else {
		_, _, err = j.from.Send(ctx, j.to, fmt.Sprintf("simulated message %d from %s", j.seq, j.from.User()))
	}
	if err != nil {
		stats.failed.Add(1)
		level := slog.LevelWarn
		if errors.Is(err, context.Canceled) {
			level = slog.LevelDebug
		}
		log.Log(ctx, level, "simulated send failed", "from", j.from.User(), "to", j.to, "err", err)
		return
	}
	stats.delivered.Add(1)
}

// closeHosts closes the hosts, a few at a time.
func closeHosts(log *slog.Logger, hosts []host.Host) {
	var g errgroup.Group
	g.SetLimit(simSetupParallelism)
	for _, h := range hosts {
		if h != nil {
			g.Go(h.Close)
		}
	}
	if err := g.Wait(); err != nil {
		log.Warn("close simulated hosts", "err", err)
	}
}
