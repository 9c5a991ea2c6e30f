package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/gateway/engine"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// Defaults of the agent's listeners and lifecycle.
const (
	defaultListen       = "127.0.0.1:7070"
	defaultAdminListen  = "127.0.0.1:7071"
	defaultLegacyListen = "/ip4/127.0.0.1/tcp/7072"
	defaultBridgeListen = "/ip4/127.0.0.1/tcp/7073"
	defaultStopTimeout  = 10 * time.Second
	readHeaderTimeout   = 5 * time.Second
	adminTokenTTL       = 365 * 24 * time.Hour
	bridgeTokenTTL      = 365 * 24 * time.Hour
	legacyMaxConns      = 8192
	// legacyMaxStreamsPerPeer bounds one peer's inbound streams on the
	// agent's overlay hosts: far above what a device or the bridge keeps
	// open at once, low enough that one peer cannot take the host's share.
	legacyMaxStreamsPerPeer = 512
	// legacyDirRate and legacyDirBurst size the supernode's per-peer
	// directory limiter. A device registers every few minutes and looks a
	// user up per conversation; the bridge looks the recipient up once per
	// bridged message and a peer supernode pushes every change it accepts,
	// and the limiter (legacy.PeerLimiter) knows only peer IDs, not
	// certificates. So the limit sits fifty times above the library default
	// (legacy.DefaultRatePerPeer): it still stops a flood, and the agent's
	// own bridge and its peer supernodes are never cut (limitExempt).
	legacyDirRate  = 50 * legacy.DefaultRatePerPeer
	legacyDirBurst = 50 * legacy.DefaultBurstPerPeer
	// defaultBridgePeerRate is the -bridge-peer-rate default: one legacy
	// device's chat to the bridge, far above what a person types (a
	// message, its receipts and typing are a few frames), low enough that
	// one flooding device cannot fill the cloud.
	defaultBridgePeerRate = 10 * legacy.DefaultRatePerPeer
	// supernodeCertTTL is the life of the supernode's own certificate
	// (legacywire.CapSupernode), which peer supernodes check before taking
	// a replicated change; it is issued again at every start.
	supernodeCertTTL = 365 * 24 * time.Hour
)

// agentConfig is everything `gateway agent` reads from its flags.
type agentConfig struct {
	Dev     bool
	DataDir string
	NatsURL string
	// NatsReplicas is the replica count of every stream and bucket the agent
	// creates: 1 on the embedded engine, 3 on a NATS cluster.
	NatsReplicas int
	// PrometheusURL is the Prometheus server PromQL guardrails query; empty
	// makes them inconclusive.
	PrometheusURL string

	// BridgeOutboxTTL is how long the bridge's queues keep a message before
	// reporting it undeliverable; 0 means bridge.DefaultOutboxTTL (tests
	// shorten it).
	BridgeOutboxTTL time.Duration
	// BridgePeerRate is how many chat streams and frames per second one
	// legacy peer may send the bridge (bursts of twice that); 0 means no
	// limit (the -bridge-peer-rate flag defaults to defaultBridgePeerRate).
	BridgePeerRate float64
	// BridgeLinks is the size of the bridge's pool of cloud links; 0
	// means bridge.DefaultLinks (the -bridge-links flag's default).
	BridgeLinks int

	Listen       string
	AdminListen  string
	LegacyListen string
	BridgeListen string
	// Roles are the parts this agent runs (roleSupernode, roleCloud,
	// roleBridge); empty means all. The engine, the migration state and the
	// admin listener run in every agent.
	Roles []string
	// NatsListen exposes the embedded NATS server on host:port, so that
	// agents in other processes (a separate bridge) can share it.
	NatsListen string
	// CloudURL and Supernode locate the parts this agent does not run: the
	// cloud service's WebSocket URL and the supernode's multiaddr (with /p2p/).
	CloudURL  string
	Supernode string
	// SupernodePeers are the other supernodes of the directory (multiaddrs
	// with /p2p/): this agent's supernode replicates every registration,
	// route and revocation to them.
	SupernodePeers []string
	// SupernodeFallbacks are further supernodes (multiaddrs with /p2p/) the
	// bridge's directory client fails over to.
	SupernodeFallbacks []string
	AllowedOrigins     []string
	// CloudRetention bounds the cloud's conversation log and inboxes;
	// CloudMaxHandshakes and CloudMaxSessions shed handshakes with 503
	// (cloud.Config). Zero values take the cloud package's defaults.
	CloudRetention     cloud.Retention
	CloudMaxHandshakes int
	CloudMaxSessions   int
	// CloudRingDelay is how long an incoming call rings only the callee's
	// most recently active device; zero means cloud.DefaultRingDelay.
	CloudRingDelay time.Duration
	// CloudNodeLease is how long the devices and calls of a cloud node
	// that stopped without a goodbye stay live; zero means
	// cloud.DefaultNodeLease. CloudFiles bounds the file store.
	CloudNodeLease time.Duration
	CloudFiles     cloud.FileConfig
	// TokenIssuer and TokenAudience are the iss of every token the agent
	// issues and the aud of its cloud and bridge tokens, which its cloud
	// service requires; "" means cloudwire.DefaultIssuer and
	// cloudwire.DefaultAudience. Agents sharing a token key must agree.
	TokenIssuer, TokenAudience string
	StopTimeout                time.Duration
	// CampaignTick is how often the campaign driver looks at the
	// campaigns; zero means migrate.DefaultDriverTick.
	CampaignTick time.Duration
	// CensusMax caps the in-memory device census; zero means
	// migrate.DefaultCensusMax.
	CensusMax int
	Logger    *slog.Logger
	// GC, if set, raises the collector's percent while users move in bulk
	// (gctune.go); nil leaves the collector alone.
	GC *gcTuner
	// Out receives the start-up banner; nil prints nothing.
	Out io.Writer
}

func agentCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg agentConfig
	var origins, level, roles string
	fs.BoolVar(&cfg.Dev, "dev", false, "run everything in one process on loopback, in a fresh data directory unless -data-dir is set")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory (keys, admin token, embedded NATS); reused if it exists")
	fs.StringVar(&cfg.NatsURL, "nats-url", "", "external NATS server or cluster instead of the embedded one")
	fs.IntVar(&cfg.NatsReplicas, "nats-replicas", 1, "replicas of every stream and bucket the agent creates (3 on a NATS cluster)")
	fs.StringVar(&cfg.PrometheusURL, "prometheus-url", os.Getenv(envPrometheusURL), "Prometheus base URL that PromQL guardrails query (default $"+envPrometheusURL+")")
	fs.DurationVar(&cfg.CampaignTick, "campaign-tick", 0, "how often the campaign driver looks at running campaigns (0: the default)")
	fs.IntVar(&cfg.CensusMax, "census-max", migrate.DefaultCensusMax, "devices the in-memory census keeps; beyond it the least recently seen are evicted")
	fs.StringVar(&cfg.Listen, "listen", defaultListen, "cloud listener host:port (/v1/ws, /healthz)")
	fs.StringVar(&cfg.AdminListen, "admin-listen", defaultAdminListen, "admin listener host:port (/v1/admin/..., /metrics, /healthz)")
	fs.StringVar(&cfg.LegacyListen, "legacy-listen", defaultLegacyListen, "overlay listener of the supernode (multiaddr)")
	fs.StringVar(&cfg.BridgeListen, "bridge-listen", defaultBridgeListen, "overlay listener of the bridge peer (multiaddr)")
	fs.IntVar(&cfg.BridgeLinks, "bridge-links", bridge.DefaultLinks, fmt.Sprintf("WebSocket links the bridge keeps to the cloud, 1 to %d: link 0 carries the inbox feed, each legacy user's requests go to one link by a hash of the user id", bridge.MaxLinks))
	fs.Float64Var(&cfg.BridgePeerRate, "bridge-peer-rate", defaultBridgePeerRate, "chat streams and frames per second one legacy peer may send the bridge, bursts of twice that; over it they are refused rate_limited (0: no limit)")
	fs.StringVar(&roles, "roles", strings.Join(allRoles, ","), "parts this agent runs: any of "+strings.Join(allRoles, ","))
	fs.StringVar(&cfg.NatsListen, "nats-listen", "", "also serve the embedded NATS on host:port, for agents in other processes")
	fs.StringVar(&cfg.CloudURL, "cloud-url", "", "cloud WebSocket URL, for a bridge in an agent without the cloud role")
	fs.StringVar(&cfg.Supernode, "supernode", "", "supernode multiaddr with /p2p/ID, for an agent without the supernode role")
	var snPeers, snFallbacks string
	fs.StringVar(&snFallbacks, "supernode-fallbacks", "", "comma-separated multiaddrs with /p2p/ID of supernodes the bridge fails over to")
	fs.StringVar(&snPeers, "supernode-peers", "", "comma-separated multiaddrs with /p2p/ID of the other supernodes this agent's supernode replicates to")
	fs.StringVar(&origins, "allowed-origins", "http://127.0.0.1:7070,http://localhost:7070", "comma-separated Origin allowlist for browser clients")
	fs.DurationVar(&cfg.CloudRetention.LogMaxAge, "cloud-log-max-age", 0, "drop cloud conversation-log entries older than this (0: keep all; else at least 10m)")
	fs.Int64Var(&cfg.CloudRetention.LogMaxBytes, "cloud-log-max-bytes", cloud.DefaultRetention.LogMaxBytes, "bound the cloud conversation log to this many bytes, oldest dropped first (-1: no bound)")
	fs.DurationVar(&cfg.CloudRetention.InboxMaxAge, "cloud-inbox-max-age", cloud.DefaultRetention.InboxMaxAge, "drop cloud inbox events older than this (negative: keep all; else at least 10m)")
	fs.Int64Var(&cfg.CloudRetention.InboxMaxBytes, "cloud-inbox-max-bytes", cloud.DefaultRetention.InboxMaxBytes, "bound the cloud inboxes to this many bytes, oldest dropped first (-1: no bound)")
	fs.IntVar(&cfg.CloudMaxHandshakes, "cloud-max-handshakes", cloud.DefaultMaxHandshakes, "cloud sessions set up at once (hello to end of initial sync); beyond it handshakes wait in a line of 8 times as many (at most 5s), then get 503 + Retry-After")
	fs.DurationVar(&cfg.CloudRetention.SendsMaxAge, "cloud-sends-max-age", cloud.DefaultRetention.SendsMaxAge, "keep send idempotency records this long; a resend after it is a new message (negative: keep all; else at least 10m)")
	fs.DurationVar(&cfg.CloudNodeLease, "cloud-node-lease", cloud.DefaultNodeLease, "how long the devices and calls of a cloud node that died stay live before other nodes mark them offline and ended")
	fs.Int64Var(&cfg.CloudFiles.MaxSize, "cloud-file-max-size", cloud.DefaultMaxFileSize, "largest file upload accepted, in bytes")
	fs.Int64Var(&cfg.CloudFiles.MaxBytes, "cloud-files-max-bytes", 0, "bound the file store to this many bytes; uploads past it are refused with 507 (0: no bound)")
	fs.DurationVar(&cfg.CloudFiles.MaxAge, "cloud-files-max-age", 0, "drop stored files older than this (0: keep all)")
	fs.DurationVar(&cfg.CloudRingDelay, "cloud-ring-delay", cloud.DefaultRingDelay, "how long an incoming call rings only the callee's most recently active device before the others")
	fs.StringVar(&cfg.TokenIssuer, "token-issuer", cloudwire.DefaultIssuer, "iss of the tokens this agent issues and its cloud service requires")
	fs.StringVar(&cfg.TokenAudience, "token-audience", cloudwire.DefaultAudience, "aud of the cloud and bridge tokens this agent issues and its cloud service requires")
	fs.IntVar(&cfg.CloudMaxSessions, "cloud-max-sessions", 0, "cloud sessions on this agent before handshakes get 503 + Retry-After (0: no bound)")
	fs.DurationVar(&cfg.StopTimeout, "stop-timeout", defaultStopTimeout, "deadline for a clean stop after SIGINT/SIGTERM")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error")
	gcPercent := fs.Int("gc-percent", 0, "the garbage collector's GOGC (0: Go's default, 100); $GOGC takes precedence")
	gcBulk := fs.Int("gc-percent-bulk", defaultBulkGCPercent, "the GOGC while a campaign step moves users in bulk (0: not raised); the agent runs under a soft memory limit of 3/4 of the usable memory unless $GOMEMLIMIT is set")
	if _, err := parseArgs(fs, args); err != nil {
		return errUsage
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	cfg.GC = tuneGC(*gcPercent, *gcBulk)
	cfg.Logger.Info("garbage collector", "setting", cfg.GC.String())
	cfg.AllowedOrigins = splitList(origins)
	cfg.Roles = splitList(roles)
	cfg.SupernodePeers = splitList(snPeers)
	cfg.SupernodeFallbacks = splitList(snFallbacks)
	for _, r := range cfg.Roles {
		if !slices.Contains(allRoles, r) {
			return fmt.Errorf("-roles: unknown role %q (known: %s)", r, strings.Join(allRoles, ", "))
		}
	}
	cfg.Out = stdout
	if cfg.DataDir == "" {
		if !cfg.Dev {
			return errors.New("agent: -data-dir is required (or run with -dev)")
		}
		dir, err := os.MkdirTemp("", "ferry-dev-")
		if err != nil {
			return err
		}
		cfg.DataDir = dir
	}
	return runAgent(ctx, cfg, nil)
}

