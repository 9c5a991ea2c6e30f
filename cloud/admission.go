package cloud

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Admission's wait line (Service.admit).
const (
	// handshakeQueueFactor sizes the line of handshakes that may wait for
	// a set-up slot, relative to MaxHandshakes. A waiting handshake holds
	// its connection and a parked goroutine, about 20 KB: 2,048 of them
	// (the default) about 40 MB.
	handshakeQueueFactor = 8
	// handshakeWait bounds one handshake's wait in that line; past it the
	// handshake is shed. Below a client's dial timeout (10 s).
	handshakeWait = 5 * time.Second
	// drainWindow is how often admission measures the rate at which
	// set-up slots free up; a measure older than drainStale is not used.
	drainWindow = 250 * time.Millisecond
	drainStale  = 2 * time.Second
)

// admission bounds the sessions being set up at once (MaxHandshakes) and
// lets a bounded line of further handshakes wait, in arrival order, for a
// slot to free; beyond the line, or after handshakeWait in it, a
// handshake is shed (503).
//
// Shedding alone left the node idle in a reconnect storm: a shed client
// comes back only after its Retry-After (seconds), and meanwhile the
// slots it could have taken free up and stay empty; every shed handshake
// also costs an accept, a request parse and a 503 again on its return. A
// waiting handshake costs a parked goroutine and its connection, and it
// takes the next free slot at once: a freed slot is handed to the first
// in line without being given back.
type admission struct {
	max, maxSessions, maxWaiting int
	welcomed                     *atomic.Int64 // the node's welcomed sessions
	gauge                        prometheus.Gauge

	mu      sync.Mutex
	busy    int             // slots held
	waiting []chan struct{} // in arrival order; closed when a slot is handed over
	// The drain rate: slots freed per second over the last whole
	// drainWindow, measured at rateAt; freed counts since windowAt.
	rate             float64
	rateAt, windowAt time.Time
	freed            int
}

func newAdmission(maxHandshakes, maxSessions int, welcomed *atomic.Int64, gauge prometheus.Gauge) *admission {
	return &admission{
		max: maxHandshakes, maxSessions: maxSessions, maxWaiting: handshakeQueueFactor * maxHandshakes,
		welcomed: welcomed, gauge: gauge,
	}
}

// full reports whether no slot may be taken now; a.mu is held.
func (a *admission) full() bool {
	return a.busy >= a.max || (a.maxSessions > 0 && int64(a.busy)+a.welcomed.Load() >= int64(a.maxSessions))
}

// acquire takes a slot, waiting in line at most wait while gone and
// shutdown stay open; ok is false when the handshake is to be shed. release gives the
// slot back (or hands it to the first in line); it is idempotent.
func (a *admission) acquire(gone, shutdown <-chan struct{}, wait time.Duration) (release func(), ok bool) {
	a.mu.Lock()
	if len(a.waiting) == 0 && !a.full() { // never ahead of those in line
		a.busy++
		a.mu.Unlock()
		a.gauge.Inc()
		return a.releaser(), true
	}
	if len(a.waiting) >= a.maxWaiting || wait <= 0 {
		a.mu.Unlock()
		return nil, false
	}
	granted := make(chan struct{})
	a.waiting = append(a.waiting, granted)
	a.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-granted:
		return a.releaser(), true
	case <-t.C:
	case <-gone:
	case <-shutdown:
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, ch := range a.waiting {
		if ch == granted {
			a.waiting = append(a.waiting[:i], a.waiting[i+1:]...)
			return nil, false
		}
	}
	// Handed a slot while giving up: it is ours.
	return a.releaser(), true
}

// releaser returns the idempotent release of one held slot.
func (a *admission) releaser() func() {
	var once sync.Once
	return func() { once.Do(a.release) }
}

// release hands the slot to the first in line, or gives it back.
func (a *admission) release() {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.freed++
	if d := now.Sub(a.windowAt); d >= drainWindow {
		if d < 2*drainWindow { // a window that saw releases all along
			a.rate, a.rateAt = float64(a.freed)/d.Seconds(), now
		}
		a.freed, a.windowAt = 0, now
	}
	a.busy--
	if len(a.waiting) > 0 && !a.full() {
		a.handOver()
		return
	}
	a.gauge.Dec()
}

// sessionEnded hands slots to the head of the line while there is room,
// called right after a welcomed session ended (the welcomed counter
// dropped). With MaxSessions set, a handshake may wait in line for a
// session to end rather than for a set-up slot; release alone would
// leave it asleep until handshakeWait shed it, with room on the node.
func (a *admission) sessionEnded() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for len(a.waiting) > 0 && !a.full() {
		a.handOver()
		a.gauge.Inc() // a slot taken, not passed on from a releaser
	}
}

// handOver gives a slot to the first in line, counted in busy; a.mu is
// held. The gauge is the caller's: a slot passed from a releaser stays
// counted.
func (a *admission) handOver() {
	a.busy++
	close(a.waiting[0])
	a.waiting[0] = nil
	a.waiting = a.waiting[1:]
}

// retryAfter is the Retry-After, in whole seconds, of a handshake shed
// now: a random second within the time the slots held and the line take
// to free up at the measured rate, at least 1 s and at most limit;
// limit's window when there is no recent measure. Shed clients then come
// back about when the line has room again rather than spread over the
// whole limit.
//
// The clients shed earlier and not yet back are left out on purpose:
// counting them (gateway bench reconnect) made the windows long enough
// that the server idled at the end of a storm while clients waited; a
// client back too early is shed again, at the cost of one refusal.
func (a *admission) retryAfter(limit time.Duration) int {
	window := max(1, int(limit/time.Second))
	a.mu.Lock()
	ahead, rate, fresh := a.busy+len(a.waiting), a.rate, time.Since(a.rateAt) < drainStale
	a.mu.Unlock()
	if fresh && rate > 0 {
		window = min(window, max(1, int(math.Ceil(float64(ahead)/rate))))
	}
	return 1 + rand.IntN(window)
}
