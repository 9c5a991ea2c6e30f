package legacy

import (
	"math"
	"sync"
	"time"
)

// simLatency is a bounded histogram of send latencies: logarithmic buckets
// 5% wide from 10 µs to about 100 s, so a quantile is off by at most 5%
// however long the simulation runs.
type simLatency struct {
	mu      sync.Mutex
	buckets [simLatencyBuckets]int64
	n       int64
}

const (
	simLatencyMin     = 10 * time.Microsecond
	simLatencyGrowth  = 1.05
	simLatencyBuckets = 331 // simLatencyMin·1.05^330 ≈ 100 s
)

// bucketOf returns the bucket of d: the first whose upper bound is at least d.
func bucketOf(d time.Duration) int {
	if d <= simLatencyMin {
		return 0
	}
	i := int(math.Ceil(math.Log(float64(d)/float64(simLatencyMin)) / math.Log(simLatencyGrowth)))
	return min(i, simLatencyBuckets-1)
}

// upper returns bucket i's upper bound.
func upper(i int) time.Duration {
	return time.Duration(float64(simLatencyMin) * math.Pow(simLatencyGrowth, float64(i)))
}

func (l *simLatency) add(d time.Duration) {
	i := bucketOf(d)
	l.mu.Lock()
	l.buckets[i]++
	l.n++
	l.mu.Unlock()
}

// quantile returns the upper bound of the bucket holding quantile q
// (0 < q ≤ 1), 0 when empty.
func (l *simLatency) quantile(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == 0 {
		return 0
	}
	rank := int64(math.Ceil(q * float64(l.n)))
	var seen int64
	for i, c := range l.buckets {
		if seen += c; seen >= rank {
			return upper(i)
		}
	}
	return upper(simLatencyBuckets - 1)
}
