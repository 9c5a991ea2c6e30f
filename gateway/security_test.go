package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// agentListeners are the HTTP listeners of an agent, by name.
func agentListeners(ta *testAgent) map[string]net.Listener {
	return map[string]net.Listener{"cloud": ta.a.cloudLn, "admin": ta.a.adminLn}
}

// TestHTTPServerTimeouts: every HTTP server the agent runs bounds how long
// a client may take over its headers and how long an idle keep-alive
// connection is held; the admin server also bounds the whole request.
func TestHTTPServerTimeouts(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	for name, srv := range map[string]*http.Server{"cloud": ta.a.cloudSrv, "admin": ta.a.adminSrv} {
		if srv.ReadHeaderTimeout <= 0 || srv.IdleTimeout <= 0 {
			t.Errorf("%s server: ReadHeaderTimeout %v, IdleTimeout %v; want both set", name, srv.ReadHeaderTimeout, srv.IdleTimeout)
		}
	}
	if ta.a.adminSrv.ReadTimeout <= 0 {
		t.Error("admin server: no ReadTimeout, a trickled body holds a handler forever")
	}
}

// TestSlowloris opens, on every HTTP listener of the agent, a connection
// that trickles header lines and one that sends nothing: the agent closes
// both (ReadHeaderTimeout), while ordinary requests keep being answered.
func TestSlowloris(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Ordinary clients, one fresh connection per request, meanwhile.
	var served, failed int
	var mu sync.Mutex
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for name, ln := range agentListeners(ta) {
		url := "http://" + ln.Addr().String() + "/healthz"
		wg.Go(func() {
			for sleepCtx(ctx, 100*time.Millisecond) {
				resp, err := client.Get(url)
				mu.Lock()
				if err == nil && resp.StatusCode == http.StatusOK {
					served++
				} else {
					failed++
					t.Errorf("%s /healthz during slowloris: %v", name, err)
				}
				mu.Unlock()
				if err == nil {
					resp.Body.Close()
				}
			}
		})
	}
	var attacks sync.WaitGroup
	for name, ln := range agentListeners(ta) {
		for _, kind := range []string{"trickle", "silent"} {
			attacks.Go(func() {
				if err := slowClient(ln.Addr().String(), kind == "trickle", 4*readHeaderTimeout); err != nil {
					t.Errorf("%s listener, %s connection: %v", name, kind, err)
				}
			})
		}
	}
	attacks.Wait()
	cancel()
	wg.Wait()
	if served == 0 || failed > 0 {
		t.Fatalf("ordinary requests during the attack: %d served, %d failed", served, failed)
	}
	tally("attacks_refused", 2*len(agentListeners(ta)))
}

// slowClient connects to addr and either trickles header lines (one every
// 200 ms, never the blank line that ends them) or sends nothing. It returns
// nil once the server closes the connection, an error if it is still open
// after limit.
func slowClient(addr string, trickle bool, limit time.Duration) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ended := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, c) // returns when the server closes (or at limit)
		ended <- err
	}()
	if trickle {
		_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case err := <-ended:
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return fmt.Errorf("still open after %s", limit)
			}
			return nil
		case <-tick.C:
			if trickle {
				// A failed write means the server closed it; the reader
				// reports that.
				_, _ = io.WriteString(c, "X-Slow: "+strings.Repeat("s", i%8)+"\r\n")
			}
		}
	}
}

