package cloud

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

func TestHelloWelcome(t *testing.T) {
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var hellos []cloudwire.Hello
	f := newFixture(t, func(c *Config) {
		c.Registerer = reg
		c.OnHello = func(user string, h cloudwire.Hello) {
			mu.Lock()
			defer mu.Unlock()
			if user != "alice" {
				t.Errorf("OnHello user %q", user)
			}
			hellos = append(hellos, h)
		}
	})
	c := f.dial(t, "alice", "phone", 0)
	w := c.Welcome()
	if w.Session == "" {
		t.Error("no session id")
	}
	w.Session = ""
	want := cloudwire.Welcome{ProtocolVersion: cloudwire.ProtocolVersion, User: "alice", Role: cloudwire.RoleUser, Device: "phone"}
	if diff := cmp.Diff(want, w); diff != "" {
		t.Errorf("welcome (-want +got):\n%s", diff)
	}
	waitSynced(t, c)
	if n := f.svc.Sessions(); n != 1 {
		t.Errorf("Sessions() = %d, want 1", n)
	}
	if v := testutil.ToFloat64(f.svc.m.sessions.WithLabelValues(kindNative)); v != 1 {
		t.Errorf("gateway_cloud_sessions{kind=native} = %v, want 1", v)
	}
	if n, err := testutil.GatherAndCount(reg, "gateway_cloud_sessions"); err != nil || n != 3 {
		t.Errorf("gateway_cloud_sessions registered: %d series, %v; want one per kind", n, err)
	}
	mu.Lock()
	if len(hellos) != 1 || hellos[0].Device != "phone" || hellos[0].Token != "" {
		t.Errorf("OnHello saw %+v", hellos)
	}
	mu.Unlock()
	c.Close()
	if !errors.Is(c.Err(), ErrClientClosed) {
		t.Errorf("Err after Close = %v", c.Err())
	}
	deadline := time.Now().Add(waitFor)
	for f.svc.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := f.svc.Sessions(); n != 0 {
		t.Errorf("Sessions() after close = %d", n)
	}
}

func TestHelloToken(t *testing.T) {
	f := newFixture(t, nil)
	c, err := Dial(context.Background(), ClientConfig{
		URL:   f.url,
		Hello: cloudwire.Hello{Token: token(t, "bob", cloudwire.RoleUser), Device: "browser"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if w := c.Welcome(); w.User != "bob" {
		t.Errorf("welcome user %q", w.User)
	}
}

func TestHandshakeRefused(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com"}
	})
	now := time.Now()
	_, otherKey, _ := ed25519.GenerateKey(nil)
	sign := func(k ed25519.PrivateKey, c cloudwire.Claims) string {
		tok, err := cloudwire.SignToken(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	expired := sign(testKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience}, Subject: "alice", Role: cloudwire.RoleUser, IssuedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour)})
	forged := sign(otherKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience}, Subject: "alice", Role: cloudwire.RoleUser, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	tests := []struct {
		name   string
		token  string
		header http.Header
		status int
	}{
		{"expired token", expired, nil, http.StatusUnauthorized},
		{"wrong key", forged, nil, http.StatusUnauthorized},
		{"garbage token", "not-a-token", nil, http.StatusUnauthorized},
		{"admin role", token(t, "root", cloudwire.RoleAdmin), nil, http.StatusForbidden},
		{"origin not allowed", token(t, "alice", cloudwire.RoleUser), http.Header{"Origin": {"https://evil.example.com"}}, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: tc.token, Header: tc.header, Hello: cloudwire.Hello{Device: "d"}})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var de *DialError
			if !errors.As(err, &de) || de.StatusCode != tc.status {
				t.Fatalf("Dial error %v, want HTTP %d", err, tc.status)
			}
			if n := f.svc.Sessions(); n != 0 {
				t.Errorf("Sessions() = %d", n)
			}
		})
	}

	t.Run("allowed origin", func(t *testing.T) {
		c, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: token(t, "alice", cloudwire.RoleUser),
			Header: http.Header{"Origin": {"https://app.example.com"}}, Hello: cloudwire.Hello{Device: "d"}})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})

	t.Run("bad token in hello", func(t *testing.T) {
		_, err := Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Token: expired, Device: "d"}})
		closeCode(t, err, cloudwire.CloseUnauthorized)
	})

	t.Run("no token at all", func(t *testing.T) {
		_, err := Dial(context.Background(), ClientConfig{URL: f.url, Hello: cloudwire.Hello{Device: "d"}})
		closeCode(t, err, cloudwire.CloseUnauthorized)
	})

	t.Run("subprotocol required", func(t *testing.T) {
		h := http.Header{"Authorization": {"Bearer " + token(t, "alice", cloudwire.RoleUser)}}
		_, resp, err := websocket.DefaultDialer.Dial(f.url, h)
		if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("dial without subprotocol: %v, %v", resp, err)
		}
	})

	t.Run("first frame not hello", func(t *testing.T) {
		d := websocket.Dialer{Subprotocols: []string{cloudwire.Subprotocol}}
		h := http.Header{"Authorization": {"Bearer " + token(t, "alice", cloudwire.RoleUser)}}
		conn, _, err := d.Dial(f.url, h)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		b, _ := cloudwire.Encode(cloudwire.Synced{})
		_ = conn.WriteMessage(websocket.TextMessage, b)
		_, _, err = conn.ReadMessage()
		closeCode(t, closeErr(err), cloudwire.CloseProtocol)
	})

	// The allowed session above closed from the client side; the server
	// notices on its own schedule.
	for deadline := time.Now().Add(waitFor); f.svc.Sessions() != 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if n := f.svc.Sessions(); n != 0 {
		t.Errorf("Sessions() = %d after refusals", n)
	}
}