// agent is a running composition of every part. Fields are set by startAgent
// and read-only afterwards.
type agent struct {
	cfg        agentConfig
	log        *slog.Logger
	eng        *engine.Engine
	reg        *prometheus.Registry
	state      *migrate.State
	store      *migratestore.Store
	authority  *legacy.Authority
	tokenKey   ed25519.PrivateKey
	tokens     tokenIssuer // signs every token with tokenKey
	adminToken string
	snHost     host.Host
	snGater    *legacy.Gater       // nil without the supernode role
	snLimiter  *legacy.PeerLimiter // nil without the supernode role
	brLimiter  *legacy.PeerLimiter // nil without the bridge role or with -bridge-peer-rate 0
	brHost     host.Host
	netStats   *legacy.NetStats // overlay hosts' paths, relay circuits, hole punches
	supernode  *legacy.Supernode
	// revocations is the gateway's record of the legacy revocations it
	// made (nil without the supernode role): given to the supernode again
	// at every start, since its own list lives in memory.
	revocations *migratestore.Revocations
	cloud       *cloud.Service
	bridge      *bridge.Bridge
	shadowGate  shadowGate // the campaign gates' view of the bridge's shadow compare
	devices     *deviceRecorder
	control     *campaignControl
	versions    *versionControl
	cloudLn     net.Listener
	adminLn     net.Listener
	cloudSrv    *http.Server
	adminSrv    *http.Server

	// Version plane (versions_gate.go, versions_bridge.go).
	censusGate   censusGate       // the device gates' view of the device census
	bridgeAdmits bridgeAdmissions // the bridge's version decisions per device
}

