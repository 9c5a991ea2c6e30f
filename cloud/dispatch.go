package cloud

import (
	"sync"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// maxBridgeInFlight bounds the requests a bridge session has read and not
// yet answered. When it is reached the session's reader stops reading
// until one is answered, so a bridge that sends faster than the store
// keeps up is slowed by TCP, not buffered without bound.
const maxBridgeInFlight = 64

// dispatcher runs a bridge session's sends and receipts concurrently,
// ordered per acting user: the requests of one `as` are handled one at a
// time in the order they were read, by a worker that exists only while
// that user has requests waiting; different users' requests run in
// parallel. A bridge carries the traffic of every legacy user on one
// session, and one at a time the session would wait for each store round
// trip in turn.
//
// User sessions have no dispatcher: their requests stay one at a time on
// the reader, and an idle session costs nothing more. A bridge session
// creates its dispatcher at its first send or receipt.
//
// Only the reader goroutine calls dispatch and wait.
type dispatcher struct {
	handle func(cloudwire.Frame)
	// waited is told how long each request waited from being read to
	// being handled: behind its user's earlier requests, then for its
	// worker to run (gateway_cloud_bridge_queue_seconds).
	waited func(time.Duration)
	// closing and finished end a wait for a slot: the session is closing
	// or its connection is gone.
	closing, finished <-chan struct{}

	slots chan struct{}  // one token per request read and not yet answered
	wg    sync.WaitGroup // requests read and not yet answered

	mu sync.Mutex
	// lanes holds, per acting user with a worker, the requests waiting
	// behind the one being handled; a user is in lanes exactly while its
	// worker runs.
	lanes map[string][]request
}

// request is a frame read from the session and when it was dispatched.
type request struct {
	f  cloudwire.Frame
	at time.Time
}

func newDispatcher(handle func(cloudwire.Frame), waited func(time.Duration), closing, finished <-chan struct{}, limit int) *dispatcher {
	return &dispatcher{
		handle: handle, waited: waited, closing: closing, finished: finished,
		slots: make(chan struct{}, limit),
		lanes: make(map[string][]request),
	}
}

// dispatch queues f behind the earlier requests acting as as, waiting for
// a slot first; it reports false when the session ends before one frees.
func (d *dispatcher) dispatch(as string, f cloudwire.Frame) bool {
	select {
	case d.slots <- struct{}{}:
	case <-d.closing:
		return false
	case <-d.finished:
		return false
	}
	d.wg.Add(1)
	r := request{f: f, at: time.Now()}
	d.mu.Lock()
	if q, running := d.lanes[as]; running {
		d.lanes[as] = append(q, r)
		d.mu.Unlock()
		return true
	}
	d.lanes[as] = nil
	d.mu.Unlock()
	go d.work(as, r)
	return true
}

// work handles r and then the requests queued behind it for as, and exits
// when none is left.
func (d *dispatcher) work(as string, r request) {
	for {
		d.waited(time.Since(r.at))
		d.handle(r.f)
		<-d.slots
		d.wg.Done()
		d.mu.Lock()
		q := d.lanes[as]
		if len(q) == 0 {
			delete(d.lanes, as)
			d.mu.Unlock()
			return
		}
		r = q[0]
		q[0] = request{}
		d.lanes[as] = q[1:]
		d.mu.Unlock()
	}
}

// wait returns once every dispatched request has been answered.
func (d *dispatcher) wait() { d.wg.Wait() }
