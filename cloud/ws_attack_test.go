package cloud

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// WebSocket frame bits (RFC 6455 §5.2), for tests that write frames byte by
// byte.
const (
	wsFin  = 0x80
	wsRSV1 = 0x40
	wsRSV2 = 0x20
	wsRSV3 = 0x10

	opCont   = 0x0
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA

	// wsNoStatus is what a close frame without a code means (1005).
	wsNoStatus = 1005
	// wsProtocolError is the RFC's close code for a broken frame (1002).
	wsProtocolError = 1002
)

// wsFrame encodes one frame: b0 is FIN, RSV and opcode; mask masks the
// payload as a client must.
func wsFrame(b0 byte, mask bool, payload []byte) []byte {
	out := []byte{b0}
	var m byte
	if mask {
		m = 0x80
	}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !mask {
		return append(out, payload...)
	}
	key := [4]byte{0x1f, 0x8b, 0x3c, 0x77}
	out = append(out, key[:]...)
	for i, c := range payload {
		out = append(out, c^key[i%4])
	}
	return out
}

func closePayload(code int, text string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), text...)
}

// summaryMu serialises appends to the summary file within this process.
var summaryMu sync.Mutex

// tallyRefused adds n attacks refused to the test run's summary (the file
// FERRY_SUMMARY names, set by .ci/run; the same format as the gateway's
// tally).
func tallyRefused(n int) {
	path := os.Getenv("FERRY_SUMMARY")
	if path == "" {
		return
	}
	summaryMu.Lock()
	defer summaryMu.Unlock()
	if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600); err == nil {
		fmt.Fprintf(f, "attacks_refused %d\n", n)
		f.Close()
	}
}

// rawWS is a WebSocket client written by hand over TCP, for frames no
// library would send.
type rawWS struct {
	tb testing.TB
	c  net.Conn
	br *bufio.Reader
}

// dialRawWS performs the opening handshake (with a header token when tok is
// not empty) and returns the connection before hello.
func dialRawWS(tb testing.TB, n *node, tok string) *rawWS {
	tb.Helper()
	addr := n.srv.Listener.Addr().String()
	c, err := net.DialTimeout("tcp", addr, waitFor)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	req := "GET /v1/ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + base64.StdEncoding.EncodeToString(nonce[:]) + "\r\n" +
		"Sec-WebSocket-Protocol: " + cloudwire.Subprotocol + "\r\n"
	if tok != "" {
		req += "Authorization: Bearer " + tok + "\r\n"
	}
	_ = c.SetDeadline(time.Now().Add(waitFor))
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		tb.Fatal(err)
	}
	r := &rawWS{tb: tb, c: c, br: bufio.NewReader(c)}
	resp, err := http.ReadResponse(r.br, nil)
	if err != nil {
		tb.Fatalf("handshake: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		tb.Fatalf("handshake: status %d", resp.StatusCode)
	}
	return r
}

// rawSession dials with a header token for user and completes hello.
func rawSession(tb testing.TB, n *node, user string) *rawWS {
	tb.Helper()
	r := dialRawWS(tb, n, token(tb, user, cloudwire.RoleUser))
	r.write(wsFrame(wsFin|opText, true, []byte(`{"type":"hello","device":"raw"}`)))
	if f := r.nextFrame(); f.FrameType() != cloudwire.TypeWelcome {
		tb.Fatalf("got %s, want welcome", f.FrameType())
	}
	return r
}

func (r *rawWS) write(b ...[]byte) {
	r.tb.Helper()
	_ = r.c.SetWriteDeadline(time.Now().Add(waitFor))
	for _, p := range b {
		if _, err := r.c.Write(p); err != nil {
			r.tb.Fatalf("write: %v", err)
		}
	}
}

