package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// User is the account name the bridge's own overlay certificate carries. The
// certificate also carries legacywire.CapBridge, which lets the bridge speak
// for the users whose route records name it.
const User = "ferry-bridge"

// Defaults for Config.
const (
	DefaultRouteTTL        = 10 * time.Minute
	DefaultDeliveryTimeout = 5 * time.Second
	defaultCertTTL         = 30 * 24 * time.Hour
)

// Config wires the bridge to the overlay, the cloud and the migration state.
type Config struct {
	// Host is the bridge's own overlay peer. It must not be the supernode's
	// host: the bridge publishes routes to the supernode over the overlay.
	Host host.Host
	// Authority signs the bridge's certificate and its route records.
	Authority *legacy.Authority
	// Supernode is where the bridge publishes routes and looks users up.
	Supernode peer.AddrInfo
	// SupernodeFallbacks are tried in order when Supernode cannot be
	// reached (the directory is replicated among supernodes).
	SupernodeFallbacks []peer.AddrInfo
	// State is this node's memdb view of every user's phase.
	State *migrate.State
	// JS keeps the bridge's cloud-feed cursor.
	JS jetstream.JetStream
	// CloudURL is the cloud service's WebSocket endpoint (ws://.../v1/ws).
	CloudURL string
	// CloudToken is a bridge-role token for CloudURL.
	CloudToken string
	// ClientVersion is reported in the bridge's certificate and cloud hello.
	ClientVersion string
	// RouteTTL is how long a published route record lives; the bridge
	// refreshes routes at a third of it.
	RouteTTL time.Duration
	// DeliveryTimeout bounds one delivery attempt on either side.
	DeliveryTimeout time.Duration
	// Links is the size of the pool of cloud links (pool.go): 0 means
	// DefaultLinks; at most MaxLinks. Link 0 carries the inbox feed.
	Links int
	// PuppetIdle is how long a user's puppet session stays open without a
	// request (puppets.go); 0 means DefaultPuppetIdle.
	PuppetIdle time.Duration
	// OutboxTTL is how long a cloud message waits for an offline legacy
	// recipient before it is dropped as undeliverable (DefaultOutboxTTL).
	OutboxTTL time.Duration
	// Replicas is the replica count of every stream and bucket the bridge
	// creates (cursor, id map, outbox, flip hold); 0 means 1. Use 3 on a
	// three-server NATS cluster.
	Replicas int
	// RingDelay and RingTimeout time the cloud calls the bridge places for
	// legacy callers (calls.go), as the cloud service's own do; zero means
	// cloud.DefaultRingDelay and cloud.DefaultRingTimeout.
	RingDelay, RingTimeout time.Duration
	// Admit, when set, applies the client-version policy to the legacy
	// peer behind each chat message and frame the bridge takes, before it
	// acts on it (and lets the caller count the device in its census): a
	// non-empty code refuses the item with that code and the notice as its
	// error text (legacywire.CodeUpgradeRequired for a blocked version). It
	// must answer from memory most of the time: it runs on every item.
	Admit func(ctx context.Context, from legacywire.Certificate) (code, notice string)
	// ChatLimiter, when set, rate-limits each legacy peer's chat streams
	// and frames to the bridge (legacy.ChatConfig.Limiter): a flood is
	// refused with rate_limited, which the device retries later, before
	// it costs a cloud write.
	ChatLimiter *legacy.PeerLimiter
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
	Now         func() time.Time
}

// Validate reports a configuration the bridge cannot run with.
func (c Config) Validate() error {
	switch {
	case c.Host == nil:
		return errors.New("bridge: Config.Host is required")
	case c.Authority == nil:
		return errors.New("bridge: Config.Authority is required")
	case c.Supernode.ID == "":
		return errors.New("bridge: Config.Supernode is required")
	case c.Supernode.ID == c.Host.ID():
		return errors.New("bridge: the bridge needs its own host, not the supernode's")
	case c.State == nil:
		return errors.New("bridge: Config.State is required")
	case c.JS == nil:
		return errors.New("bridge: Config.JS is required")
	case c.CloudURL == "" || c.CloudToken == "":
		return errors.New("bridge: Config.CloudURL and CloudToken are required")
	case c.Links < 0 || c.Links > MaxLinks:
		return fmt.Errorf("bridge: Config.Links must be 1 to %d (0: %d)", MaxLinks, DefaultLinks)
	}
	return nil
}

