package bridge

import (
	"container/list"
	"context"
	"errors"
	"sync"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Bounds of the cloud feed's per-recipient queues.
const (
	// feedMaxInFlight bounds the events taken from the cloud link and not
	// yet handled, over every recipient: past it the feed stops reading
	// the link until a delivery finishes (the link's own buffer, then the
	// cloud's slow-consumer limit, push back further).
	feedMaxInFlight = 4096
	// feedBacklog is how many events may wait behind a recipient's current
	// one before the rest are queued in the outbox instead of delivered
	// one by one (queueFirst): a device that reads slowly then holds one
	// worker, not the feed.
	feedBacklog = 32
)

// errFeedStopped ends the workers of a feed whose link is going away.
var errFeedStopped = errors.New("bridge: cloud feed stopped")

// feed hands the events of the bridge's cloud link to one ordered worker
// per inbox owner, so that a legacy device that reads slowly (up to the
// delivery timeout per message) delays only its own user's messages, never
// another user's. Each user's events are handled one after another in the
// feed's order, as before; different users' run side by side, at most
// feedMaxInFlight events in all. The cursor only moves past an event once
// it and every event before it have been handled (delivered, queued in the
// outbox, or found to need nothing), so a restart or a redial replays from
// the oldest unfinished event; what was handled after it is repeated, and
// dropped as a repeat by the cloud (receipts) and legacy devices (message
// ids), as the cursor's flush interval already implies.
type feed struct {
	handle  func(ctx context.Context, ev cloudwire.Event) error
	advance func(cursor uint64)
	onGroup func(conv, name string) // a group's name, from its create event

	mu     sync.Mutex
	queues map[string]*feedQueue // users with a running worker
	// inflight holds the events not handled yet, in the feed's order; its
	// front is the oldest, and the cursor may move up to the event
	// dispatched just before it.
	inflight list.List
	last     uint64 // cursor of the last event dispatched
}

// feedQueue is one user's waiting events; the worker holds the one it is
// handling outside of it.
type feedQueue struct {
	items []*list.Element
}

// feedItem is one dispatched event and the cursor of the event dispatched
// before it (the cursor's value while this one is the oldest unfinished).
type feedItem struct {
	ev   cloudwire.Event
	prev uint64
}

func newFeed(handle func(context.Context, cloudwire.Event) error, advance func(uint64), onGroup func(conv, name string)) *feed {
	return &feed{handle: handle, advance: advance, onGroup: onGroup, queues: map[string]*feedQueue{}}
}

// serve dispatches events until ctx ends, events closes (closed is true)
// or a worker fails (its error is returned: the event it failed on is not
// handled, and the link must be dialled again from the cursor). It returns
// once every worker it started has stopped. cursor is where events start:
// the value the cursor keeps until the first event is handled.
func (f *feed) serve(ctx context.Context, cursor uint64, events <-chan cloudwire.Event) (closed bool, err error) {
	wctx, stop := context.WithCancelCause(ctx)
	slots := make(chan struct{}, feedMaxInFlight)
	var wg sync.WaitGroup
	f.mu.Lock()
	f.last = cursor
	f.mu.Unlock()
	defer func() {
		stop(errFeedStopped)
		wg.Wait()
		f.mu.Lock()
		f.inflight.Init()
		clear(f.queues)
		f.mu.Unlock()
		if cause := context.Cause(wctx); err == nil && !errors.Is(cause, errFeedStopped) && ctx.Err() == nil {
			err = cause
		}
	}()
	for {
		select {
		case <-wctx.Done():
			return false, nil
		case ev, ok := <-events:
			if !ok {
				return true, nil
			}
			if ev.Kind == cloudwire.KindGroup && ev.Op == cloudwire.GroupCreate {
				// Before any member's worker may need the name.
				f.onGroup(ev.Conv, ev.Name)
			}
			select {
			case slots <- struct{}{}:
			case <-wctx.Done():
				return false, nil
			}
			f.dispatch(wctx, stop, &wg, slots, ev)
		}
	}
}

// dispatch queues ev for its user's worker, starting one if none runs.
func (f *feed) dispatch(ctx context.Context, fail context.CancelCauseFunc, wg *sync.WaitGroup, slots chan struct{}, ev cloudwire.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	el := f.inflight.PushBack(&feedItem{ev: ev, prev: f.last})
	f.last = max(f.last, ev.Cursor)
	if q := f.queues[ev.User]; q != nil {
		q.items = append(q.items, el)
		return
	}
	q := &feedQueue{items: []*list.Element{el}}
	f.queues[ev.User] = q
	wg.Go(func() { f.work(ctx, fail, slots, ev.User, q) })
}

// work handles user's events in order until the queue is empty, ctx ends or
// one fails.
func (f *feed) work(ctx context.Context, fail context.CancelCauseFunc, slots chan struct{}, user string, q *feedQueue) {
	for {
		f.mu.Lock()
		if len(q.items) == 0 || ctx.Err() != nil {
			delete(f.queues, user)
			f.mu.Unlock()
			return
		}
		el := q.items[0]
		q.items[0] = nil
		q.items = q.items[1:]
		f.mu.Unlock()
		if err := f.handle(ctx, el.Value.(*feedItem).ev); err != nil {
			fail(err)
			f.mu.Lock()
			delete(f.queues, user)
			f.mu.Unlock()
			return
		}
		f.mu.Lock()
		f.inflight.Remove(el)
		mark := f.last
		if front := f.inflight.Front(); front != nil {
			mark = front.Value.(*feedItem).prev
		}
		f.mu.Unlock()
		<-slots
		f.advance(mark)
	}
}

// backlogged reports whether user has more than feedBacklog events waiting
// behind the one being handled.
func (f *feed) backlogged(user string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queues[user]
	return q != nil && len(q.items) > feedBacklog
}