// read returns the next frame the service sent (never masked).
func (r *rawWS) read() (op byte, payload []byte, err error) {
	_ = r.c.SetReadDeadline(time.Now().Add(waitFor))
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, errors.New("the service masked a frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 2*cloudwire.MaxFrameSize {
		return 0, nil, fmt.Errorf("a %d-byte frame from the service", n)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r.br, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// nextFrame returns the next request answer or welcome, skipping what the
// service pushes on its own.
func (r *rawWS) nextFrame() cloudwire.Frame {
	r.tb.Helper()
	for {
		op, p, err := r.read()
		if err != nil {
			r.tb.Fatalf("read: %v", err)
		}
		if op == opClose {
			r.tb.Fatalf("closed by the service: %d %q", closeCodeOf(p), p[min(2, len(p)):])
		}
		if op != opText {
			continue
		}
		f, err := cloudwire.Decode(p)
		if err != nil {
			r.tb.Fatalf("decode %s: %v", p, err)
		}
		switch f.(type) {
		case cloudwire.Event, cloudwire.Synced, cloudwire.Presence, cloudwire.PresenceSnapshot, cloudwire.Typing, cloudwire.CallState:
			continue
		}
		return f
	}
}

func closeCodeOf(p []byte) int {
	if len(p) < 2 {
		return wsNoStatus
	}
	return int(binary.BigEndian.Uint16(p))
}

// expectClose reads until the service's close frame, checks its code, and
// then requires the connection to end. want 0 accepts any code.
func (r *rawWS) expectClose(want int) {
	r.tb.Helper()
	for {
		op, p, err := r.read()
		if err != nil {
			r.tb.Fatalf("no close frame (want %d): %v", want, err)
		}
		if op != opClose {
			continue
		}
		if got := closeCodeOf(p); want != 0 && got != want {
			r.tb.Fatalf("close code %d (%q), want %d", got, p[min(2, len(p)):], want)
		}
		break
	}
	r.expectEnd()
}

// expectEnd requires the service to drop the connection (within waitFor).
func (r *rawWS) expectEnd() {
	r.tb.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(waitFor))
	if _, err := io.Copy(io.Discard, r.br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.tb.Fatal("the service kept the connection open")
		}
	}
}

// request writes frames and returns the first answer.
func (r *rawWS) request(frames ...[]byte) cloudwire.Frame {
	r.tb.Helper()
	r.write(frames...)
	return r.nextFrame()
}

// sendJSON builds a send frame of exactly size bytes (padded with a member
// the service ignores) when size > 0.
func sendJSON(tb testing.TB, ref, to, text string, size int) []byte {
	tb.Helper()
	b := fmt.Sprintf(`{"type":"send","ref":%q,"to":%q,"msg_id":%q,"text":%q}`, ref, to, msgID(tb), text)
	if size == 0 {
		return []byte(b)
	}
	pad := size - len(b) - len(`,"pad":""`)
	if pad < 0 {
		tb.Fatalf("frame of %d bytes cannot be %d", len(b), size)
	}
	return []byte(b[:len(b)-1] + `,"pad":"` + strings.Repeat("p", pad) + `"}`)
}