// runAgent starts the agent, calls ready (if not nil) once everything is
// listening, and stops it cleanly when ctx ends or a part fails.
func runAgent(ctx context.Context, cfg agentConfig, ready func(*agent)) error {
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = defaultStopTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &agent{cfg: cfg, log: cfg.Logger.With("component", "agent")}
	defer a.closeResources()

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, gctx := errgroup.WithContext(runCtx)
	if err := a.start(ctx, g, gctx); err != nil {
		// Cancelling the context does not stop http.Server.Serve: shut the
		// servers that already serve down before waiting for the parts.
		stopCtx, stopCancel := context.WithTimeout(context.Background(), cfg.StopTimeout)
		defer stopCancel()
		a.shutdownServers(stopCtx)
		cancel()
		g.Wait()
		return err
	}
	a.printBanner()
	if ready != nil {
		ready(a)
	}

	select {
	case <-ctx.Done():
		a.log.Info("stopping", "deadline", cfg.StopTimeout)
	case <-gctx.Done():
		a.log.Error("a part stopped; stopping the agent")
	}
	stopCtx, stopCancel := context.WithTimeout(context.Background(), cfg.StopTimeout)
	defer stopCancel()
	a.shutdownServers(stopCtx)
	cancel()
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return err
		}
	case <-stopCtx.Done():
		return fmt.Errorf("agent: parts did not stop within %s", cfg.StopTimeout)
	}
	a.log.Info("stopped")
	return nil
}

// start brings the parts up in dependency order. Long-running parts join g.
func (a *agent) start(ctx context.Context, g *errgroup.Group, gctx context.Context) error {
	cfg := a.cfg
	dir := cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	var err error
	if a.eng, err = engine.Start(engine.Config{DataDir: dir, URL: cfg.NatsURL, Listen: cfg.NatsListen, Name: "ferry-agent", Logger: cfg.Logger}); err != nil {
		return err
	}
	if a.authority, err = legacy.LoadOrCreateAuthority(filepath.Join(dir, "authority.key")); err != nil {
		return fmt.Errorf("authority: %w", err)
	}
	if a.tokenKey, err = loadSigningKey(filepath.Join(dir, "token.key")); err != nil {
		return err
	}
	a.tokens = tokenIssuer{key: a.tokenKey, issuer: a.cfg.TokenIssuer, audience: a.cfg.TokenAudience}
	if err := a.tokens.policy(cloudwire.RoleUser).Validate(); err != nil {
		return fmt.Errorf("-token-issuer, -token-audience: %w", err)
	}
	if a.adminToken, err = a.loadAdminToken(filepath.Join(dir, "admin-token")); err != nil {
		return err
	}

	a.reg = newRegistry()
	a.netStats = legacy.NewNetStats()
	if a.state, err = migrate.NewState(); err != nil {
		return err
	}
	if a.store, err = migratestore.New(ctx, a.eng.JS, a.state, migratestore.Config{Replicas: cfg.NatsReplicas, Logger: cfg.Logger, Bulk: cfg.GC.bulkHook()}); err != nil {
		return err
	}
	g.Go(func() error { return a.store.Run(gctx) })
	select {
	case <-a.store.Ready():
	case <-gctx.Done():
		return errors.New("migration store stopped before it was ready")
	case <-ctx.Done():
		return ctx.Err()
	}
	if a.control, err = a.startCampaigns(ctx); err != nil {
		return err
	}
	g.Go(func() error { return a.control.driver.Run(gctx) })
	if a.versions, err = a.startVersions(ctx); err != nil {
		return err
	}
	g.Go(func() error { return a.runVersionMetrics(gctx) })
	if a.devices, err = newDeviceRecorder(ctx, a.eng.JS, cfg.NatsReplicas, a.store, cfg.CensusMax, cfg.Logger, a.reg); err != nil {
		return err
	}
	a.devices.legacyProtocol = a.legacyProtocol
	a.censusGate.attach(a.devices.census)
	g.Go(func() error { return a.devices.run(gctx) })

	if a.has(roleSupernode) {
		if err := a.startSupernode(g, gctx); err != nil {
			return err
		}
	}
	if a.has(roleCloud) {
		if err := a.startCloud(ctx, g, gctx); err != nil {
			return err
		}
	}
	if a.has(roleBridge) {
		if err := a.startBridge(ctx, g, gctx); err != nil {
			return err
		}
	}

	// The admin API, /metrics and /healthz on -admin-listen, in every agent.
	registerAgentMetrics(a.reg, a.state, a.snHost)
	registerEngineMetrics(a.reg, a.eng)
	if a.supernode != nil {
		a.reg.MustRegister(directoryCollector{sn: a.supernode})
	}
	if a.snHost != nil || a.brHost != nil {
		registerNetMetrics(a.reg, a.netStats)
	}
	a.registerOverlayMetrics(a.reg)
	if a.adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	a.adminSrv = newHTTPServer(a.adminHandler(), cfg.Logger)
	a.adminSrv.ReadTimeout = adminReadTimeout
	g.Go(func() error { return serve(a.adminSrv, a.adminLn) })
	return nil
}

