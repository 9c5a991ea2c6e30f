package legacy

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// simFiles is the simulator's file traffic: the one file simulated v3
// devices offer, and the bounded transfers their recipients run.
type simFiles struct {
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger
	stats  *simCounters
	dir    string
	path   string        // the offered file, SimFileSize random bytes
	slots  chan struct{} // simAcceptParallelism transfers at once
	wg     sync.WaitGroup
}

// newSimFiles writes the file to offer in a fresh temporary directory,
// removed by stop.
func newSimFiles(ctx context.Context, log *slog.Logger, stats *simCounters) (*simFiles, error) {
	dir, err := os.MkdirTemp("", "ferry-sim-files-")
	if err != nil {
		return nil, fmt.Errorf("legacy: sim files: %w", err)
	}
	data := make([]byte, SimFileSize)
	_, _ = rand.Read(data)
	path := filepath.Join(dir, "sim-offer.bin")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("legacy: sim files: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	return &simFiles{ctx: ctx, cancel: cancel, log: log, stats: stats, dir: dir, path: path,
		slots: make(chan struct{}, simAcceptParallelism)}, nil
}

// accept has d take the offered file o in the background, when a slot is
// free; otherwise it declines it (counted as failed).
func (f *simFiles) accept(d *Device, o legacywire.FileOffer) {
	if d == nil {
		return
	}
	select {
	case f.slots <- struct{}{}:
	default:
		f.stats.filesFailed.Add(1)
		f.wg.Go(func() { _ = d.DeclineFile(f.ctx, o.ID, "busy") })
		return
	}
	f.wg.Go(func() {
		defer func() { <-f.slots }()
		dst, err := os.CreateTemp(f.dir, "recv-*")
		if err == nil {
			_ = dst.Close()
			err = d.AcceptFile(f.ctx, o.ID, dst.Name())
			_ = os.Remove(dst.Name())
			_ = os.Remove(dst.Name() + ".part")
		}
		if err != nil {
			f.stats.filesFailed.Add(1)
			if f.ctx.Err() == nil {
				f.log.Warn("simulated file transfer failed", "from", o.From, "to", o.To, "err", err)
			}
			return
		}
		f.stats.filesReceived.Add(1)
	})
}

// stop ends the transfers in flight, waits for them and removes the files.
func (f *simFiles) stop() {
	f.cancel()
	f.wg.Wait()
	_ = os.RemoveAll(f.dir)
}

// simChatVersions spreads chat versions over n devices: v1Percent of them
// speak v1 only, v3Percent (of all) speak v3, spread evenly over the
// others, and the rest v2.
func simChatVersions(n, v1Percent, v3Percent int) []int {
	versions := make([]int, n)
	for i := range n {
		versions[i] = 2
		if (i*v1Percent)/100 != ((i+1)*v1Percent)/100 {
			versions[i] = 1
		}
	}
	if v1Percent == 100 || v3Percent == 0 {
		return versions
	}
	// Among the rest, v3Percent/(100-v1Percent) of them, spread evenly.
	j := 0
	for i := range n {
		if versions[i] == 1 {
			continue
		}
		if (j*v3Percent)/(100-v1Percent) != ((j+1)*v3Percent)/(100-v1Percent) {
			versions[i] = 3
		}
		j++
	}
	return versions
}
