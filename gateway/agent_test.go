package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
)

// testAgent is an agent running in this test process on fixed loopback
// ports, so it can be stopped and started again at the same addresses.
type testAgent struct {
	t      testing.TB
	cfg    agentConfig
	a      *agent
	cancel context.CancelFunc
	done   chan error
}

// startCoreAgent starts an agent with the supernode and cloud roles and
// NATS on a loopback port, on a fresh data directory, for tests that run
// the bridge apart (in its own process or agent): it returns the agent and
// its directory, whose keys the bridge shares; ta.natsURL() reaches its
// engine.
func startCoreAgent(t *testing.T) (*testAgent, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := agentPorts(t)
	cfg.Roles = []string{roleSupernode, roleCloud}
	cfg.NatsListen = freeAddr(t)
	return startAgent(t, dir, cfg), dir
}

// natsURL is the URL of the agent's NATS listener (cfg.NatsListen).
func (ta *testAgent) natsURL() string { return "nats://" + ta.cfg.NatsListen }

// agentPorts picks free loopback ports for the four listeners.
func agentPorts(tb testing.TB) agentConfig {
	tb.Helper()
	return agentConfig{
		Listen:       freeAddr(tb),
		AdminListen:  freeAddr(tb),
		LegacyListen: "/ip4/127.0.0.1/tcp/" + freePort(tb),
		BridgeListen: "/ip4/127.0.0.1/tcp/" + freePort(tb),
	}
}

func freeAddr(tb testing.TB) string { return "127.0.0.1:" + freePort(tb) }

// freePort is a loopback port no one listens on (enginetest.FreePort).
func freePort(tb testing.TB) string { return enginetest.FreePort(tb) }