// startSupernode runs the legacy overlay's supernode on -legacy-listen, with
// the abuse limits (a per-peer directory limiter that cuts a flooding peer
// off at the connection gater, a per-peer stream limit) and replication to
// the supernodes of -supernode-peers.
func (a *agent) startSupernode(g *errgroup.Group, gctx context.Context) error {
	key, err := loadPeerKey(filepath.Join(a.cfg.DataDir, "supernode.key"))
	if err != nil {
		return err
	}
	peers, err := parsePeers("-supernode-peers", a.cfg.SupernodePeers)
	if err != nil {
		return err
	}
	exempt, err := a.limitExempt(peers)
	if err != nil {
		return err
	}
	// The relay serves our bridge and peer supernodes, and the devices
	// registered here (legacy.RelayAccess).
	relayAccess := legacy.NewRelayAccess(slices.Collect(maps.Keys(exempt))...)
	a.snGater = legacy.NewGater(0)
	if a.snLimiter, err = legacy.NewPeerLimiter(legacy.RateLimit{
		Rate:  legacyDirRate,
		Burst: legacyDirBurst,
		OnCut: func(p peer.ID) {
			if _, ok := exempt[p]; ok {
				a.log.Warn("own bridge or peer supernode over the directory limit; not cut", "peer", p)
				return
			}
			a.log.Info("peer cut off for flooding the directory", "peer", p)
			a.snGater.Cut(p)
		},
	}); err != nil {
		return err
	}
	if a.snHost, err = legacy.NewHost(legacy.HostConfig{
		ListenAddrs:       []string{a.cfg.LegacyListen},
		PrivKey:           key,
		MaxConns:          legacyMaxConns,
		MaxStreamsPerPeer: legacyMaxStreamsPerPeer,
		Gater:             a.snGater,
		Registerer:        a.reg,
		Relay:             &legacy.RelayConfig{Access: relayAccess}, // raised limits: see legacy.DefaultRelayDuration
		Stats:             a.netStats,
	}); err != nil {
		return fmt.Errorf("supernode host on %s: %w", a.cfg.LegacyListen, err)
	}
	var cert *legacywire.Certificate
	if len(peers) > 0 {
		c, err := a.authority.Certify(a.snHost.ID(), "supernode", "supernode", version, []string{legacywire.CapSupernode}, supernodeCertTTL)
		if err != nil {
			return fmt.Errorf("supernode certificate: %w", err)
		}
		cert = &c
	}
	if a.supernode, err = legacy.NewSupernode(a.snHost, legacy.SupernodeConfig{
		Authority:  a.authority.PublicKey(),
		Logger:     a.cfg.Logger,
		OnRegister: a.devices.fromLegacy,
		Admit:      a.admitLegacy,
		Limiter:    a.snLimiter,
		Peers:      peers,
		Cert:       cert,
	}); err != nil {
		return err
	}
	relayAccess.UseDevices(a.supernode)
	if err := a.restoreRevocations(gctx); err != nil {
		return err
	}
	g.Go(func() error { return a.supernode.Run(gctx) })
	return nil
}

// registerOverlayMetrics exports the supernode's abuse and replication
// counters (no-op without the supernode role). They are read at scrape
// time from the parts' own atomic counters.
func (a *agent) registerOverlayMetrics(reg prometheus.Registerer) {
	if a.supernode == nil {
		return
	}
	counter := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	reg.MustRegister(
		counter("gateway_legacy_directory_rate_limited_total",
			"Directory requests the supernode refused because their peer was over its per-peer rate.",
			func() int64 { r, _ := a.snLimiter.Stats(); return r }),
		counter("gateway_legacy_peers_cut_total",
			"Times an overlay peer was cut off (blocked at the connection gater) for flooding the supernode.",
			a.snGater.Cuts),
		counter("gateway_legacy_replication_pushed_total",
			"Directory changes (registrations, routes, revocations) a peer supernode accepted from this one.",
			func() int64 { p, _ := a.supernode.ReplicationStats(); return p }),
		counter("gateway_legacy_replication_dropped_total",
			"Directory changes this supernode gave up replicating (queue full, attempts exhausted or refused).",
			func() int64 { _, d := a.supernode.ReplicationStats(); return d }),
		counter("gateway_legacy_offline_expired_total",
			"Messages the supernode's offline store dropped unread (expired, or overflowed after a failed hand-over); each is reported to its sender.",
			func() int64 { _, e := a.supernode.OfflineStats(); return e }),
		counter("gateway_legacy_offline_undeliverable_reported_total",
			"Undeliverable reports (a sender's message dropped unread) the supernode handed to a device of the sender.",
			func() int64 { _, r := a.supernode.UndeliverableStats(); return r }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gateway_legacy_limiter_tracked_peers",
			Help: "Peers the supernode's directory limiter tracks (bounded by legacy.DefaultRateLimitPeers).",
		}, func() float64 { return float64(a.snLimiter.Tracked()) }),
	)
}