func TestAdmitRefusal(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.Admit = func(_ context.Context, user string) error {
			if user == "eve" {
				return errors.New("not migrated yet")
			}
			return nil
		}
	})
	_, err := Dial(context.Background(), ClientConfig{URL: f.url, Token: token(t, "eve", cloudwire.RoleUser), Hello: cloudwire.Hello{Device: "d"}})
	ce := closeCode(t, err, cloudwire.CloseForbidden)
	if ce.Reason.Reason != "not migrated yet" {
		t.Errorf("close reason %q", ce.Text)
	}
	// Admit applies to user sessions only: a bridge may open.
	f.dialRole(t, "eve", cloudwire.RoleBridge, "bridge-1", 0)
	f.dial(t, "alice", "d", 0)
}

func TestOversizedFrame(t *testing.T) {
	f := newFixture(t, nil)
	conn := rawConn(t, f.node, "alice")
	big := `{"type":"send","ref":"1","to":"bob","msg_id":"m1","text":"` + strings.Repeat("x", cloudwire.MaxFrameSize) + `"}`
	if err := conn.WriteMessage(websocket.TextMessage, []byte(big)); err != nil {
		t.Fatal(err)
	}
	fr := readFrame(t, conn)
	if e, ok := fr.(cloudwire.Error); !ok || e.Code != cloudwire.CodeTooLarge {
		t.Fatalf("got %#v, want a too_large error", fr)
	}
	_ = conn.SetReadDeadline(time.Now().Add(waitFor))
	_, _, err := conn.ReadMessage()
	closeCode(t, closeErr(err), cloudwire.CloseTooLarge)
}

func TestMalformedFrames(t *testing.T) {
	f := newFixture(t, nil)
	conn := rawConn(t, f.node, "alice")
	tests := []struct {
		name string
		in   []byte
		code string
		ref  string
	}{
		{"not json", []byte("hello?"), cloudwire.CodeBadRequest, ""},
		{"invalid utf-8", []byte("{\"type\":\"send\",\"text\":\"\xc3\x28\"}"), cloudwire.CodeBadRequest, ""},
		{"unknown type", []byte(`{"type":"teleport","ref":"7"}`), cloudwire.CodeUnknownType, "7"},
		{"server frame", []byte(`{"type":"synced","cursor":1}`), cloudwire.CodeUnknownType, ""},
		{"missing msg id", []byte(`{"type":"send","ref":"8","to":"bob","text":"x"}`), cloudwire.CodeBadRequest, "8"},
		{"text too long", []byte(`{"type":"send","ref":"9","to":"bob","msg_id":"m","text":"` + strings.Repeat("y", cloudwire.MaxTextSize+1) + `"}`), cloudwire.CodeTooLarge, "9"},
		{"as on a user session", []byte(`{"type":"send","ref":"10","as":"carol","to":"bob","msg_id":"m","text":"x"}`), cloudwire.CodeForbidden, "10"},
		{"conv mismatch", []byte(`{"type":"send","ref":"11","to":"bob","conv":"dffff","msg_id":"m","text":"x"}`), cloudwire.CodeBadRequest, "11"},
		{"receipt of unknown message", []byte(`{"type":"receipt","ref":"12","conv":"d1","msg_id":"nope","status":"read"}`), cloudwire.CodeNotFound, "12"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := conn.WriteMessage(websocket.TextMessage, tc.in); err != nil {
				t.Fatal(err)
			}
			fr := readFrame(t, conn)
			e, ok := fr.(cloudwire.Error)
			if !ok || e.Code != tc.code || e.Ref != tc.ref {
				t.Fatalf("got %#v, want error %s ref %q", fr, tc.code, tc.ref)
			}
		})
	}
	// The session survives all of that.
	b, _ := cloudwire.Encode(cloudwire.Send{Ref: "ok", To: "bob", MsgID: msgID(t), Text: "still here"})
	if err := conn.WriteMessage(websocket.TextMessage, b); err != nil {
		t.Fatal(err)
	}
	if a, ok := readFrame(t, conn).(cloudwire.Ack); !ok || a.Ref != "ok" || a.Seq != 1 {
		t.Fatalf("got %#v, want the ack of seq 1", a)
	}
}

