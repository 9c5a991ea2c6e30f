package legacy

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// TestRunSimStandalone runs a small mixed population on the simulator's
// own overlay (two replicating supernodes) briefly, with churn, calls,
// file offers and progress reports.
func TestRunSimStandalone(t *testing.T) {
	ctx := testCtx(t)
	net, err := StartSimNetwork(ctx, 2, nil)
	if err != nil {
		t.Fatalf("StartSimNetwork: %v", err)
	}
	t.Cleanup(func() {
		if err := net.Close(); err != nil {
			t.Errorf("SimNetwork.Close: %v", err)
		}
	})
	var (
		mu       sync.Mutex
		progress []SimStats
	)
	stats, err := RunSim(ctx, SimConfig{
		Users:         8,
		V1Percent:     25,
		V3Percent:     25,
		FilePercent:   10,
		CallPercent:   30,
		ChurnRate:     4,
		ChurnDowntime: 300 * time.Millisecond,
		Duration:      3 * time.Second,
		Rate:          3,
		Supernodes:    net.Infos,
		Authority:     net.Authority.PublicKey(),
		Certify:       net.Certify,
		Platforms:     SimPlatformMix(DefaultSimPlatformMix),
		Progress:      500 * time.Millisecond,
		OnProgress: func(s SimStats) {
			mu.Lock()
			progress = append(progress, s)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("RunSim: %v", err)
	}
	t.Logf("stats: %+v", stats)
	if stats.Devices != 8 || stats.Delivered == 0 || stats.Received == 0 {
		t.Errorf("stats = %+v, want 8 devices, deliveries and receptions", stats)
	}
	if stats.Sent != stats.Delivered+stats.Stored+stats.Failed {
		t.Errorf("Sent %d != Delivered %d + Stored %d + Failed %d", stats.Sent, stats.Delivered, stats.Stored, stats.Failed)
	}
	if stats.LatencyP50 <= 0 || stats.LatencyP99 < stats.LatencyP50 {
		t.Errorf("latency p50 %v, p99 %v: want 0 < p50 <= p99", stats.LatencyP50, stats.LatencyP99)
	}
	if stats.ChurnLeft == 0 || stats.ChurnReturned == 0 || stats.ChurnReturned > stats.ChurnLeft {
		t.Errorf("churn left %d, returned %d: want both, returned <= left", stats.ChurnLeft, stats.ChurnReturned)
	}
	if stats.CallsPlaced == 0 || stats.CallsConnected+stats.CallsUnanswered != stats.CallsPlaced {
		t.Errorf("calls placed %d, connected %d, unanswered %d: want calls, each counted once",
			stats.CallsPlaced, stats.CallsConnected, stats.CallsUnanswered)
	}
	if stats.CallsConnected == 0 {
		t.Errorf("no call connected: %+v", stats)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(progress) < 3 {
		t.Fatalf("%d progress reports, want one every 500ms and a final one", len(progress))
	}
	if last := progress[len(progress)-1]; last.Sent != stats.Sent || last.Devices != 8 {
		t.Errorf("last progress %+v, want the final counters", last)
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Sent < progress[i-1].Sent || progress[i].Elapsed < progress[i-1].Elapsed {
			t.Errorf("progress went back: %+v then %+v", progress[i-1], progress[i])
		}
	}
	// Both supernodes hold every device (replication): each took a share of
	// the registrations.
	if n := net.Devices(); n < 8 {
		t.Errorf("supernodes hold %d registrations, want every device", n)
	}
}

func TestSimPlatformMix(t *testing.T) {
	got := SimPlatformMix(DefaultSimPlatformMix)
	count := map[string]int{}
	for _, p := range got {
		count[p]++
	}
	if len(got) != 20 || count["windows"] != 6 || count["mac"] != 2 || count["linux"] != 1 || count["android"] != 8 || count["ios"] != 3 {
		t.Errorf("SimPlatformMix(default) = %v (%v), want 20 entries in the 30/10/5/40/15 shares", got, count)
	}
	// Interleaved: the first five entries already hold three platforms.
	if first := slices.Compact(slices.Sorted(slices.Values(got[:5]))); len(first) < 3 {
		t.Errorf("first entries %v: not interleaved", got[:5])
	}
	if got := SimPlatformMix([]SimShare{{"ios", 0}, {"android", 50}}); !slices.Equal(got, []string{"android"}) {
		t.Errorf("SimPlatformMix(ios 0, android 50) = %v, want [android]", got)
	}
	if got := SimPlatformMix(nil); got != nil {
		t.Errorf("SimPlatformMix(nil) = %v, want nil", got)
	}
}

func TestSimLatencyQuantiles(t *testing.T) {
	var l simLatency
	if l.quantile(0.5) != 0 {
		t.Error("empty histogram: quantile not 0")
	}
	for i := 1; i <= 1000; i++ {
		l.add(time.Duration(i) * time.Millisecond)
	}
	within := func(got, want time.Duration) bool {
		return got >= want && float64(got) <= float64(want)*simLatencyGrowth
	}
	if p50 := l.quantile(0.5); !within(p50, 500*time.Millisecond) {
		t.Errorf("p50 = %v, want 500ms within 5%%", p50)
	}
	if p99 := l.quantile(0.99); !within(p99, 990*time.Millisecond) {
		t.Errorf("p99 = %v, want 990ms within 5%%", p99)
	}
	l.add(time.Hour) // beyond the last bucket: counted there
	if got := l.quantile(1); got < 90*time.Second {
		t.Errorf("max = %v, want the last bucket", got)
	}
}
