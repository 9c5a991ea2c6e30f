// Package engine starts, or connects to, the NATS JetStream engine that holds
// everything Ferry must keep across restarts: migration records, the cloud
// conversation log, the bridge's delivery ledger.
//
// The embedded default runs an in-process nats-server with JetStream on the
// agent's data directory and connects to it without a TCP port. With a URL it
// connects to an external server or cluster instead; callers see the same
// *nats.Conn and jetstream.JetStream in both modes, so there is one code path.
//
// Durability: an acknowledged publish has been written to the store's files
// before the ack, so it survives kill -9 of the agent (the kernel holds the
// data). Files are fsynced every SyncInterval (default one second), which
// bounds what a power loss can take; SyncAlways fsyncs every write, at the
// cost `gateway bench floor` measures on the machine at hand (it prints the
// fdatasync writes/s).
//
// A full disk: JetStream answers nothing to a publish it cannot write, so
// the publisher times out and retries, and the stream then refuses every
// later write, even after space returns. The embedded engine watches for
// that (see storage.go): it logs the write error once, reports it through
// StorageErr (the agent's /healthz answers 503 with it), and once a probe
// write shows space again it restarts JetStream, which reloads every
// stream from its files, so writes resume without an operator.
//
// It imports no Ferry package.
package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultSyncInterval is how often the embedded server fsyncs its stores.
const DefaultSyncInterval = time.Second

// startTimeout bounds how long the embedded server may take to accept clients.
const startTimeout = 30 * time.Second

// Config says where the engine lives. The zero value is not usable: set
// DataDir for the embedded server or URL for an external one.
type Config struct {
	// DataDir is the embedded server's directory; JetStream keeps its files
	// under DataDir/jetstream. Ignored when URL is set.
	DataDir string
	// URL selects an external NATS server or cluster (nats://host:port,...).
	URL string
	// SyncInterval overrides DefaultSyncInterval for the embedded server.
	SyncInterval time.Duration
	// SyncAlways fsyncs every write of the embedded server.
	SyncAlways bool
	// MaxStore caps the embedded JetStream file store, in bytes (0: no cap).
	MaxStore int64
	// Listen, when set, also serves the embedded server on host:port, so
	// that processes other than the agent (a separate bridge) can use it.
	// The agent itself still connects in-process.
	Listen string
	// StorageCheck is how often the embedded engine checks its streams
	// for write errors (a full disk) and, while one is reported, whether
	// space has returned (default DefaultStorageCheck).
	StorageCheck time.Duration
	// Name is the client connection name seen by the server.
	Name   string
	Logger *slog.Logger
}

// Validate reports a configuration that cannot start.
func (c Config) Validate() error {
	if c.URL == "" && c.DataDir == "" {
		return errors.New("engine: set DataDir (embedded) or URL (external)")
	}
	if c.SyncInterval < 0 {
		return errors.New("engine: negative SyncInterval")
	}
	if c.StorageCheck < 0 {
		return errors.New("engine: negative StorageCheck")
	}
	return nil
}

// Engine is a connected NATS client with JetStream, plus the embedded server
// when there is one.
type Engine struct {
	Conn *nats.Conn
	JS   jetstream.JetStream

	srv       *server.Server
	syncEvery time.Duration // the embedded server's fsync interval
	storage   *storageWatch // nil for an external engine
	log       *slog.Logger
	closeOnce sync.Once
	closeErr  error
}

// Start starts the embedded server (when cfg.URL is empty) and connects.
func Start(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "engine")
	name := cfg.Name
	if name == "" {
		name = "ferry"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	e := &Engine{log: log}
	url := cfg.URL
	if url == "" {
		e.syncEvery = cfg.SyncInterval
		if e.syncEvery == 0 {
			e.syncEvery = DefaultSyncInterval
		}
		srv, jsc, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		e.srv = srv
		e.storage = newStorageWatch(srv, jsc, cfg.StorageCheck, log)
		opts = append(opts, nats.InProcessServer(srv))
		url = "in-process"
		log.Info("embedded nats started", "store", filepath.Join(cfg.DataDir, "jetstream"))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		e.shutdownServer()
		return nil, fmt.Errorf("engine: connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		e.shutdownServer()
		return nil, fmt.Errorf("engine: jetstream: %w", err)
	}
	e.Conn, e.JS = nc, js
	if e.storage != nil {
		go e.storage.run()
	}
	return e, nil
}

// startEmbedded starts the in-process server and returns it with the
// JetStream configuration it started with (the storage watch re-enables
// JetStream with the same one).
func startEmbedded(cfg Config) (*server.Server, server.JetStreamConfig, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, server.JetStreamConfig{}, fmt.Errorf("engine: data dir: %w", err)
	}
	interval := cfg.SyncInterval
	if interval == 0 {
		interval = DefaultSyncInterval
	}
	sopts := &server.Options{
		ServerName:         "ferry-embedded",
		DontListen:         true,
		JetStream:          true,
		StoreDir:           filepath.Join(cfg.DataDir, "jetstream"),
		SyncInterval:       interval,
		SyncAlways:         cfg.SyncAlways,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  cfg.MaxStore,
		NoSigs:             true,
		NoLog:              true,
		MaxPayload:         8 << 20,
	}
	if cfg.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, server.JetStreamConfig{}, fmt.Errorf("engine: listen %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, server.JetStreamConfig{}, fmt.Errorf("engine: listen port %q: %w", port, err)
		}
		sopts.DontListen, sopts.Host, sopts.Port = false, host, p
	}
	if sopts.JetStreamMaxStore == 0 {
		sopts.JetStreamMaxStore = -1
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, server.JetStreamConfig{}, fmt.Errorf("engine: new server: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(startTimeout) {
		srv.Shutdown()
		return nil, server.JetStreamConfig{}, errors.New("engine: embedded nats not ready in time")
	}
	// The configuration the server builds from these options when it
	// starts JetStream (server.Start), so a re-enable matches it.
	jsc := server.JetStreamConfig{
		StoreDir:     sopts.StoreDir,
		SyncInterval: sopts.SyncInterval,
		SyncAlways:   sopts.SyncAlways,
		Strict:       !sopts.NoJetStreamStrict,
		MaxMemory:    sopts.JetStreamMaxMemory,
		MaxStore:     sopts.JetStreamMaxStore,
		CompressOK:   true,
	}
	return srv, jsc, nil
}

// ClientURL is where other processes reach the embedded server when it
// listens, and "" otherwise.
func (e *Engine) ClientURL() string {
	if e.srv == nil || e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// Embedded reports whether the engine runs an in-process server.
func (e *Engine) Embedded() bool { return e.srv != nil }

// SyncInterval is how often the embedded server fsyncs its stores (the
// configured value, or DefaultSyncInterval), and zero for an external
// engine, whose servers keep their own setting.
func (e *Engine) SyncInterval() time.Duration {
	if e.srv == nil {
		return 0
	}
	return e.syncEvery
}

// Close drains the connection and stops the embedded server, and returns the
// drain's error. It is idempotent: later calls return the same error.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		if e.storage != nil {
			e.storage.stop()
		}
		if e.Conn != nil {
			if err := e.Conn.Drain(); err != nil {
				e.closeErr = fmt.Errorf("engine: drain: %w", err)
				e.Conn.Close()
			}
			for e.Conn.IsDraining() {
				time.Sleep(5 * time.Millisecond)
			}
		}
		e.shutdownServer()
	})
	return e.closeErr
}

func (e *Engine) shutdownServer() {
	if e.srv == nil {
		return
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