// limitExempt is the set of peers the supernode's limiter never cuts: the
// peer supernodes and the bridge of this data directory (its key is shared
// with a bridge-only agent on the same directory, see README).
func (a *agent) limitExempt(peers []peer.AddrInfo) (map[peer.ID]struct{}, error) {
	key, err := loadPeerKey(filepath.Join(a.cfg.DataDir, "bridge.key"))
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("bridge peer id: %w", err)
	}
	out := map[peer.ID]struct{}{id: {}}
	for _, p := range peers {
		out[p.ID] = struct{}{}
	}
	return out, nil
}

// bridgeRelayAccess is who may use the bridge's relay: the supernode sn
// and, when this agent runs the supernode, the devices registered there.
func (a *agent) bridgeRelayAccess(sn peer.AddrInfo) *legacy.RelayAccess {
	access := legacy.NewRelayAccess(sn.ID)
	if a.supernode != nil {
		access.UseDevices(a.supernode)
	}
	return access
}

// parsePeers parses multiaddrs with /p2p/ID, one peer each.
func parsePeers(flagName string, addrs []string) ([]peer.AddrInfo, error) {
	var out []peer.AddrInfo
	for _, s := range addrs {
		info, err := peer.AddrInfoFromString(s)
		if err != nil {
			return nil, fmt.Errorf("agent: %s %q: %w", flagName, s, err)
		}
		out = append(out, *info)
	}
	return out, nil
}

// startCloud runs the cloud service on -listen.
func (a *agent) startCloud(ctx context.Context, g *errgroup.Group, gctx context.Context) error {
	var err error
	if a.cloud, err = cloud.New(ctx, cloud.Config{
		JS:             a.eng.JS,
		Replicas:       a.cfg.NatsReplicas,
		TokenKey:       a.tokenKey.Public().(ed25519.PublicKey),
		TokenIssuer:    a.cfg.TokenIssuer,
		TokenAudience:  a.cfg.TokenAudience,
		AllowedOrigins: a.cfg.AllowedOrigins,
		Admit:          a.admitCloudDevice,
		ActFor:         a.bridgeMayActFor,
		ActForDevice:   a.bridgeMayActForDevice,
		OnHello:        a.devices.fromCloud,
		Registerer:     a.reg,
		Logger:         a.cfg.Logger,
		Retention:      a.cfg.CloudRetention,
		MaxHandshakes:  a.cfg.CloudMaxHandshakes,
		MaxSessions:    a.cfg.CloudMaxSessions,
		RingDelay:      a.cfg.CloudRingDelay,
		NodeLease:      a.cfg.CloudNodeLease,
		Files:          a.cfg.CloudFiles,
	}); err != nil {
		return err
	}
	a.cloud.SetClientPolicy(a.cloudClientPolicy)
	// A move between the overlay and the cloud as inbound home gets a
	// system note in each of the user's conversations, once per
	// transition (the note's id is derived from its op id). The bridge
	// carries a legacy member's copy to their legacy devices as a message
	// from ferry-notices (bridge/notes.go).
	a.state.OnChange(func(prev *migrate.User, cur migrate.User) {
		if prev != nil && prev.CloudHome() != cur.CloudHome() && cur.OpID != "" {
			a.cloud.NotePhaseMove(cur.ID, cur.OpID, cur.CloudHome())
		}
	})
	g.Go(func() error { return a.cloud.Run(gctx) })
	if a.cloudLn, err = net.Listen("tcp", a.cfg.Listen); err != nil {
		return fmt.Errorf("cloud listener: %w", err)
	}
	a.cloudSrv = newHTTPServer(a.cloud.Handler(), a.cfg.Logger)
	g.Go(func() error { return serve(a.cloudSrv, a.cloudLn) })
	return nil
}