// TestRawFramesClose writes frames that break RFC 6455 or the service's
// limits, byte by byte, each on its own session: each gets its close code
// and the connection ends, while a healthy session of another user keeps
// being served throughout.
func TestRawFramesClose(t *testing.T) {
	f := newFixture(t, nil)
	bob := f.dial(t, "bob", "phone", 0)
	bobEvents := collect(bob)
	text := func(b0 byte, p string) []byte { return wsFrame(b0, true, []byte(p)) }
	ping := func(b0 byte, n int) []byte { return wsFrame(b0, true, []byte(strings.Repeat("p", n))) }
	closeFrame := func(p []byte) []byte { return wsFrame(wsFin|opClose, true, p) }
	over := sendJSON(t, "big", "bob", "x", cloudwire.MaxFrameSize+1)
	tests := []struct {
		name   string
		frames [][]byte
		code   int    // 0: any close code
		errFr  string // an error frame expected before the close
	}{
		{name: "RSV1 without an extension", frames: [][]byte{text(wsFin|wsRSV1|opText, `{"type":"presence","state":"idle"}`)}, code: wsProtocolError},
		{name: "RSV2", frames: [][]byte{text(wsFin|wsRSV2|opText, `{}`)}, code: wsProtocolError},
		{name: "RSV3", frames: [][]byte{text(wsFin|wsRSV3|opText, `{}`)}, code: wsProtocolError},
		{name: "opcode 3 (reserved data)", frames: [][]byte{text(wsFin|0x3, `{}`)}, code: wsProtocolError},
		{name: "opcode 11 (reserved control)", frames: [][]byte{text(wsFin|0xB, ``)}, code: wsProtocolError},
		{name: "ping of 126 bytes", frames: [][]byte{ping(wsFin|opPing, 126)}, code: wsProtocolError},
		{name: "close of 126 bytes", frames: [][]byte{closeFrame(closePayload(1000, strings.Repeat("c", 124)))}, code: wsProtocolError},
		{name: "fragmented ping", frames: [][]byte{ping(opPing, 4), ping(wsFin|opCont, 4)}, code: wsProtocolError},
		{name: "fragmented close", frames: [][]byte{wsFrame(opClose, true, closePayload(1000, ""))}, code: wsProtocolError},
		{name: "unmasked text frame", frames: [][]byte{wsFrame(wsFin|opText, false, []byte(`{"type":"presence","state":"idle"}`))}, code: wsProtocolError},
		{name: "continuation without a start", frames: [][]byte{text(wsFin|opCont, `{}`)}, code: wsProtocolError},
		{name: "new message inside a fragmented one", frames: [][]byte{text(opText, `{"type":`), text(wsFin|opText, `{}`)}, code: wsProtocolError},
		{name: "close code 999", frames: [][]byte{closeFrame(closePayload(999, ""))}, code: wsProtocolError},
		{name: "close code 1005 on the wire", frames: [][]byte{closeFrame(closePayload(1005, ""))}, code: wsProtocolError},
		{name: "close code 1006 on the wire", frames: [][]byte{closeFrame(closePayload(1006, ""))}, code: wsProtocolError},
		{name: "close code 1015 on the wire", frames: [][]byte{closeFrame(closePayload(1015, ""))}, code: wsProtocolError},
		{name: "close code 5000", frames: [][]byte{closeFrame(closePayload(5000, ""))}, code: wsProtocolError},
		{name: "close reason not UTF-8", frames: [][]byte{closeFrame(closePayload(1000, "\xc3\x28"))}, code: wsProtocolError},
		// RFC 6455 calls a 1-byte close payload a protocol error; gorilla
		// reads it as a close without a status and echoes an empty close.
		{name: "close payload of 1 byte", frames: [][]byte{closeFrame([]byte{0x03})}, code: wsNoStatus},
		{name: "normal close", frames: [][]byte{closeFrame(closePayload(1000, "bye"))}, code: 1000},
		{name: "frame one byte over the limit", frames: [][]byte{wsFrame(wsFin|opText, true, over)}, code: cloudwire.CloseTooLarge, errFr: cloudwire.CodeTooLarge},
		{name: "fragments summing to one byte over the limit", frames: [][]byte{
			wsFrame(opText, true, over[:30000]), wsFrame(opCont, true, over[30000:60000]), wsFrame(wsFin|opCont, true, over[60000:]),
		}, code: cloudwire.CloseTooLarge, errFr: cloudwire.CodeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := rawSession(t, f.node, "mallory")
			r.write(tc.frames...)
			if tc.errFr != "" {
				if e, ok := r.nextFrame().(cloudwire.Error); !ok || e.Code != tc.errFr {
					t.Fatalf("got %#v, want error %s", e, tc.errFr)
				}
			}
			r.expectClose(tc.code)
			// The healthy session was not disturbed.
			select {
			case <-bob.Done():
				t.Fatalf("bob's session ended: %v", bob.Err())
			default:
			}
		})
	}

	t.Run("length with the top bit set", func(t *testing.T) {
		r := rawSession(t, f.node, "mallory")
		r.write([]byte{wsFin | opText, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4})
		r.expectEnd()
	})

	// bob is still served: a message to him arrives, his send is acked.
	alice := f.dial(t, "alice", "laptop", 0)
	send(t, alice, "bob", "after the attacks")
	evs := bobEvents.waitN(t, 1)
	if evs[len(evs)-1].Text != "after the attacks" {
		t.Fatalf("bob's last event %+v", evs[len(evs)-1])
	}
	send(t, bob, "alice", "still here")
	for deadline := time.Now().Add(waitFor); f.svc.Sessions() != 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := f.svc.Sessions(); n != 2 {
		t.Errorf("Sessions() = %d after the attackers left, want 2", n)
	}
	if !t.Failed() {
		tallyRefused(len(tests) + 1)
	}
}