// Bridge joins the overlay and the cloud. Create it with New and run it with
// Run.
type Bridge struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	cert    legacywire.Certificate
	dir     *legacy.Directory
	metrics *metrics
	routes  *routePublisher
	cursor  *cursorStore
	outbox  *outbox
	feed    *feed // the cloud link's events, one ordered worker per user (feed.go)
	ledger  *ledger
	live    *liveRelay
	shadow  *shadow // shadow mirror, backfill and compare (shadow.go)
	// flip, hold and flow: users flipping to the cloud, the legacy
	// messages held for them, and their metrics (flip.go, mirror.go).
	flip *flipTracker
	hold *outbox
	flow *flowMetrics

	// links is the pool of cloud links, link 0 the feed's (pool.go);
	// puppets the per-user sessions multiplexed over them (puppets.go).
	links []*cloudLink
	// linkUpMu makes setLink's install, survey and gauge write one step,
	// so two links changing at once cannot leave the gauge stale.
	linkUpMu sync.Mutex
	puppets  *puppetTable
	calls    *callRelay // calls across the boundary (calls.go)
	files    *fileRelay // files across the boundary (files.go)
	// own and devices: cloud-home users' own legacy devices (devices.go).
	own     *ownDeviceMetrics
	devices *ownDevices
}

// New checks cfg, issues the bridge's overlay certificate and prepares its
// cursor store. Nothing runs until Run.
func New(ctx context.Context, cfg Config) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.RouteTTL == 0 {
		cfg.RouteTTL = DefaultRouteTTL
	}
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = DefaultDeliveryTimeout
	}
	if cfg.OutboxTTL == 0 {
		cfg.OutboxTTL = DefaultOutboxTTL
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Links == 0 {
		cfg.Links = DefaultLinks
	}
	if cfg.PuppetIdle == 0 {
		cfg.PuppetIdle = DefaultPuppetIdle
	}
	if cfg.ClientVersion == "" {
		cfg.ClientVersion = "0"
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "bridge")
	cert, err := cfg.Authority.Certify(cfg.Host.ID(), User, "bridge", cfg.ClientVersion,
		[]string{legacywire.CapBridge}, defaultCertTTL)
	if err != nil {
		return nil, fmt.Errorf("bridge: certify own peer: %w", err)
	}
	if cfg.Replicas < 1 {
		cfg.Replicas = 1
	}
	cur, err := newCursorStore(ctx, cfg.JS, cfg.Replicas, "link-0", log)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	b := &Bridge{
		cfg:     cfg,
		log:     log,
		now:     cfg.Now,
		cert:    cert,
		dir:     legacy.NewDirectory(cfg.Host, cert, cfg.Supernode, cfg.SupernodeFallbacks...),
		metrics: m,
		cursor:  cur,
	}
	b.links = newLinks(cfg.Links, m, cfg.Now)
	b.puppets = newPuppetTable(cfg.PuppetIdle, cfg.DeliveryTimeout, m, cfg.Now, log)
	if b.ledger, err = newLedger(ctx, cfg.JS, cfg.Replicas); err != nil {
		return nil, err
	}
	if err := register(cfg.Registerer, "id map ", b.ledger.sizeGauge()); err != nil {
		return nil, err
	}
	if b.flow, err = newFlowMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	b.flip = newFlipTracker()
	if b.hold, err = newQueue(ctx, cfg.JS, b.holdSpec(), cfg.OutboxTTL, b.drainHeld, cfg.Now, log, m); err != nil {
		return nil, err
	}
	spec := outboxSpec(cfg.Replicas, m)
	spec.mirror, spec.mirrorExpired = b.carryMirror, b.flow.mirrored.WithLabelValues(resultExpired)
	spec.expired = b.reportToCloudSender
	spec.note, spec.noteExpired = b.carryNote, b.flow.notes.WithLabelValues(resultExpired)
	if b.outbox, err = newQueue(ctx, cfg.JS, spec, cfg.OutboxTTL, b.carry, cfg.Now, log, m); err != nil {
		return nil, err
	}
	b.feed = newFeed(b.handleEvent, b.cursor.advance, b.ledger.setGroupName)
	b.routes = newRoutePublisher(b)
	b.live = newLiveRelay(b)
	b.calls = newCallRelay(b)
	if b.files, err = newFileRelay(ctx, b); err != nil {
		return nil, err
	}
	if b.shadow, err = newShadow(ctx, b); err != nil {
		return nil, err
	}
	if b.own, err = newOwnDeviceMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	b.devices = newOwnDevices(b, b.own)
	return b, nil
}