// startBridge runs the bridge: its own overlay peer on -bridge-listen and a
// link to the cloud service over the WebSocket protocol, this agent's or the
// one at -cloud-url.
func (a *agent) startBridge(ctx context.Context, g *errgroup.Group, gctx context.Context) error {
	sn, err := a.supernodeInfo()
	if err != nil {
		return err
	}
	cloudURL := a.cloudURL()
	if cloudURL == "" {
		return errors.New("agent: a bridge without the cloud role needs -cloud-url")
	}
	key, err := loadPeerKey(filepath.Join(a.cfg.DataDir, "bridge.key"))
	if err != nil {
		return err
	}
	if a.brHost, err = legacy.NewHost(legacy.HostConfig{
		ListenAddrs:       []string{a.cfg.BridgeListen},
		PrivKey:           key,
		MaxConns:          legacyMaxConns,
		MaxStreamsPerPeer: legacyMaxStreamsPerPeer,
		// The bridge relays too, and dials devices behind NATs through
		// relays, with hole punching.
		Relay:       &legacy.RelayConfig{Access: a.bridgeRelayAccess(sn)},
		RelayClient: true,
		Registerer:  a.reg,
		Stats:       a.netStats,
	}); err != nil {
		return fmt.Errorf("bridge host on %s: %w", a.cfg.BridgeListen, err)
	}
	fallbacks, err := parsePeers("-supernode-fallbacks", a.cfg.SupernodeFallbacks)
	if err != nil {
		return err
	}
	token, err := a.tokens.issue(bridge.User, cloudwire.RoleBridge, bridgeTokenTTL)
	if err != nil {
		return err
	}
	if a.cfg.BridgePeerRate < 0 {
		return errors.New("agent: negative -bridge-peer-rate")
	}
	if a.cfg.BridgePeerRate > 0 {
		// Refusals are counted; a peer that keeps flooding is only logged
		// (the bridge host has no gater of its own: its supernode cuts).
		if a.brLimiter, err = legacy.NewPeerLimiter(legacy.RateLimit{
			Rate: a.cfg.BridgePeerRate, Burst: int(2 * a.cfg.BridgePeerRate),
			OnCut: func(p peer.ID) { a.log.Info("legacy peer keeps flooding the bridge", "peer", p) },
		}); err != nil {
			return err
		}
	}
	a.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "gateway_bridge_rate_limited_total",
		Help: "Chat streams and frames the bridge refused (rate_limited) because their legacy peer was over -bridge-peer-rate.",
	}, func() float64 {
		if a.brLimiter == nil {
			return 0
		}
		r, _ := a.brLimiter.Stats()
		return float64(r)
	}))
	if a.bridge, err = bridge.New(ctx, bridge.Config{
		Host:               a.brHost,
		Authority:          a.authority,
		Supernode:          sn,
		SupernodeFallbacks: fallbacks,
		State:              a.state,
		JS:                 a.eng.JS,
		CloudURL:           cloudURL,
		CloudToken:         token,
		ClientVersion:      version,
		Replicas:           a.cfg.NatsReplicas,
		OutboxTTL:          a.cfg.BridgeOutboxTTL,
		Links:              a.cfg.BridgeLinks,
		RingDelay:          a.cfg.CloudRingDelay,
		Admit:              a.admitBridged,
		ChatLimiter:        a.brLimiter,
		Registerer:         a.reg,
		Logger:             a.cfg.Logger,
	}); err != nil {
		return err
	}
	a.shadowGate.attach(a.bridge)
	g.Go(func() error { return a.bridge.Run(gctx) })
	return nil
}

// Timeouts of the agent's HTTP servers besides readHeaderTimeout.
const (
	// adminReadTimeout bounds reading a whole admin request, body
	// included (at most maxAdminBody), so that a client trickling a body
	// cannot hold a handler forever. The cloud listener has none: its
	// requests have no body, and the WebSocket library clears deadlines
	// after the upgrade anyway.
	adminReadTimeout = 30 * time.Second
	// idleTimeout closes keep-alive connections that send no next
	// request; without it an idle connection is held forever.
	idleTimeout = 2 * time.Minute
)

// newHTTPServer is every HTTP server of the agent: a slow or idle client
// cannot hold a connection forever (slowloris), and the server's own errors
// go to the log.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// shutdownServers closes the WebSockets ourselves (http.Server.Shutdown does
// not) with "going away", then stops both HTTP servers.
func (a *agent) shutdownServers(ctx context.Context) {
	if a.cloud != nil {
		if err := a.cloud.Shutdown(ctx); err != nil {
			a.log.Warn("cloud shutdown", "err", err)
		}
	}
	for _, srv := range []*http.Server{a.cloudSrv, a.adminSrv} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			a.log.Warn("http shutdown", "err", err)
			srv.Close()
		}
	}
}

// closeResources releases what start acquired, in reverse order. It runs after
// every goroutine of the agent has returned.
func (a *agent) closeResources() {
	for _, ln := range []net.Listener{a.cloudLn, a.adminLn} {
		if ln != nil {
			ln.Close()
		}
	}
	for _, h := range []host.Host{a.brHost, a.snHost} {
		if h != nil {
			if err := h.Close(); err != nil {
				a.log.Warn("close overlay host", "err", err)
			}
		}
	}
	if a.eng != nil {
		if err := a.eng.Close(); err != nil {
			a.log.Warn("close engine", "err", err)
		}
	}
}

// supernodeInfo is this agent's supernode, or the one at -supernode.
func (a *agent) supernodeInfo() (peer.AddrInfo, error) {
	if a.snHost != nil {
		return peer.AddrInfo{ID: a.snHost.ID(), Addrs: a.snHost.Addrs()}, nil
	}
	if a.cfg.Supernode == "" {
		return peer.AddrInfo{}, errors.New("agent: no supernode: run the supernode role or set -supernode")
	}
	info, err := peer.AddrInfoFromString(a.cfg.Supernode)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("agent: -supernode %q: %w", a.cfg.Supernode, err)
	}
	return *info, nil
}

