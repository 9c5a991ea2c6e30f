package cloud

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// corkConn is a session's network connection with write coalescing: while
// corked, what gorilla/websocket writes (one Write per frame) is gathered,
// and uncork sends it to the kernel in one go (writev on TCP). A session
// corks around each batch of queued frames (session.writeBatch), so a
// burst of events costs one system call instead of one per frame.
//
// Writes from outside a batch (pings and close frames, which gorilla
// writes in one Write each) pass straight through; mu keeps them from
// interleaving with a flush. The buffer is taken from a pool at the first
// corked write and returned at uncork: an idle session holds none.
type corkConn struct {
	net.Conn

	mu     sync.Mutex
	corked bool
	cb     *corkBuf // nil unless a corked write is waiting
}

// corkBuf is the gathered frames: copies in b, one slice each in bufs.
type corkBuf struct {
	b    []byte
	bufs net.Buffers
}

// corkLimit is how much a batch gathers before it flushes early; a larger
// frame is written on its own.
const corkLimit = 64 << 10

var corkPool = sync.Pool{New: func() any { return &corkBuf{b: make([]byte, 0, 16<<10)} }}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
}

// uncork sends what was gathered and stops gathering.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked || len(p) > corkLimit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.cb != nil && len(c.cb.b)+len(p) > cap(c.cb.b) {
		// The copies would move under bufs: send what is gathered.
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	if c.cb == nil {
		c.cb = corkPool.Get().(*corkBuf)
		if cap(c.cb.b) < len(p) {
			c.cb.b = make([]byte, 0, corkLimit)
		}
	}
	start := len(c.cb.b)
	c.cb.b = append(c.cb.b, p...)
	c.cb.bufs = append(c.cb.bufs, c.cb.b[start:])
	return len(p), nil
}

// flushLocked writes the gathered frames, in one writev on TCP, and
// returns the buffer to the pool; c.mu is held.
func (c *corkConn) flushLocked() error {
	cb := c.cb
	if cb == nil {
		return nil
	}
	c.cb = nil
	bufs := cb.bufs
	_, err := bufs.WriteTo(c.Conn)
	cb.b, cb.bufs = cb.b[:0], cb.bufs[:0]
	if cap(cb.b) <= corkLimit && cap(cb.bufs) <= 256 {
		corkPool.Put(cb)
	}
	return err
}

// corkingWriter hands the upgrader a corkConn when it hijacks the
// connection (gorilla/websocket takes the net.Conn from Hijack).
type corkingWriter struct {
	http.ResponseWriter
	conn *corkConn
}

func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	nc, brw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: nc}
	return w.conn, brw, nil
}