// TestAdminTokensRefused: admin calls without a token, with a token of
// another role, key, time, audience, issuer or algorithm, or a tampered
// one, get 401 and change nothing. Admin tokens are Ed25519-signed JWTs for
// the admin API's audience, checked by signature verification
// (cloudwire.TokenPolicy.Verify), so no secret is compared byte by byte.
func TestAdminTokensRefused(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	now := time.Now()
	sign := func(key ed25519.PrivateKey, c cloudwire.Claims) string {
		tok, err := cloudwire.SignToken(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	admin := cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{adminAudience}, Subject: "admin", Role: cloudwire.RoleAdmin, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	expired := admin
	expired.IssuedAt, expired.ExpiresAt = now.Add(-2*time.Hour), now.Add(-time.Hour)
	bridgeRole := admin
	bridgeRole.Role = cloudwire.RoleBridge
	cloudAudience := admin
	cloudAudience.Audience = cloudwire.Audience{cloudwire.DefaultAudience}
	otherIssuer := admin
	otherIssuer.Issuer = "another-agent"
	// algNone is the real admin token's claims under an alg none header.
	algNone := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + strings.Split(ta.a.adminToken, ".")[1] + "."
	real := ta.a.adminToken
	tampered := real[:len(real)-4] + strings.Map(func(r rune) rune {
		if r == 'A' {
			return 'B'
		}
		return 'A'
	}, real[len(real)-4:])
	cases := map[string]string{
		"no header":                  "",
		"empty bearer":               "Bearer ",
		"basic auth":                 "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+real)),
		"garbage":                    "Bearer not-a-token",
		"user token":                 "Bearer " + userToken(t, ta, "carol"),
		"bridge role":                "Bearer " + sign(ta.a.tokenKey, bridgeRole),
		"admin token of another key": "Bearer " + sign(otherKey, admin),
		"expired admin token":        "Bearer " + sign(ta.a.tokenKey, expired),
		"tampered signature":         "Bearer " + tampered,
		"admin role, cloud audience": "Bearer " + sign(ta.a.tokenKey, cloudAudience),
		"admin token of another iss": "Bearer " + sign(ta.a.tokenKey, otherIssuer),
		"alg none":                   "Bearer " + algNone,
		"token without signature":    "Bearer " + strings.Split(real, ".")[0],
	}
	for name, auth := range cases {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, ta.a.adminURL()+"/v1/admin/users/carol/phase", strings.NewReader(`{"phase":"shadow","reason":"x"}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
				t.Fatalf("status %d (%s), want 401 with WWW-Authenticate", resp.StatusCode, body)
			}
		})
	}
	if u, ok := ta.a.state.Get("carol"); ok && u.Phase != migrate.PhaseLegacy {
		t.Fatalf("a refused call moved carol to %s", u.Phase)
	}
	setPhases(t, ta.admin(), "carol", migrate.PhaseShadow) // the real token works
	tally("attacks_refused", len(cases))
}

// TestLogsHoldNoSecrets runs an agent at debug level with traffic both
// ways across the bridge, tokens issued and a certificate signed, and
// requires that its log holds no token, no key material and no message
// body.
func TestLogsHoldNoSecrets(t *testing.T) {
	dir := t.TempDir()
	var logs lockedBuffer
	cfg := agentPorts(t)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ta := startAgent(t, dir, cfg)
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	alice := newLegacyPhone(t, ta, "alice")
	alice.waitRoute(t, "bob", ta.a.brHost)
	bobToken := userToken(t, ta, "bob")
	bob := dialCloud(t, ta, "bob", "bob-laptop", 0)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	secretA, secretB := "body-"+uuid.NewString(), "body-"+uuid.NewString()
	if _, ack, err := alice.dev.Send(ctx, "bob", secretA); err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("alice → bob: %+v %v", ack, err)
	}
	if ev, _ := bob.next(t, cloudwire.KindMsg); ev.Text != secretA {
		t.Fatalf("bob got %+v", ev)
	}
	if _, err := bob.c.Send(ctx, cloudwire.Send{To: "alice", MsgID: uuid.Must(uuid.NewV7()).String(), Text: secretB}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-alice.recv:
		if m.Text != secretB {
			t.Fatalf("alice got %+v", m)
		}
	case <-time.After(within):
		t.Fatal("alice never got bob's message")
	}
	// A refused handshake (logged at debug) must not log the token either.
	_, otherKey, _ := ed25519.GenerateKey(nil)
	forged, err := cloudwire.SignToken(otherKey, cloudwire.Claims{Issuer: cloudwire.DefaultIssuer, Audience: cloudwire.Audience{cloudwire.DefaultAudience}, Subject: "bob", Role: cloudwire.RoleUser, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+ta.a.cloudLn.Addr().String()+"/v1/ws", nil)
	req.Header.Set("Authorization", "Bearer "+forged)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	req.Header.Set("Sec-WebSocket-Protocol", cloudwire.Subprotocol)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("forged token: status %d, want 401", resp.StatusCode)
	}
	ta.stop()

	out := logs.String()
	if !strings.Contains(out, "component=") {
		t.Fatalf("the log captured nothing useful:\n%s", out)
	}
	secrets := map[string]string{"message body alice→bob": secretA, "message body bob→alice": secretB}
	for name, tok := range map[string]string{"admin token": ta.a.adminToken, "bob's token": bobToken} {
		secrets[name] = tok
		secrets[name+" signature"] = tok[strings.LastIndex(tok, ".")+1:]
	}
	secrets["forged token"] = forged
	for _, file := range []string{"token.key", "authority.key", "supernode.key", "bridge.key"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.TrimSpace(b)
		secrets[file] = string(b)
		secrets[file+" (hex)"] = hex.EncodeToString(b)
		secrets[file+" (base64)"] = base64.StdEncoding.EncodeToString(b)
		secrets[file+" (base64url)"] = base64.RawURLEncoding.EncodeToString(b)
	}
	seed := ta.a.tokenKey.Seed()
	secrets["token key seed (hex)"] = hex.EncodeToString(seed)
	secrets["token key seed (base64)"] = base64.StdEncoding.EncodeToString(seed)
	for name, s := range secrets {
		if len(s) < 16 {
			t.Fatalf("%s is too short to search for: %q", name, s)
		}
		if strings.Contains(out, s) {
			t.Errorf("the log holds the %s", name)
		}
	}
	t.Logf("%d log bytes searched for %d secrets", len(out), len(secrets))
}
