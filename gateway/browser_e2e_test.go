//go:build linux

package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudweb/cdptest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestBrowserTwoDevicesAndLegacyPeer drives the reference page, served by
// a real agent at "/", in real headless Chromium: two tabs are two devices
// of alice (phase cloud), bob is a legacy chat v2 phone on the overlay,
// carol a Go cloud client.
//
//   - bob's message appears on both tabs, unread; reading it in one tab
//     marks it read in the other, and bob's phone gets the read receipt;
//   - each tab publishes its presence (idle in the background, active in
//     front) and shows the other's; bob's presence and typing cross the
//     bridge and show on the page; typing in the page reaches bob's phone,
//     as typing and then as the message;
//   - carol calls alice: the tab alice used last rings first, the other
//     after the ring delay; answering in one tab stops the ringing in the
//     other with "answered elsewhere"; hanging up ends it everywhere.
//
// Screenshots of each step go to cdptest.ArtifactDir (FERRY_ARTIFACTS
// keeps them).
func TestBrowserTwoDevicesAndLegacyPeer(t *testing.T) {
	browser := cdptest.Start(t) // skips here, before the agent, without Chromium
	cfg := agentPorts(t)
	cfg.AllowedOrigins = []string{"http://" + cfg.Listen}
	cfg.CloudRingDelay = 500 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	for _, u := range []string{"alice", "carol"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	bob := newLivePhone(t, ta, "bob", 2)
	bob.waitRoute(t, "alice", ta.a.brHost)
	conv := cloudwire.DirectConversationID("alice", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Two tabs of alice, opened in the background: a third tab is in
	// front, so that neither reads what arrives until alice looks at it.
	tabA, tabB := browser.NewPage(t), browser.NewPage(t)
	front := browser.NewPage(t)
	front.Focus(t)
	for _, tab := range []struct {
		p      *cdptest.Page
		device string
	}{{tabA, "web-a"}, {tabB, "web-b"}} {
		tab.p.Navigate(t, "http://"+cfg.Listen+"/#token="+userToken(t, ta, "alice")+"&device="+tab.device)
		tab.p.WaitState(t, tab.device+" signed in and live", func(s cdptest.State) bool {
			return s.Status == "live" && s.User == "alice" && s.Device == tab.device
		})
	}
	// A page in the background says it is idle; each tab shows the other.
	tabA.WaitState(t, "web-b idle on web-a", devicePresence("alice", "web-b", cloudwire.PresenceIdle))
	tabB.WaitState(t, "web-a idle on web-b", devicePresence("alice", "web-a", cloudwire.PresenceIdle))

	// bob → alice: on both tabs, unread on both.
	sent, ack, err := bob.dev.Send(ctx, "alice", "hello alice, from my old phone")
	if err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("bob → alice: ack %+v, err %v", ack, err)
	}
	unread := func(s cdptest.State) bool {
		m, ok := s.Msg(sent.ID)
		c, _ := s.Conv(conv)
		return ok && m.From == "bob" && m.Text == sent.Text && !m.Read && c.Unread == 1
	}
	tabA.WaitState(t, "bob's message, unread, on web-a", unread)
	tabB.WaitState(t, "bob's message, unread, on web-b", unread)

	// alice switches to tab A: it reads the conversation on screen, tab B
	// shows the message read, and bob's phone gets the read receipt.
	tabA.Focus(t)
	read := func(s cdptest.State) bool {
		m, ok := s.Msg(sent.ID)
		c, _ := s.Conv(conv)
		return ok && m.Read && c.Unread == 0
	}
	tabA.WaitState(t, "bob's message read on web-a", read)
	tabB.WaitState(t, "bob's message read on web-b, read on web-a", read)
	if mark := tabB.Attr(t, `#msgs li[data-msg-id="`+sent.ID+`"]`, "data-read"); mark != "true" {
		t.Errorf("web-b's message element has data-read %q, want true", mark)
	}
	for r := bob.nextReceipt(t); r.MsgID != sent.ID || r.Status != legacywire.ReceiptRead; r = bob.nextReceipt(t) {
		if r.MsgID != sent.ID {
			t.Fatalf("bob got a receipt of %s, want of %s", r.MsgID, sent.ID)
		}
	}
	tabB.WaitState(t, "web-a active on web-b", devicePresence("alice", "web-a", cloudwire.PresenceActive))

	// bob's typing and presence cross the bridge.
	if n, err := bob.dev.SendTyping(ctx, "alice", true); err != nil || n != 1 {
		t.Fatalf("bob's typing: %d devices, %v", n, err)
	}
	tabA.WaitState(t, "bob typing on web-a", func(s cdptest.State) bool { return s.IsTyping(conv, "bob") })
	tabB.WaitState(t, "bob typing on web-b", func(s cdptest.State) bool { return s.IsTyping(conv, "bob") })
	if txt := tabA.Text(t, "#typing"); txt != "bob is typing…" {
		t.Errorf("typing line on web-a: %q", txt)
	}
	tabA.Screenshot(t, "1-web-a-read-and-typing")
	if _, err := bob.dev.SendTyping(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}
	tabA.WaitState(t, "bob's typing over on web-a", func(s cdptest.State) bool { return !s.IsTyping(conv, "bob") })
	for _, status := range []string{legacywire.PresenceIdle, legacywire.PresenceActive} {
		publishUntilPage(t, bob, tabA, status)
		if txt := tabA.Text(t, "#presence"); !strings.Contains(txt, "bob "+status) {
			t.Errorf("presence line on web-a: %q, want bob %s", txt, status)
		}
	}

	// alice types an answer in tab A: bob's phone sees her type, then the
	// message, then the typing end; the page kept inside the rate limit.
	const answer = "hi bob! typing this in the browser"
	tabA.Type(t, "#text", answer)
	if ty := bob.nextTyping(t, "alice"); !ty.Active || ty.To != "bob" {
		t.Fatalf("bob got typing %+v, want alice typing", ty)
	}
	tabA.Click(t, "#send")
	if m := bob.nextMsg(t); m.From != "alice" || m.Text != answer {
		t.Fatalf("bob got %+v, want alice's answer", m)
	}
	for ty := bob.nextTyping(t, "alice"); ty.Active; ty = bob.nextTyping(t, "alice") {
	}
	s := tabA.WaitState(t, "answer acknowledged", func(s cdptest.State) bool {
		return s.Outbox == 0 && slices.Contains(s.Texts(conv), "alice: "+answer)
	})
	if strings.Contains(s.LastError, "rate_limited") || s.TypingSent < 2 || s.TypingSent > len(answer) {
		t.Errorf("typing frames sent: %d for %d keys, last error %q", s.TypingSent, len(answer), s.LastError)
	}
	tabB.WaitState(t, "answer on web-b", func(s cdptest.State) bool {
		return slices.Contains(s.Texts(conv), "alice: "+answer)
	})

	// alice switches to tab B, which becomes her most recently active
	// device; carol calls.
	carol := dialCloud(t, ta, "carol", "carol-phone", 0)
	tabB.Focus(t)
	tabA.WaitState(t, "web-b active on web-a", devicePresence("alice", "web-b", cloudwire.PresenceActive))
	callID := uuid.Must(uuid.NewV7()).String()
	if _, err := carol.c.Call(ctx, cloudwire.Call{Op: cloudwire.CallInvite, CallID: callID, To: "alice", Media: "audio"}); err != nil {
		t.Fatalf("carol's invite: %v", err)
	}
	ringing := func(s cdptest.State) bool {
		return s.Call != nil && s.Call.ID == callID && s.Call.Incoming && s.Call.From == "carol" && s.Call.RingingHere
	}
	tabB.WaitState(t, "web-b ringing", ringing)
	sa := tabA.WaitState(t, "web-a ringing after the ring delay", ringing)
	sb := tabB.State(t)
	// Both tabs got the same ringing lists: web-b alone first, then both.
	for _, c := range []*cdptest.Call{sa.Call, sb.Call} {
		if len(c.Rang) < 2 || !slices.Equal(c.Rang[0], []string{"web-b"}) || !slices.Contains(c.Rang[len(c.Rang)-1], "web-a") {
			t.Errorf("ringing lists %q: want [web-b] first, then every device", c.Rang)
		}
	}
	if txt := tabB.Text(t, "#call-text"); txt != "Incoming call from carol" {
		t.Errorf("web-b's call banner says %q", txt)
	}
	if live := tabB.Attr(t, "#call", "aria-live"); live != "assertive" {
		t.Errorf("call region aria-live %q", live)
	}
	tabB.Screenshot(t, "2-web-b-ringing")
	shoot(t, tabA, "3-web-a-ringing")

	// alice answers in tab B: tab A stops ringing, answered elsewhere.
	tabB.Focus(t)
	tabB.Click(t, "#call-answer")
	tabB.WaitState(t, "web-b in the call", func(s cdptest.State) bool {
		return s.Call != nil && s.Call.State == cloudwire.CallActive && s.Call.Device == "web-b" && !s.Call.RingingHere
	})
	tabA.WaitState(t, "web-a answered elsewhere", func(s cdptest.State) bool {
		return s.Call != nil && s.Call.State == cloudwire.CallActive && s.Call.Reason == cloudwire.ReasonAnsweredElsewhere &&
			s.Call.Device == "web-b" && !s.Call.RingingHere
	})
	if hidden := tabA.Attr(t, "#call-answer", "hidden"); hidden == "" {
		t.Error("web-a still offers Answer after the call was answered elsewhere")
	}
	if txt := tabA.Text(t, "#call-text"); !strings.Contains(txt, "answered on web-b") {
		t.Errorf("web-a's call banner says %q", txt)
	}
	carol.nextLive(t, "the call answered on web-b", callStateIs(callID, cloudwire.CallActive, cloudwire.ReasonAnswered))
	tabB.Screenshot(t, "4-web-b-in-call")
	shoot(t, tabA, "5-web-a-answered-elsewhere")

	// alice hangs up in tab B: ended everywhere.
	tabB.Focus(t)
	tabB.Click(t, "#call-hangup")
	ended := func(s cdptest.State) bool {
		return s.Call != nil && s.Call.State == cloudwire.CallEnded && s.Call.Reason == cloudwire.ReasonHangup
	}
	tabB.WaitState(t, "call ended on web-b", ended)
	tabA.WaitState(t, "call ended on web-a", ended)
	carol.nextLive(t, "the call hung up", callStateIs(callID, cloudwire.CallEnded, cloudwire.ReasonHangup))
	tabB.Screenshot(t, "6-web-b-ended")
}

// shoot brings a tab to the front and saves a screenshot of it: headless
// Chromium paints only the tab in front.
func shoot(t *testing.T, p *cdptest.Page, name string) {
	t.Helper()
	p.Focus(t)
	p.Screenshot(t, name)
}

// devicePresence matches a page state that shows device of user in state.
func devicePresence(user, device, state string) func(cdptest.State) bool {
	return func(s cdptest.State) bool {
		return slices.Contains(s.Presence, cdptest.Presence{User: user, Device: device, State: state})
	}
}

// callStateIs matches the call_state frame of call id with state and reason.
func callStateIs(id, state, reason string) func(cloudwire.Frame) bool {
	return func(f cloudwire.Frame) bool {
		cs, ok := f.(cloudwire.CallState)
		return ok && cs.CallID == id && cs.State == state && cs.Reason == reason
	}
}

// publishUntilPage publishes a legacy device's presence until the page
// shows it: the bridge subscribes to a legacy user's devices once it has
// carried their traffic, which happens asynchronously.
func publishUntilPage(t *testing.T, p *livePhone, page *cdptest.Page, status string) {
	t.Helper()
	user := p.dev.User()
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := p.dev.PublishPresence(ctx, status); err != nil {
			t.Logf("publish presence: %v", err)
		}
		cancel()
		if page.State(t).PresenceOf(user) == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's presence %s never showed on the page: %+v", user, status, page.State(t).Presence)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