// TestRawFramesAnswered: frames the service refuses with an error frame (or
// answers, at a limit) leave the session open; each limit is tried at its
// value and one byte over.
func TestRawFramesAnswered(t *testing.T) {
	f := newFixture(t, nil)
	r := rawSession(t, f.node, "mallory")
	id := func(n int) string { return strings.Repeat("i", n) }
	tests := []struct {
		name   string
		frames [][]byte
		code   string // "" means an ack
		ref    string
	}{
		{name: "invalid UTF-8 in a text frame", frames: [][]byte{wsFrame(wsFin|opText, true, []byte("{\"type\":\"send\",\"ref\":\"u\",\"text\":\"\xff\"}"))}, code: cloudwire.CodeBadRequest},
		{name: "invalid UTF-8 split across fragments", frames: [][]byte{
			wsFrame(opText, true, []byte("{\"type\":\"send\",\"text\":\"\xe2\x82")), wsFrame(wsFin|opCont, true, []byte("\"}")),
		}, code: cloudwire.CodeBadRequest},
		{name: "binary frame", frames: [][]byte{wsFrame(wsFin|opBinary, true, []byte{0, 1, 2})}, code: cloudwire.CodeBadRequest},
		{name: "frame at the limit", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, "max", "bob", "x", cloudwire.MaxFrameSize))}, ref: "max"},
		{name: "fragments summing to the limit, a ping between", frames: func() [][]byte {
			b := sendJSON(t, "frag", "bob", "x", cloudwire.MaxFrameSize)
			return [][]byte{wsFrame(opText, true, b[:100]), wsFrame(wsFin|opPing, true, []byte("mid")), wsFrame(wsFin|opCont, true, b[100:])}
		}(), ref: "frag"},
		{name: "text at the limit", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, "t", "bob", strings.Repeat("t", cloudwire.MaxTextSize), 0))}, ref: "t"},
		{name: "text one byte over", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, "t1", "bob", strings.Repeat("t", cloudwire.MaxTextSize+1), 0))}, code: cloudwire.CodeTooLarge, ref: "t1"},
		{name: "recipient id at the limit", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, "to", id(cloudwire.MaxIDSize), "x", 0))}, ref: "to"},
		{name: "recipient id one byte over", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, "to1", id(cloudwire.MaxIDSize+1), "x", 0))}, code: cloudwire.CodeBadRequest, ref: "to1"},
		{name: "ref at the limit", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, id(cloudwire.MaxRefSize), "bob", "x", 0))}, ref: id(cloudwire.MaxRefSize)},
		// A ref over its limit is not echoed: the error cannot name it.
		{name: "ref one byte over", frames: [][]byte{wsFrame(wsFin|opText, true, sendJSON(t, id(cloudwire.MaxRefSize+1), "bob", "x", 0))}, code: cloudwire.CodeBadRequest},
		{name: "msg id at the limit", frames: [][]byte{wsFrame(wsFin|opText, true, fmt.Appendf(nil, `{"type":"send","ref":"m","to":"bob","msg_id":%q,"text":"x"}`, id(cloudwire.MaxMsgIDSize)))}, ref: "m"},
		{name: "msg id one byte over", frames: [][]byte{wsFrame(wsFin|opText, true, fmt.Appendf(nil, `{"type":"send","ref":"m1","to":"bob","msg_id":%q,"text":"x"}`, id(cloudwire.MaxMsgIDSize+1)))}, code: cloudwire.CodeBadRequest, ref: "m1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fr := r.request(tc.frames...)
			switch fr := fr.(type) {
			case cloudwire.Ack:
				if tc.code != "" || fr.Ref != tc.ref {
					t.Fatalf("got ack %+v, want error %q ref %q", fr, tc.code, tc.ref)
				}
			case cloudwire.Error:
				if fr.Code != tc.code || fr.Ref != tc.ref {
					t.Fatalf("got error %+v, want code %q ref %q", fr, tc.code, tc.ref)
				}
			default:
				t.Fatalf("got %#v", fr)
			}
		})
	}

	t.Run("ping of 125 bytes is answered", func(t *testing.T) {
		p := strings.Repeat("q", 125)
		r.write(wsFrame(wsFin|opPing, true, []byte(p)))
		for {
			op, got, err := r.read()
			if err != nil {
				t.Fatalf("no pong: %v", err)
			}
			if op == opPong {
				if string(got) != p {
					t.Fatalf("pong %q", got)
				}
				return
			}
		}
	})
	if a, ok := r.request(wsFrame(wsFin|opText, true, sendJSON(t, "end", "bob", "still here", 0))).(cloudwire.Ack); !ok || a.Ref != "end" {
		t.Fatalf("got %#v, want the ack", a)
	}
	refused := 0
	for _, tc := range tests {
		if tc.code != "" {
			refused++
		}
	}
	tallyRefused(refused)
}

