package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/migrate"
)

// TestStatusCLI runs `gateway status` against a full agent: the JSON answer
// carries every part, every phase and the users moved; the text form shows
// them on one screen; a stray argument is a usage error.
func TestStatusCLI(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	cli := func(args ...string) (string, error) {
		var out, errOut strings.Builder
		args = append(args, "-addr", ta.a.adminURL(), "-token", ta.a.adminToken)
		err := run(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	setPhases(t, ta.admin(), "erin", migrate.PhaseShadow)
	ctx := context.Background()
	for i, d := range []struct{ user, platform, version string }{
		{"vb-1", "android", "5.1.0"}, {"vb-2", "android", "5.1.7"}, {"vb-3", "ios", "6.0.0"},
	} {
		if _, err := ta.a.store.SeeDevice(ctx, d.user, migrate.Device{ID: fmt.Sprint("d", i), Platform: d.platform, ClientVersion: d.version}); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, within, func() bool { _, ok := ta.a.state.Get("vb-3"); return ok }, func() string { return "devices not in memdb" })

	out, err := cli("status", "-format", "json")
	if err != nil {
		t.Fatalf("status -format json: %v\n%s", err, out)
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if want := ta.a.eng.SyncInterval().String(); st.Engine.Mode != "embedded" || ta.a.eng.SyncInterval() <= 0 || st.Engine.SyncInterval != want {
		t.Errorf("engine = %+v, want embedded with the engine's sync interval %s", st.Engine, want)
	}
	for _, p := range migrate.Phases() {
		if _, ok := st.Users[string(p)]; !ok {
			t.Errorf("users: phase %s missing in %v", p, st.Users)
		}
	}
	if st.Users[string(migrate.PhaseShadow)] != 1 {
		t.Errorf("users in shadow = %d, want 1", st.Users[string(migrate.PhaseShadow)])
	}
	if len(st.Versions) < 2 || st.Versions[0].Platform != "android" || st.Versions[0].Devices != 2 || st.Versions[0].Users != 2 {
		t.Errorf("top version bands %+v, want android's band of 2 devices and 2 users first", st.Versions)
	}
	if st.Supernode == nil || st.Cloud == nil || st.Bridge == nil {
		t.Fatalf("a full agent's status lacks a part: %+v", st)
	}
	if len(st.Bridge.Links) == 0 {
		t.Errorf("bridge: no link in status")
	}
	for _, l := range st.Bridge.Links {
		if l.State == "" || (l.State != bridge.LinkConnected && l.State != bridge.LinkConnecting && l.State != bridge.LinkReconnecting) {
			t.Errorf("bridge link %s in state %q", l.Name, l.State)
		}
	}

	text, err := cli("status")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, text)
	}
	t.Logf("gateway status:\n%s", text)
	for _, want := range []string{"embedded NATS JetStream", "shadow", "supernode", "cloud", "bridge link", "bridge outbox", "campaigns", "versions", "android " + st.Versions[0].Band} {
		if !strings.Contains(text, want) {
			t.Errorf("status text lacks %q:\n%s", want, text)
		}
	}

	if _, err := cli("status", "extra"); !errors.Is(err, errUsage) {
		t.Errorf("status extra: err = %v, want a usage error", err)
	}
}