// admitCloudDevice lets a user's own cloud devices in only once the cloud is
// the user's inbound home (DESIGN.md, phases table).
func (a *agent) admitCloudDevice(_ context.Context, user string) error {
	u, ok := a.state.Get(user)
	if !ok {
		return fmt.Errorf("not yet: %s is in phase %s; the cloud opens at phase %s", user, migrate.PhaseLegacy, migrate.PhaseCloud)
	}
	if !u.CloudHome() {
		return fmt.Errorf("not yet: %s is in phase %s; the cloud opens at phase %s", user, u.Phase, migrate.PhaseCloud)
	}
	return nil
}

// bridgeMayActFor lets the bridge speak in the cloud only for users whose
// inbound home is still the overlay.
func (a *agent) bridgeMayActFor(_ context.Context, user string) error {
	if err := migrate.CheckUserID(user); err != nil {
		return err
	}
	if u, ok := a.state.Get(user); ok && u.CloudHome() {
		return fmt.Errorf("%s is in phase %s: the bridge does not act for cloud users", user, u.Phase)
	}
	return nil
}

// bridgeMayActForDevice lets the bridge send as a cloud-home user from one
// of their legacy devices (cloudwire.Send.Device): only while the user's
// home is the cloud but not for good, and only for a legacy device on
// their record. The bridge has checked that the sending peer's
// certificate names that user and device (bridge.CheckOwnDevice on its
// side too).
func (a *agent) bridgeMayActForDevice(_ context.Context, user, device string) error {
	if err := migrate.CheckUserID(user); err != nil {
		return err
	}
	u, ok := a.state.Get(user)
	if !ok {
		return fmt.Errorf("%s is unknown: the bridge acts for cloud users' devices only", user)
	}
	return bridge.CheckOwnDevice(u, device)
}

// loadAdminToken returns the admin token in path if it is still valid for the
// agent's key, or issues and saves a new one.
func (a *agent) loadAdminToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if a.tokens.verifyAdmin(tok) == nil {
			return tok, nil
		}
	}
	tok, err := a.tokens.issue("admin", cloudwire.RoleAdmin, adminTokenTTL)
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, []byte(tok+"\n")); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

func (a *agent) adminURL() string { return "http://" + a.adminLn.Addr().String() }

// cloudURL is this agent's cloud endpoint, or the one at -cloud-url.
func (a *agent) cloudURL() string {
	if a.cloudLn != nil {
		return "ws://" + a.cloudLn.Addr().String() + "/v1/ws"
	}
	return a.cfg.CloudURL
}

// Roles an agent can run.
const (
	roleSupernode = "supernode"
	roleCloud     = "cloud"
	roleBridge    = "bridge"
)

var allRoles = []string{roleSupernode, roleCloud, roleBridge}

func (a *agent) has(role string) bool {
	return len(a.cfg.Roles) == 0 || slices.Contains(a.cfg.Roles, role)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

func (a *agent) printBanner() {
	out := a.cfg.Out
	if out == nil {
		return
	}
	mode := "embedded NATS JetStream in " + filepath.Join(a.cfg.DataDir, "jetstream")
	if a.cfg.NatsURL != "" {
		mode = "external NATS at " + a.cfg.NatsURL
	} else if u := a.eng.ClientURL(); u != "" {
		mode += ", served at " + u
	}
	fmt.Fprintf(out, "Ferry agent %s is running.\n", version)
	if a.cloudLn != nil {
		fmt.Fprintf(out, "  cloud      %s   (health: http://%s/healthz)\n", a.cloudURL(), a.cloudLn.Addr())
	}
	fmt.Fprintf(out, "  admin      %s   (/v1/admin/..., /metrics, /healthz)\n", a.adminURL())
	if a.snHost != nil {
		fmt.Fprintf(out, "  supernode  %s/p2p/%s\n", firstAddr(a.snHost), a.snHost.ID())
	}
	if a.brHost != nil {
		fmt.Fprintf(out, "  bridge     %s/p2p/%s\n", firstAddr(a.brHost), a.brHost.ID())
	}
	fmt.Fprintf(out, `  engine     %s
  data dir   %s
  admin token in %s

Next, in another shell:
  export FERRY_ADDR=%s
  export FERRY_TOKEN=%s
  go run ./gateway legacy sim -users 20 -duration 5m
  go run ./gateway users list
  go run ./gateway users set-phase sim-1 shadow -reason tour
  curl -s $FERRY_ADDR/metrics | grep ^gateway_
`, mode, a.cfg.DataDir, filepath.Join(a.cfg.DataDir, "admin-token"), a.adminURL(), a.bannerToken())
}

// bannerToken is the admin token itself for a dev agent, and a command that
// reads it otherwise: a production agent does not print secrets.
func (a *agent) bannerToken() string {
	if a.cfg.Dev {
		return a.adminToken
	}
	return "$(cat " + filepath.Join(a.cfg.DataDir, "admin-token") + ")"
}

func firstAddr(h host.Host) string {
	if addrs := h.Addrs(); len(addrs) > 0 {
		return addrs[0].String()
	}
	return "(no address)"
}