// PeerID is the bridge's identity on the overlay.
func (b *Bridge) PeerID() peer.ID { return b.cfg.Host.ID() }

// Run serves the overlay side, keeps the cloud link up and publishes routes
// until ctx ends. It returns after every goroutine it started has exited.
func (b *Bridge) Run(ctx context.Context) error {
	legacy.HandleChat(b.cfg.Host, legacy.ChatConfig{
		Authority: b.cfg.Authority.PublicKey(),
		Now:       b.now,
		Logger:    b.log,
		Deliver:   b.admitMessage,
		OnFrame:   b.admitFrame,
		ServeFile: b.files.serveFile,
		Limiter:   b.cfg.ChatLimiter,
	})
	defer legacy.RemoveChatHandlers(b.cfg.Host)
	for _, l := range b.links {
		l.state.set(LinkConnecting, nil)
		defer l.state.set(LinkStopped, nil)
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.routes.run(ctx) })
	for _, l := range b.links {
		g.Go(func() error { return b.runLink(ctx, l) })
	}
	g.Go(func() error { return b.puppets.run(ctx, b.linkClient) })
	g.Go(func() error { return b.cursor.run(ctx) })
	g.Go(func() error { return b.outbox.run(ctx) })
	g.Go(func() error { return b.hold.run(ctx) })
	g.Go(func() error { return b.runFlips(ctx) })
	g.Go(func() error { return b.live.run(ctx) })
	g.Go(func() error { return b.calls.run(ctx) })
	g.Go(func() error { return b.files.run(ctx) })
	g.Go(func() error { return b.shadow.run(ctx) })
	g.Go(func() error { return b.devices.run(ctx) })
	return g.Wait()
}

// admitMessage is fromLegacy behind Config.Admit.
func (b *Bridge) admitMessage(ctx context.Context, from legacywire.Certificate, msg legacywire.ChatMessage) legacywire.ChatAck {
	if b.cfg.Admit != nil {
		if code, notice := b.cfg.Admit(ctx, from); code != "" {
			b.metrics.messages.WithLabelValues(dirLegacyToCloud, resultRefused).Inc()
			b.metrics.items.WithLabelValues(dirLegacyToCloud, kindMsg, resultRefused).Inc()
			return legacywire.ChatAck{ID: msg.ID, Status: legacywire.StatusRefused, Code: code, Error: notice}
		}
	}
	return b.fromLegacy(ctx, from, msg)
}

// admitFrame is onFrame behind Config.Admit.
func (b *Bridge) admitFrame(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	if b.cfg.Admit != nil {
		if code, notice := b.cfg.Admit(ctx, from); code != "" {
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: code, Error: notice}
		}
	}
	if isFileFrame(f.Type) {
		return b.files.fileFrame(ctx, from, f)
	}
	return b.onFrame(ctx, from, f)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
