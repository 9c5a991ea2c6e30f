// Package cloudtest holds test and benchmark fixtures for the cloud
// protocol that other packages share. It imports cloudwire and the WebSocket
// library, never the cloud service itself.
package cloudtest

import (
	"time"

	"github.com/gorilla/websocket"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// AckEcho answers on conn like the cloud service without storing anything:
// welcome and synced to the hello, an ack to every send, until the
// connection ends. It is the floor that send→ack round trips through the
// service are compared with: the same client code, the same frames, no
// service.
func AckEcho(conn *websocket.Conn) {
	serveWith(conn, nil)
}

// wsConn is the part of a WebSocket connection serveWith uses.
type wsConn interface {
	ReadMessage() (int, []byte, error)
	WriteMessage(messageType int, data []byte) error
}

// serveWith runs AckEcho's loop on conn, calling onSend (when not nil)
// after each send was acked.
func serveWith(conn wsConn, onSend func(cloudwire.Send)) {
	write := func(f cloudwire.Frame) error {
		b, err := cloudwire.Encode(f)
		if err != nil {
			return err
		}
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		f, err := cloudwire.Decode(msg)
		if err != nil {
			return
		}
		switch f := f.(type) {
		case cloudwire.Hello:
			err = write(cloudwire.Welcome{ProtocolVersion: cloudwire.ProtocolVersion, User: "echo", Role: cloudwire.RoleUser, Device: f.Device, Session: "echo"})
			if err == nil {
				err = write(cloudwire.Synced{})
			}
		case cloudwire.Send:
			err = write(cloudwire.Ack{Ref: f.Ref, MsgID: f.MsgID, Conv: cloudwire.DirectConversationID("echo", f.To), Seq: 1, At: time.Now()})
			if err == nil && onSend != nil {
				onSend(f)
			}
		}
		if err != nil {
			return
		}
	}
}
