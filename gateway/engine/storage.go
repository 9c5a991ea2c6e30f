package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultStorageCheck is how often the embedded engine looks for a stream
// that cannot write (and, while one cannot, for space to come back).
const DefaultStorageCheck = time.Second

// storageHeadroom is how much a probe file must fit on the store's file
// system before the engine restarts JetStream after a write error, so that
// a restart on a volume that is still nearly full does not fail again at
// the first write. Small enough for a small volume to spare.
const storageHeadroom = 4 << 20

// probeName is the file the space probe writes in the store directory
// (nats-server ignores files it does not know there).
const probeName = ".ferry-space-probe"

// ErrStorage is wrapped by the error StorageErr returns while JetStream
// cannot write to its store (in practice: the disk is full).
var ErrStorage = errors.New("engine: JetStream cannot write to its store")

// StorageErr reports why the embedded JetStream cannot write to its store
// at the moment (it wraps ErrStorage), or nil when it can and for an
// external engine, whose servers report their own health.
func (e *Engine) StorageErr() error {
	if e == nil || e.storage == nil {
		return nil
	}
	return e.storage.failure()
}

// StorageRecoveries is how many times the embedded engine has restarted
// JetStream after a write error, once space had returned.
func (e *Engine) StorageRecoveries() int {
	if e.storage == nil {
		return 0
	}
	e.storage.mu.Lock()
	defer e.storage.mu.Unlock()
	return e.storage.recoveries
}

// storageWatch finds streams that hit a write error, which nats-server
// keeps sticky per stream (every later publish gets no answer), and
// restarts JetStream once a probe write shows that space has returned:
// the restart reloads each stream from its files, which clears the error.
// The NATS server and every client connection stay up meanwhile; JetStream
// requests fail for the moment of the restart, as in a server restart,
// and the clients retry them.
type storageWatch struct {
	srv   *server.Server
	jsc   server.JetStreamConfig
	every time.Duration
	log   *slog.Logger
	quit  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu         sync.Mutex
	err        error // nil while the store takes writes
	recoveries int
}

func newStorageWatch(srv *server.Server, jsc server.JetStreamConfig, every time.Duration, log *slog.Logger) *storageWatch {
	if every == 0 {
		every = DefaultStorageCheck
	}
	return &storageWatch{srv: srv, jsc: jsc, every: every, log: log, quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *storageWatch) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *storageWatch) set(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	if err == nil {
		w.recoveries++
	}
}

// run checks every w.every until stop.
func (w *storageWatch) run() {
	defer close(w.done)
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
			w.check()
		}
	}
}

// stop ends run and waits for it; it is idempotent.
func (w *storageWatch) stop() {
	w.once.Do(func() { close(w.quit) })
	<-w.done
}

// check is one round: find a write error, or, while one is reported, try
// to recover from it.
func (w *storageWatch) check() {
	if w.failure() == nil {
		if reason := w.writeError(); reason != "" {
			w.set(fmt.Errorf("%w: %s", ErrStorage, reason))
			w.log.Error("JetStream cannot write to its store: publishes get no acknowledgement until space returns; the engine restarts JetStream by itself then",
				"store", w.jsc.StoreDir, "err", reason)
		}
		return
	}
	if err := probeSpace(w.jsc.StoreDir, storageHeadroom); err != nil {
		return // still full: the error logged once stands
	}
	w.log.Warn("space returned on the store: restarting JetStream to reload its streams", "store", w.jsc.StoreDir)
	start := time.Now()
	if err := w.restart(); err != nil {
		w.log.Error("JetStream restart after a write error failed; it is retried", "store", w.jsc.StoreDir, "err", err)
		return
	}
	if reason := w.writeError(); reason != "" {
		w.log.Error("JetStream still cannot write after a restart; it is retried", "store", w.jsc.StoreDir, "err", reason)
		return
	}
	w.set(nil)
	w.log.Info("JetStream store writable again: streams reloaded, publishes acknowledged again", "store", w.jsc.StoreDir, "restart", time.Since(start))
}

// writeError returns the server's own report of a stream that hit a write
// error, or "" when no stream has.
func (w *storageWatch) writeError() string {
	h := w.srv.Healthz(&server.HealthzOptions{Details: true})
	if h == nil {
		return ""
	}
	for _, e := range h.Errors {
		if strings.Contains(e.Error, "write error") {
			return e.Error
		}
	}
	return ""
}

// restart stops JetStream (keeping its files) and starts it again with the
// configuration it was started with; a JetStream left stopped by an
// earlier failed attempt is started.
func (w *storageWatch) restart() error {
	if w.srv.JetStreamEnabled() {
		if err := w.srv.ShutdownJetStream(); err != nil {
			return fmt.Errorf("stop jetstream: %w", err)
		}
	}
	jsc := w.jsc // EnableJetStream adjusts the copy it is given
	if err := w.srv.EnableJetStream(&jsc); err != nil {
		return fmt.Errorf("start jetstream: %w", err)
	}
	return nil
}

// probeSpace writes and syncs n bytes in dir and removes them again: it
// succeeds only when the file system can take them.
func probeSpace(dir string, n int) error {
	path := filepath.Join(dir, probeName)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	buf := make([]byte, 64<<10)
	for written := 0; written < n; written += len(buf) {
		if _, err := f.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
