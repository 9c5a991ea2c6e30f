package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// shadowPhone is a chat v2 legacy device that remembers its user's
// messages (sent and received) and serves them to the bridge's backfill.
// shadowPhone is a chat v2 legacy device whose history (which the device
// keeps and serves to the bridge's backfill by itself) the test can reach.
type shadowPhone struct {
	*versionedPhone
	ta   *testAgent
	user string
	hist *legacy.History
}

func newShadowPhone(t *testing.T, ta *testAgent, user string) *shadowPhone {
	t.Helper()
	p := &shadowPhone{ta: ta, user: user, hist: legacy.NewHistory(0)}
	p.versionedPhone = newVersionedPhoneWith(t, ta, user, 2, func(c *legacy.DeviceConfig) {
		c.History = p.hist
	})
	return p
}

// mirrorCopies is how many shadow copies the bridge's mirror has handled.
func mirrorCopies(t *testing.T, ta *testAgent) float64 {
	t.Helper()
	var n float64
	for _, r := range []string{"written", "repeat", "refused", "skipped", "error"} {
		n += seriesValue(t, ta, `gateway_bridge_shadow_copies_total{result="`+r+`",source="mirror"}`)
	}
	return n
}

// send sends msg as the device does: the native fan-out to the
// recipient's devices, then, by itself, a shadow copy to the recipient's
// mirror if it has one. It reports whether the mirror got the copy (the
// device sends it before SendMessage returns).
func (p *shadowPhone) send(t *testing.T, ctx context.Context, msg legacywire.ChatMessage) bool {
	t.Helper()
	before := mirrorCopies(t, p.ta)
	ack, err := p.dev.SendMessage(ctx, msg)
	if err != nil || !ack.Delivered() {
		t.Fatalf("%s → %s: %+v %v", msg.From, msg.To, ack, err)
	}
	return mirrorCopies(t, p.ta) > before
}

func (p *shadowPhone) newMsg(to, text string) legacywire.ChatMessage {
	return legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: p.user, To: to, Text: text, SentAt: time.Now().UTC().Truncate(time.Millisecond)}
}

// waitMirror waits until a lookup of user from p shows a live mirror
// (want) or none.
func (p *shadowPhone) waitMirror(t *testing.T, ctx context.Context, user string, want bool) {
	t.Helper()
	waitUntil(t, within, func() bool {
		look, err := p.dir.Lookup(ctx, user)
		_, ok := look.MirrorTarget()
		return err == nil && ok == want
	}, func() string { return fmt.Sprintf("lookup of %s: mirror never %v", user, want) })
}

func waitShadowStats(t *testing.T, ta *testAgent, user string, cond func(bridge.ShadowStats) bool) bridge.ShadowStats {
	t.Helper()
	var st bridge.ShadowStats
	waitUntil(t, within, func() bool {
		st, _ = ta.a.bridge.ShadowStats(user)
		return cond(st)
	}, func() string { return fmt.Sprintf("shadow stats of %s: %+v", user, st) })
	return st
}