func TestShutdownGoingAway(t *testing.T) {
	f := newFixture(t, nil)
	a := f.dial(t, "alice", "phone", 0)
	b := f.dialRole(t, "bridge", cloudwire.RoleBridge, "bridge-1", 0)
	waitSynced(t, a)
	waitSynced(t, b)
	// A connection still in the hello phase is closed too.
	d := websocket.Dialer{Subprotocols: []string{cloudwire.Subprotocol}}
	early, _, err := d.Dial(f.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := f.svc.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_ = early.SetReadDeadline(time.Now().Add(waitFor))
	_, _, err = early.ReadMessage()
	closeCode(t, closeErr(err), cloudwire.CloseGoingAway)
	for _, c := range []*Client{a, b} {
		waitDone(t, c)
		ce := closeCode(t, c.Err(), cloudwire.CloseGoingAway)
		if ce.Reason.RetryMS <= 0 || ce.Reason.RetryMS > 1000 {
			t.Errorf("retry hint %d ms, want in (0, 1000]", ce.Reason.RetryMS)
		}
	}
	if n := f.svc.Sessions(); n != 0 {
		t.Errorf("Sessions() = %d after Shutdown", n)
	}
	if err := f.svc.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v", err)
	}
	_, err = Dial(context.Background(), ClientConfig{URL: f.url, Token: token(t, "alice", cloudwire.RoleUser), Hello: cloudwire.Hello{Device: "d"}})
	var de *DialError
	if !errors.As(err, &de) || de.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Dial after Shutdown: %v, want 503", err)
	}
	resp, err := http.Get(f.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("healthz after Shutdown: %d", resp.StatusCode)
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t, nil)
	resp, err := http.Get(f.srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

func TestConfigValidate(t *testing.T) {
	f := newFixture(t, nil)
	pub := testKey.Public().(ed25519.PublicKey)
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{JS: f.eng.JS, TokenKey: pub}, true},
		{"no js", Config{TokenKey: pub}, false},
		{"no key", Config{JS: f.eng.JS}, false},
		{"origin with path", Config{JS: f.eng.JS, TokenKey: pub, AllowedOrigins: []string{"https://a.example/app"}}, false},
		{"origin without scheme", Config{JS: f.eng.JS, TokenKey: pub, AllowedOrigins: []string{"a.example"}}, false},
		{"replicas", Config{JS: f.eng.JS, TokenKey: pub, Replicas: 7}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cfg.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestSlowConsumer: a session that stops reading is closed with 4429 once
// its queue overflows, instead of holding the node's live feed back.
func TestSlowConsumer(t *testing.T) {
	// Small enough for the stalled reader to overflow, roomy enough that the
	// live one never does on a loaded machine.
	f := newFixture(t, func(c *Config) { c.QueueLen = 64 })
	alice := f.dial(t, "alice", "a", 0)
	collect(alice)
	slow := rawConn(t, f.node, "bob") // never read until the end
	text := strings.Repeat("z", cloudwire.MaxTextSize)
	kicked := func() bool {
		return testutil.ToFloat64(f.svc.m.closes.WithLabelValues("4429")) > 0
	}
	for i := 0; i < 5000 && !kicked(); i++ {
		send(t, alice, "bob", text)
	}
	if !kicked() {
		t.Fatal("slow session never closed")
	}
	for {
		_ = slow.SetReadDeadline(time.Now().Add(waitFor))
		if _, _, err := slow.ReadMessage(); err != nil {
			closeCode(t, closeErr(err), cloudwire.CloseSlowConsumer)
			break
		}
	}
	// The fast session is unaffected.
	send(t, alice, "bob", "still fine")
}
