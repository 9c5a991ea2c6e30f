package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// retireWarning saves a policy for platform in its warning stage (soft
// block in two days) through the admin API.
func retireWarning(t *testing.T, ta *testAgent, platform, below string) {
	t.Helper()
	now := time.Now().UTC()
	req := retireRequest{Platform: platform, Below: below, UpdateURL: "https://example.test/update", Reason: "test",
		Schedule: []migrate.StageAt{{Stage: migrate.StageWarning, At: now.Add(-time.Hour)}, {Stage: migrate.StageSoftBlock, At: now.Add(48 * time.Hour)}}}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var out retireResponse
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/versions/retire", req, &out); err != nil {
		t.Fatal(err)
	}
}

// TestCloudWarningNoticeOnce checks the cloud's warning stage with a real
// agent: an admitted hello gets the notice in its welcome, and one system
// event from ferry-notices in its history, not two after a reconnect (the
// reconnect replays the whole inbox and still finds one).
func TestCloudWarningNoticeOnce(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	retireWarning(t, ta, "web", "2.0")
	setPhases(t, ta.admin(), "bob", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)

	notices := func(d *cloudDevice) []cloudwire.Event {
		var out []cloudwire.Event
		for {
			select {
			case ev := <-d.c.Events(): // the initial sync's events are queued before Synced
				if ev.Kind == cloudwire.KindSystem && ev.From == cloudwire.SystemContact {
					out = append(out, ev)
				}
			default:
				return out
			}
		}
	}
	for i := range 2 {
		d := dialCloud(t, ta, "bob", "web", 0)
		if w := d.c.Welcome(); !strings.Contains(w.Notice, "2.0") || !strings.Contains(w.Notice, "https://example.test/update") {
			t.Fatalf("hello %d: welcome notice %q", i+1, w.Notice)
		}
		got := notices(d)
		if len(got) != 1 || got[0].Text != d.c.Welcome().Notice || got[0].Conv != cloudwire.DirectConversationID(cloudwire.SystemContact, "bob") {
			t.Fatalf("hello %d: notices in the synced history %+v, want the one notice", i+1, got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), within)
		page, err := d.c.History(ctx, cloudwire.History{Conv: got[0].Conv})
		cancel()
		if err != nil || len(page.Msgs) != 1 || page.Msgs[0].Kind != cloudwire.KindSystem || page.Msgs[0].From != cloudwire.SystemContact {
			t.Fatalf("hello %d: notices conversation %+v, %v; want one system message", i+1, page, err)
		}
		d.c.Close()
	}
	n := metricValues(t, ta, "gateway_versions_notices_total")
	if n["cloud/delivered"] != 1 || n["cloud/repeat"] != 1 {
		t.Fatalf("gateway_versions_notices_total %v, want cloud delivered 1 and repeat 1", n)
	}
	if d := metricValues(t, ta, "gateway_versions_decisions_total"); d["warn/web/warning"] != 2 {
		t.Fatalf("decisions %v, want one warn per hello", d)
	}
}

// TestLegacyWarningNoticeOnce checks the overlay's warning stage with a
// real agent and device: an admitted registration carries the notice
// (legacy.Device.Notice), and the device gets one stored message from
// ferry-notices, not one per registration.
func TestLegacyWarningNoticeOnce(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	retireWarning(t, ta, "desktop", "8.0")
	p := newLegacyPhone(t, ta, "alice") // desktop 7.4.1, registers with fetch
	if n := p.dev.Notice(); !strings.Contains(n, "8.0") || !strings.Contains(n, "https://example.test/update") {
		t.Fatalf("registration notice %q", n)
	}
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		err := p.dev.Register(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if p.dev.Notice() == "" {
			t.Fatal("a later registration carries no notice")
		}
	}
	p.mu.Lock()
	var got []legacywire.ChatMessage
	for _, m := range p.got {
		if m.From == legacywire.NoticesUser {
			got = append(got, m)
		}
	}
	p.mu.Unlock()
	if len(got) != 1 || got[0].Text != p.dev.Notice() || got[0].To != "alice" {
		t.Fatalf("messages from %s: %+v, want the one notice", legacywire.NoticesUser, got)
	}
	n := metricValues(t, ta, "gateway_versions_notices_total")
	if n["legacy/delivered"] != 1 || n["legacy/repeat"] != 2 {
		t.Fatalf("gateway_versions_notices_total %v, want legacy delivered 1 and repeat 2", n)
	}
}

// TestLegacyChatCeiling keeps migrate's copy of the highest legacy chat
// version, which splits pre-split min_protocol values between the
// networks, equal to the overlay's.
func TestLegacyChatCeiling(t *testing.T) {
	p, err := migrate.ParsePolicy([]byte(`{"platform":"x","min_protocol":` + strconv.Itoa(legacy.LatestChatVersion) + `}`))
	if err != nil || p.MinLegacyProtocol != legacy.LatestChatVersion {
		t.Fatalf("min_protocol %d (the latest chat version) read as %+v, %v; want a legacy minimum", legacy.LatestChatVersion, p, err)
	}
	p, err = migrate.ParsePolicy([]byte(`{"platform":"x","min_protocol":` + strconv.Itoa(legacy.LatestChatVersion+1) + `}`))
	if err != nil || p.MinCloudProtocol != legacy.LatestChatVersion+1 {
		t.Fatalf("min_protocol above the latest chat version read as %+v, %v; want a cloud minimum", p, err)
	}
}