// TestRawHelloLimits: the first frame at and over the frame limit, and a
// token over its limit in hello.
func TestRawHelloLimits(t *testing.T) {
	f := newFixture(t, nil)
	hello := func(size int, tok string) []byte {
		b := fmt.Sprintf(`{"type":"hello","device":"raw","token":%q}`, tok)
		if size == 0 {
			return []byte(b)
		}
		pad := size - len(b) - len(`,"pad":""`)
		return []byte(b[:len(b)-1] + `,"pad":"` + strings.Repeat("p", pad) + `"}`)
	}
	good := token(t, "mallory", cloudwire.RoleUser)

	t.Run("hello at the limit", func(t *testing.T) {
		r := dialRawWS(t, f.node, "")
		r.write(wsFrame(wsFin|opText, true, hello(cloudwire.MaxFrameSize, good)))
		if fr := r.nextFrame(); fr.FrameType() != cloudwire.TypeWelcome {
			t.Fatalf("got %#v, want welcome", fr)
		}
	})
	t.Run("hello one byte over", func(t *testing.T) {
		r := dialRawWS(t, f.node, "")
		r.write(wsFrame(wsFin|opText, true, hello(cloudwire.MaxFrameSize+1, good)))
		r.expectClose(cloudwire.CloseTooLarge)
	})
	// A token over its limit makes the hello itself invalid (4400), before
	// any signature is checked; a token at the limit is read and refused
	// as a bad token (4401).
	t.Run("token at its limit", func(t *testing.T) {
		r := dialRawWS(t, f.node, "")
		r.write(wsFrame(wsFin|opText, true, hello(0, strings.Repeat("a", cloudwire.MaxTokenSize))))
		r.expectClose(cloudwire.CloseUnauthorized)
	})
	t.Run("token one byte over its limit", func(t *testing.T) {
		r := dialRawWS(t, f.node, "")
		r.write(wsFrame(wsFin|opText, true, hello(0, strings.Repeat("a", cloudwire.MaxTokenSize+1))))
		r.expectClose(cloudwire.CloseProtocol)
	})
	t.Run("binary hello", func(t *testing.T) {
		r := dialRawWS(t, f.node, good)
		r.write(wsFrame(wsFin|opBinary, true, hello(0, "")))
		r.expectClose(cloudwire.CloseProtocol)
	})
	t.Run("unmasked hello", func(t *testing.T) {
		r := dialRawWS(t, f.node, good)
		r.write(wsFrame(wsFin|opText, false, hello(0, "")))
		r.expectClose(wsProtocolError)
	})
	if !t.Failed() {
		tallyRefused(5)
	}
}
