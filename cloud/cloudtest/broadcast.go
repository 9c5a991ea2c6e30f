package cloudtest

import (
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// Broadcast is the floor of fan-out: a bare gorilla/websocket hub that
// answers every connection like AckEcho and writes each send, encoded once
// as a msg event, to every connection it holds (the sender's too), one
// after the other on the sender's goroutine. No storage, no sequence, no
// per-device state: what a raw WebSocket broadcast costs.
type Broadcast struct {
	mu    sync.Mutex
	conns map[*websocket.Conn]*sync.Mutex // each connection's write lock
}

// NewBroadcast returns an empty hub.
func NewBroadcast() *Broadcast {
	return &Broadcast{conns: map[*websocket.Conn]*sync.Mutex{}}
}

// Len is how many connections the hub holds.
func (b *Broadcast) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

// Serve holds conn in the hub until it ends. Use it as the handler of an
// upgraded connection.
func (b *Broadcast) Serve(conn *websocket.Conn) {
	wmu := &sync.Mutex{}
	b.mu.Lock()
	b.conns[conn] = wmu
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, conn)
		b.mu.Unlock()
	}()
	// The sender's own acks go through the same write lock as broadcasts.
	locked := &lockedConn{Conn: conn, mu: wmu}
	serveWith(locked, func(s cloudwire.Send) { b.send(s) })
}

func (b *Broadcast) send(s cloudwire.Send) {
	frame, err := cloudwire.Encode(cloudwire.Event{Kind: cloudwire.KindMsg, Conv: s.Conv, MsgID: s.MsgID, From: "echo", Text: s.Text, At: time.Now()})
	if err != nil {
		return
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, frame)
	if err != nil {
		return
	}
	b.mu.Lock()
	targets := make(map[*websocket.Conn]*sync.Mutex, len(b.conns))
	for c, m := range b.conns {
		targets[c] = m
	}
	b.mu.Unlock()
	for c, m := range targets {
		m.Lock()
		c.WritePreparedMessage(pm) //nolint:errcheck // a dead connection ends its own Serve
		m.Unlock()
	}
}

// lockedConn serializes a connection's writes with the hub's broadcasts.
type lockedConn struct {
	*websocket.Conn
	mu *sync.Mutex
}

func (c *lockedConn) WriteMessage(t int, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.WriteMessage(t, data)
}