// TestShadowDualWriteBackfillCompare runs the shadow mirror on a real agent
// with real legacy devices: a gap from before shadow is backfilled, a
// message to a shadow user is delivered natively and written to the cloud
// once (a resend changes nothing), a chat v1 sender's message (which
// cannot be mirrored) reaches the cloud by backfill and is counted missing,
// an altered copy on the device counts as a mismatch, the campaign gates read the bridge's summary, the cloud
// holds each message once after the flip, and leaving shadow withdraws the
// mirror.
func TestShadowDualWriteBackfillCompare(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	alice := newShadowPhone(t, ta, "sh-alice")
	sam := newShadowPhone(t, ta, "sh-sam")

	// Before shadow: legacy to legacy, nothing reaches the bridge.
	gap := alice.newMsg("sh-sam", "before shadow")
	if alice.send(t, ctx, gap) {
		t.Fatal("a legacy user has a mirror")
	}
	if m := sam.nextMsg(t); m.ID != gap.ID {
		t.Fatalf("sam got %+v", m)
	}

	// Sam enters shadow: a mirror route, and a backfill of the gap.
	setPhases(t, ta.admin(), "sh-sam", migrate.PhaseShadow)
	alice.waitMirror(t, ctx, "sh-sam", true)
	st := waitShadowStats(t, ta, "sh-sam", func(s bridge.ShadowStats) bool { return s.BackfillDone })
	if st.Missing != 1 || st.Samples != 0 {
		t.Fatalf("after backfill: %+v, want the gap written (missing 1)", st)
	}

	// A message to the shadow user: native delivery and one cloud copy.
	m1 := alice.newMsg("sh-sam", "hello in shadow")
	if !alice.send(t, ctx, m1) {
		t.Fatal("the mirror did not take the copy")
	}
	if m := sam.nextMsg(t); m.ID != m1.ID || m.Text != m1.Text {
		t.Fatalf("sam got %+v", m)
	}
	st = waitShadowStats(t, ta, "sh-sam", func(s bridge.ShadowStats) bool { return s.Samples == 1 })
	if st.Mismatches != 0 {
		t.Fatalf("mirrored copy: %+v", st)
	}
	// A resend (same id) is taken and changes nothing.
	if !alice.send(t, ctx, m1) {
		t.Fatal("the mirror refused a resend")
	}
	waitMetric(t, ta, `gateway_bridge_shadow_copies_total{result="repeat",source="mirror"}`)
	if st, _ = ta.a.bridge.ShadowStats("sh-sam"); st.Samples != 1 || st.Missing != 1 {
		t.Fatalf("after a resend: %+v", st)
	}

	// A chat v1 sender knows nothing of mirrors: its message reaches sam
	// natively and the cloud only at the next backfill, counted missing.
	old := newVersionedPhone(t, ta, "sh-old", 1)
	v1, ack, err := old.dev.Send(ctx, "sh-sam", "from an old client")
	if err != nil || !ack.Delivered() {
		t.Fatalf("v1 send: %+v %v", ack, err)
	}
	if m := sam.nextMsg(t); m.ID != v1.ID {
		t.Fatalf("sam got %+v", m)
	}

	// The device's copy of m1 is altered: the next backfill finds the
	// cloud copy differs.
	altered := m1
	altered.Text = "hello in shadow (edited on the phone)"
	sam.hist.Add(altered)
	if err := ta.a.bridge.Backfill(ctx, "sh-sam"); err != nil {
		t.Fatal(err)
	}
	st, _ = ta.a.bridge.ShadowStats("sh-sam")
	if st.Samples != 2 || st.Mismatches != 1 || st.Missing != 2 || len(st.LastMismatches) != 1 || st.LastMismatches[0] != m1.ID {
		t.Fatalf("after an altered copy: %+v", st)
	}
	if v := seriesValue(t, ta, `gateway_bridge_shadow_compare_total{result="mismatch"}`); v != 1 {
		t.Fatalf("mismatch counter %v", v)
	}
	// The campaign gates read the same summary.
	var gate shadowGate
	gate.attach(ta.a.bridge)
	if r, ok := gate.Shadow("sh-sam"); !ok || !r.BackfillDone || r.Compared != 2 || r.Mismatched != 1 {
		t.Fatalf("gate report %+v %v", r, ok)
	}
	if _, ok := gate.Shadow("sh-alice"); ok {
		t.Fatal("a report for a user never in shadow")
	}
	// The copies were never delivered by the bridge: sam's device got
	// each message once, natively.
	if v := seriesValue(t, ta, `gateway_bridge_messages_total{direction="cloud_to_legacy",result="ok"}`); v != 0 {
		t.Fatalf("the bridge delivered %v shadow copies", v)
	}

	// After the flip, the cloud holds the conversation, each message once
	// and as sent.
	setPhases(t, ta.admin(), "sh-sam", migrate.PhaseReady, migrate.PhaseCloud)
	laptop := dialCloud(t, ta, "sh-sam", "sh-sam-laptop", 0)
	seen := map[string]int{}
	for _, peer := range []string{"sh-alice", "sh-old"} {
		page, err := laptop.c.History(ctx, cloudwire.History{Conv: cloudwire.DirectConversationID(peer, "sh-sam"), Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Msgs {
			if m.Kind != cloudwire.KindMsg {
				continue
			}
			seen[m.MsgID]++
			if m.MsgID == m1.ID && m.Text != m1.Text {
				t.Errorf("cloud copy of m1 reads %q", m.Text)
			}
		}
	}
	if seen[gap.ID] != 1 || seen[m1.ID] != 1 || seen[v1.ID] != 1 || len(seen) != 3 {
		t.Fatalf("cloud history %v, want the gap, m1 and the v1 message once each", seen)
	}

	// Leaving shadow withdraws the mirror: copies stop.
	lee := newShadowPhone(t, ta, "sh-lee")
	setPhases(t, ta.admin(), "sh-lee", migrate.PhaseShadow)
	alice.waitMirror(t, ctx, "sh-lee", true)
	setPhases(t, ta.admin(), "sh-lee", migrate.PhaseLegacy)
	alice.waitMirror(t, ctx, "sh-lee", false)
	m2 := alice.newMsg("sh-lee", "back to legacy")
	if alice.send(t, ctx, m2) {
		t.Fatal("a copy was mirrored after the mirror was withdrawn")
	}
	if m := lee.nextMsg(t); m.ID != m2.ID {
		t.Fatalf("lee got %+v", m)
	}
	waitMetric(t, ta, `gateway_bridge_route_publications_total{kind="mirror_withdrawal",result="ok"}`)
}