// startAgent runs an agent on dir with cfg's ports until the test ends or
// stop is called.
func startAgent(tb testing.TB, dir string, cfg agentConfig) *testAgent {
	tb.Helper()
	cfg.DataDir = dir
	cfg.StopTimeout = 15 * time.Second
	if cfg.Logger == nil && testing.Verbose() { // a test may capture the log itself
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{t: tb, cfg: cfg, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan *agent, 1)
	go func() { ta.done <- runAgent(ctx, cfg, func(a *agent) { ready <- a }) }()
	select {
	case ta.a = <-ready:
	case err := <-ta.done:
		cancel()
		tb.Fatalf("agent did not start: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		tb.Fatal("agent did not start within 60s")
	}
	var once sync.Once
	tb.Cleanup(func() { once.Do(func() { ta.stopErr() }) })
	return ta
}

// stop stops the agent and fails the test if it did not stop cleanly.
func (ta *testAgent) stop() {
	ta.t.Helper()
	if err := ta.stopErr(); err != nil {
		ta.t.Fatalf("agent stop: %v", err)
	}
}

func (ta *testAgent) stopErr() error {
	if ta.done == nil {
		return nil
	}
	ta.cancel()
	defer func() { ta.done = nil }()
	select {
	case err := <-ta.done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("agent did not return within 30s of cancel")
	}
}

func (ta *testAgent) admin() *adminClient {
	ta.t.Helper()
	c, err := newAdminClient(ta.a.adminURL(), ta.a.adminToken)
	if err != nil {
		ta.t.Fatal(err)
	}
	return c
}

// setPhases walks a user through phases via the admin API.
func setPhases(tb testing.TB, c *adminClient, user string, phases ...migrate.Phase) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range phases {
		var u migrate.User
		if err := c.do(ctx, http.MethodPost, "/v1/admin/users/"+user+"/phase", phaseRequest{Phase: string(p), Reason: "test"}, &u); err != nil {
			tb.Fatalf("set %s to %s: %v", user, p, err)
		}
		if u.Phase != p {
			tb.Fatalf("set %s to %s: record says %s", user, p, u.Phase)
		}
	}
}

func TestAdminAPIRequiresToken(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	url := ta.a.adminURL() + "/v1/admin/users/carol/phase"
	for name, token := range map[string]string{"none": "", "garbage": "Bearer nope", "user token": "Bearer " + userToken(t, ta, "carol")} {
		t.Run(name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"phase":"shadow","reason":"x"}`))
			if token != "" {
				req.Header.Set("Authorization", token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", resp.StatusCode)
			}
		})
	}
	if _, ok := ta.a.state.Get("carol"); ok {
		t.Fatal("an unauthenticated call created a record")
	}
	// Metrics and health need no token.
	for _, path := range []string{"/metrics", "/healthz"} {
		resp, err := http.Get(ta.a.adminURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		if path == "/metrics" {
			for _, name := range []string{"gateway_migration_users", "gateway_bridge_messages_total", "gateway_cloud_sessions", "gateway_legacy_peers"} {
				if !strings.Contains(string(body), "\n"+name) {
					t.Errorf("/metrics lacks %s", name)
				}
			}
		}
	}
}

func userToken(tb testing.TB, ta *testAgent, user string) string {
	tb.Helper()
	var out map[string]string
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/cloud/tokens", tokenRequest{User: user}, &out); err != nil {
		tb.Fatal(err)
	}
	return out["token"]
}

// auditEvents runs `gateway audit ARGS -format json` through cli and
// returns the events.
func auditEvents(tb testing.TB, cli func(...string) (string, error), args ...string) []migrate.AuditEvent {
	tb.Helper()
	out, err := cli(append([]string{"audit", "-format", "json"}, args...)...)
	if err != nil {
		tb.Fatalf("audit %v: %v\n%s", args, err, out)
	}
	var audit map[string][]migrate.AuditEvent
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		tb.Fatal(err)
	}
	return audit["events"]
}

// TestUsersCLI drives the admin CLI against a running agent: a legal move, a
// refused one (non-zero exit, clear message, nothing changed), listing and
// JSON output.
func TestUsersCLI(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	cli := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", ta.a.adminURL(), "-token", ta.a.adminToken)
		err := run(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := cli("users", "set-phase", "dave", "shadow", "-reason", "pilot", "-op", "op-1"); err != nil || !strings.Contains(out, "shadow") {
		t.Fatalf("set-phase: %v\n%s", err, out)
	}
	// Repeating the same operation changes nothing.
	before, _ := ta.a.state.Get("dave")
	if out, err := cli("users", "set-phase", "dave", "shadow", "-reason", "pilot", "-op", "op-1"); err != nil {
		t.Fatalf("repeated op: %v\n%s", err, out)
	}
	if after, _ := ta.a.state.Get("dave"); after.Revision != before.Revision {
		t.Fatalf("repeated op changed the record: revision %d → %d", before.Revision, after.Revision)
	}
	out, err := cli("users", "set-phase", "dave", "finalized", "-reason", "skip ahead")
	if err == nil || !strings.Contains(err.Error(), "cannot move") {
		t.Fatalf("illegal transition: err %v, out %s", err, out)
	}
	if u, _ := ta.a.state.Get("dave"); u.Phase != migrate.PhaseShadow {
		t.Fatalf("after a refused move dave is %s", u.Phase)
	}
	if _, err := cli("users", "set-phase", "dave", "ready"); err == nil {
		t.Fatal("set-phase without -reason succeeded")
	}
	if out, err := cli("users", "list", "-phase", "shadow"); err != nil || !strings.Contains(out, "dave") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	if out, err := cli("users", "get", "dave", "-format", "json"); err != nil || !strings.Contains(out, `"phase": "shadow"`) {
		t.Fatalf("get json: %v\n%s", err, out)
	}
	if _, err := cli("users", "get", "nobody"); err == nil {
		t.Fatal("get of an unknown user succeeded")
	}
	if _, err := cli("users", "list", "-phase", "nowhere"); err == nil {
		t.Fatal("list with an invalid phase succeeded")
	}
}

func TestParseArgs(t *testing.T) {
	tests := []struct {
		args    []string
		pos     []string
		reason  string
		wantErr bool
	}{
		{args: []string{"bob", "cloud", "-reason", "x"}, pos: []string{"bob", "cloud"}, reason: "x"},
		{args: []string{"-reason", "y", "bob"}, pos: []string{"bob"}, reason: "y"},
		{args: []string{"bob", "-nope"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flagSetForTest()
			pos, err := parseArgs(fs, tt.args)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v", err)
			}
			if tt.wantErr {
				return
			}
			if strings.Join(pos, ",") != strings.Join(tt.pos, ",") || fs.Lookup("reason").Value.String() != tt.reason {
				t.Fatalf("pos %v reason %q", pos, fs.Lookup("reason").Value)
			}
		})
	}
}

func flagSetForTest() *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("reason", "", "")
	return fs
}

// TestAgentOnExternalNATS runs the agent against a NATS server outside the
// agent (-nats-url) and checks that phases live there: a second agent with
// its own, empty data directory sees them.
func TestAgentOnExternalNATS(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("external nats not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	cfg := agentPorts(t)
	cfg.NatsURL = srv.ClientURL()
	ta := startAgent(t, t.TempDir(), cfg)
	if ta.a.eng.Embedded() {
		t.Fatal("agent with -nats-url started an embedded server")
	}
	if d := ta.a.eng.SyncInterval(); d != 0 {
		t.Fatalf("external engine reports a sync interval of %v, want 0", d)
	}
	setPhases(t, ta.admin(), "erin", migrate.PhaseShadow)
	ta.stop()

	cfg = agentPorts(t)
	cfg.NatsURL = srv.ClientURL()
	tb := startAgent(t, t.TempDir(), cfg)
	if u, ok := tb.a.state.Get("erin"); !ok || u.Phase != migrate.PhaseShadow {
		t.Fatalf("second agent on the same NATS sees erin as %+v", u)
	}
}

// TestAgentStartFailsWhenAdminPortTaken checks that a start failure after the
// cloud listener already serves does not hang: the servers are shut down
// before the parts are waited for.
func TestAgentStartFailsWhenAdminPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := agentPorts(t)
	cfg.AdminListen = taken.Addr().String()
	cfg.DataDir = t.TempDir()
	cfg.StopTimeout = 15 * time.Second
	done := make(chan error, 1)
	go func() {
		done <- runAgent(context.Background(), cfg, func(*agent) { t.Error("agent started on a taken admin port") })
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "admin listener") {
			t.Fatalf("runAgent = %v, want an admin listener error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runAgent did not return within 30s of a failed start")
	}
}
