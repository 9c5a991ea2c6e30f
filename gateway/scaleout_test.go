package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/gateway/engine/enginetest"
	"github.com/ferrygw/ferry/migrate"
	"github.com/ferrygw/ferry/migrate/migratestore"
)

// Size of the scale-out test: users the campaign moves, and messages each
// way between two cloud users while it runs.
const (
	scaleUsers    = 600
	scaleMessages = 150
	scalePace     = 40 * time.Millisecond
)

// scaleAgent is an agent process on the cluster with its loopback addresses.
type scaleAgent struct {
	name         string
	proc         *agentProcess
	cloud, admin string // loopback host:port of the cloud and admin listeners
	adminToken   string
}

// startScaleAgent starts `gateway agent -roles cloud` on the cluster with
// replicated streams, in dir.
func startScaleAgent(t *testing.T, bin, name, dir string, c *enginetest.Cluster) *scaleAgent {
	t.Helper()
	a := &scaleAgent{name: name, cloud: freeAddr(t), admin: freeAddr(t)}
	args := []string{"agent", "-data-dir", dir, "-roles", roleCloud,
		"-nats-url", c.URLs, "-nats-replicas", "3", "-campaign-tick", "50ms",
		"-listen", a.cloud, "-admin-listen", a.admin, "-log-level", "warn"}
	a.proc = startProcess(t, bin, args...)
	tok, err := os.ReadFile(filepath.Join(dir, "admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	a.adminToken = strings.TrimSpace(string(tok))
	return a
}

func (a *scaleAgent) client(t *testing.T) *adminClient {
	t.Helper()
	c, err := newAdminClient(a.admin, a.adminToken)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (a *scaleAgent) wsURL() string { return "ws://" + a.cloud + "/v1/ws" }

// shareKeys copies the keys that must be the same on every agent of a
// deployment (the network authority, the cloud token key, the admin token)
// from one data directory to another, as a production rollout mounts them.
func shareKeys(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"authority.key", "token.key", "admin-token"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestScaleOutSurvivesNodeAndAgentLoss runs two agents on a three-node NATS
// cluster with every stream and bucket replicated three times. While a
// campaign moves users and two cloud users (one on each agent) stream
// messages at each other, the agent holding the campaign driver's lease is
// killed with SIGKILL and one NATS server is shut down. The campaign must
// finish under the other agent, moving exactly the users its plan named,
// and the checker must find every acknowledged message once, in order.
func TestScaleOutSurvivesNodeAndAgentLoss(t *testing.T) {
	bin := buildGateway(t)
	cluster := enginetest.StartCluster(t, 3)
	dirA, dirB := t.TempDir(), t.TempDir()
	agentA := startScaleAgent(t, bin, "a", dirA, cluster)
	shareKeys(t, dirA, dirB)
	agentB := startScaleAgent(t, bin, "b", dirB, cluster)
	why := func() string {
		return "\nagent a log:\n" + agentA.proc.stderr.String() + "\nagent b log:\n" + agentB.proc.stderr.String()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// The population, written to the replicated users bucket by a store of
	// the test's own, which also watches the outcome.
	js := cluster.JetStream(t)
	state, err := migrate.NewState()
	if err != nil {
		t.Fatal(err)
	}
	store, err := migratestore.New(ctx, js, state, migratestore.Config{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	storeCtx, storeStop := context.WithCancel(ctx)
	storeDone := make(chan struct{})
	go func() { defer close(storeDone); store.Run(storeCtx) }()
	defer func() { storeStop(); <-storeDone }()
	for i := range scaleUsers {
		if _, err := store.SeeDevice(ctx, fmt.Sprintf("scale-%04d", i), migrate.Device{ID: "d", Platform: "android", ClientVersion: "6.1.0"}); err != nil {
			t.Fatal(err)
		}
	}

	cli := func(a *scaleAgent, args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", a.admin, "-token", a.adminToken)
		err := run(ctx, args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	// The campaign's plan must see the whole population on both agents.
	def := fmt.Sprintf(`{"name":"scale","filter":{"platforms":["android"]},"steps":[{"target_bp":10000}],"pace":{"per_minute":%d}}`, scaleUsers*12)
	file := filepath.Join(t.TempDir(), "scale.json")
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(agentA, "campaign", "create", "-f", file); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	var plan migrate.Plan
	waitUntil(t, 30*time.Second, func() bool {
		out, err := cli(agentB, "campaign", "plan", "scale", "-format", "json")
		return err == nil && json.Unmarshal([]byte(out), &plan) == nil && plan.Users == scaleUsers
	}, func() string { return fmt.Sprintf("plan on agent b: %+v", plan) + why() })
	want := plan.Steps[0].Move
	if want != scaleUsers {
		t.Fatalf("plan moves %d users, want all %d", want, scaleUsers)
	}

	// Traffic between carol (on agent a first) and dave (on agent b first);
	// each fails over to the other agent when its own is gone.
	var carolTok, daveTok map[string]string
	for user, out := range map[string]*map[string]string{"carol": &carolTok, "dave": &daveTok} {
		if err := agentA.client(t).do(ctx, http.MethodPost, "/v1/admin/cloud/tokens", tokenRequest{User: user}, out); err != nil {
			t.Fatal(err)
		}
	}
	for _, user := range []string{"carol", "dave"} {
		setPhases(t, agentA.client(t), user, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	ck := newChecker()
	carol := startCloudUser(t, []string{agentA.wsURL(), agentB.wsURL()}, carolTok["token"], "carol", "dave", ck)
	dave := startCloudUser(t, []string{agentB.wsURL(), agentA.wsURL()}, daveTok["token"], "dave", "carol", ck)
	ck.plan(2 * scaleMessages)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = sendCloud(ctx, ck, carol, "dave", scaleMessages, scalePace) })
	wg.Go(func() { errs[1] = sendCloud(ctx, ck, dave, "carol", scaleMessages, scalePace) })

	if out, err := cli(agentA, "campaign", "start", "scale", "-yes", "-reason", "scale-out drill"); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	// Mid-campaign: kill the agent whose driver holds the lease, and one
	// NATS server.
	var st campaignStatus
	status := func(a *scaleAgent) bool {
		out, err := cli(a, "campaign", "status", "scale", "-format", "json")
		return err == nil && json.Unmarshal([]byte(out), &st) == nil
	}
	waitUntil(t, time.Minute, func() bool {
		return status(agentB) && st.Done >= want/5 && st.Driver.Holder != ""
	}, func() string { return fmt.Sprintf("campaign never got going: %+v", st) + why() })
	victim, survivor := agentA, agentB
	if strings.Contains(st.Driver.Holder, fmt.Sprintf("/%d/", agentB.proc.cmd.Process.Pid)) {
		victim, survivor = agentB, agentA
	}
	movedAtKill := st.Done
	if err := victim.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.proc.wait(t, 10*time.Second)
	cluster.Servers[0].Shutdown()
	killedAt := time.Now()
	t.Logf("killed agent %s (lease holder %q) with SIGKILL after %d of %d moves, and shut down NATS server 0",
		victim.name, st.Driver.Holder, movedAtKill, want)

	waitUntil(t, 2*time.Minute, func() bool {
		return status(survivor) && st.Campaign.State == migrate.CampaignCompleted
	}, func() string { return fmt.Sprintf("campaign did not complete on the survivor: %+v", st) + why() })
	if st.Done != want {
		t.Errorf("campaign completed with %d users moved, want %d", st.Done, want)
	}
	// carol and dave were put in cloud by hand.
	waitUntil(t, 30*time.Second, func() bool { return state.Snapshot().Count(migrate.PhaseCloud) == want+2 },
		func() string {
			return fmt.Sprintf("%d users in cloud in the replicated bucket, want %d+2", state.Snapshot().Count(migrate.PhaseCloud), want)
		})
	t.Logf("campaign completed on agent %s %s after the kill", survivor.name, time.Since(killedAt).Round(time.Millisecond))

	// Each move is audited exactly once, whichever agent made it, even the
	// moves the killed agent had in flight (each move's event is written
	// before its compare-and-set; events whose write never landed are not
	// answered).
	out, err := cli(survivor, "audit", "-campaign", "scale", "-format", "json")
	if err != nil {
		t.Fatalf("audit: %v\n%s", err, out)
	}
	var audit map[string][]migrate.AuditEvent
	if err := json.Unmarshal([]byte(out), &audit); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditTransition && e.Result == migrate.ResultOK {
			seen[e.User+"→"+e.To]++
		}
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("transition %s audited %d times", k, n)
		}
	}
	for i := range scaleUsers {
		for _, to := range []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud} {
			if k := fmt.Sprintf("scale-%04d→%s", i, to); seen[k] != 1 {
				t.Errorf("transition %s audited %d times, want once", k, seen[k])
			}
		}
	}
	t.Logf("audit: %d distinct transitions for %d users", len(seen), want)

	wg.Wait()
	if err := errs[0]; err != nil {
		t.Fatalf("%v\n%s%s", err, ck, why())
	}
	if err := errs[1]; err != nil {
		t.Fatalf("%v\n%s%s", err, ck, why())
	}
	ck.verify(t, time.Minute, 500*time.Millisecond, why)
	moved := carol
	if victim == agentB {
		moved = dave
	}
	moved.mu.Lock()
	defer moved.mu.Unlock()
	if moved.reconnects == 0 {
		t.Errorf("%s's device was on the killed agent but never reconnected", moved.user)
	}
	t.Logf("%s's device failed over %d times", moved.user, moved.reconnects)
	tallyFault(t, "kill_agent", 1)
	tallyFault(t, "stop_nats_node", 1)
}
