//go:build linux

package cloudweb_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudweb/cdptest"
	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// presenceOf matches bob's view of a presence frame of user's device.
func presenceOf(user, device, state string) func(cloudwire.Frame) bool {
	return func(f cloudwire.Frame) bool {
		p, ok := f.(cloudwire.Presence)
		return ok && p.User == user && p.Device == device && p.State == state
	}
}

func typingOf(user, conv string, typing bool) func(cloudwire.Frame) bool {
	return func(f cloudwire.Frame) bool {
		ty, ok := f.(cloudwire.Typing)
		return ok && ty.User == user && ty.Conv == conv && ty.Typing == typing
	}
}

func callStateOf(id, state, reason string) func(cloudwire.Frame) bool {
	return func(f cloudwire.Frame) bool {
		cs, ok := f.(cloudwire.CallState)
		return ok && cs.CallID == id && cs.State == state && (reason == "" || cs.Reason == reason)
	}
}

// TestBrowserPresenceTypingCalls drives the page's live parts against a
// real service, with a Go client as bob: presence both ways (the snapshot,
// live changes, the page going idle without input and active again on a
// click), typing both ways (shown, ended by a message, expired when not
// renewed; sent while typing and stopped when the keys stop), an incoming
// call declined, and an outgoing call answered and hung up.
func TestBrowserPresenceTypingCalls(t *testing.T) {
	b := cdptest.Start(t).NewPage(t)
	n := startNode(t)
	// The conversation exists before bob's and alice's sessions open: a
	// session looks its user's contacts up when it opens and reuses them
	// for 30 s (cloud/presence.go, contactsTTL), so presence would reach
	// a brand-new contact only later.
	seed := n.dial(t, "bob", "bob-laptop")
	conv := send(t, seed, "alice", "are you there?").Conv
	seed.Close()
	waitOffline(t, n, 0)
	bob := n.dial(t, "bob", "bob-phone")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()

	b.Navigate(t, n.httpURL+"/#token="+token(t, "alice", cloudwire.RoleUser)+"&device=web1")
	b.WaitState(t, "live", func(s cdptest.State) bool { return s.Status == "live" && len(s.Texts(conv)) == 1 })

	// Presence: bob was online before the page (presence_snapshot), then
	// changes live; the page, in front, is active.
	b.WaitState(t, "bob active from the snapshot", func(s cdptest.State) bool { return s.PresenceOf("bob") == "active" })
	if err := bob.SetPresence(ctx, cloudwire.PresenceIdle); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, "bob idle", func(s cdptest.State) bool { return s.PresenceOf("bob") == "idle" })
	if txt := b.Text(t, "#presence"); txt != "bob idle" {
		t.Errorf("presence line %q, want bob idle", txt)
	}
	if dot := b.Attr(t, `#convs li[data-conv="`+conv+`"]`, "data-presence"); dot != "idle" {
		t.Errorf("conversation list shows bob %q", dot)
	}
	// No input for a while: the page says idle; a click makes it active.
	b.Eval(t, "window.ferry.setIdleAfter(300)", nil)
	bob.waitLive(t, "alice idle", presenceOf("alice", "web1", cloudwire.PresenceIdle))
	b.Eval(t, "window.ferry.setIdleAfter(600000)", nil)
	b.Click(t, "#conv-title")
	bob.waitLive(t, "alice active again", presenceOf("alice", "web1", cloudwire.PresenceActive))
	if s := b.State(t); s.Me != "active" {
		t.Errorf("page says it is %q after a click", s.Me)
	}

	// Typing from bob: shown, ended by his message; shown, then expired.
	if err := bob.SetTyping(ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, "bob typing", func(s cdptest.State) bool { return s.IsTyping(conv, "bob") })
	if txt := b.Text(t, "#typing"); txt != "bob is typing…" {
		t.Errorf("typing line %q", txt)
	}
	send(t, bob, "alice", "here it is")
	b.WaitState(t, "bob's message ends his typing", func(s cdptest.State) bool {
		return len(s.Texts(conv)) == 2 && !s.IsTyping(conv, "bob")
	})
	if err := bob.SetTyping(ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, "bob typing again", func(s cdptest.State) bool { return s.IsTyping(conv, "bob") })
	b.WaitState(t, "bob's typing expired (not renewed)", func(s cdptest.State) bool { return !s.IsTyping(conv, "bob") })
	// The state reads the expiry off the clock; the line is redrawn by the
	// page's expiry timer, a moment later.
	deadline := time.Now().Add(5 * time.Second)
	for txt := b.Text(t, "#typing"); txt != ""; txt = b.Text(t, "#typing") {
		if time.Now().After(deadline) {
			t.Fatalf("typing line %q after expiry", txt)
		}
		time.Sleep(25 * time.Millisecond)
	}

	// Typing from the page: true while keys come, false once they stop.
	b.Type(t, "#text", "thinking")
	bob.waitLive(t, "alice typing", typingOf("alice", conv, true))
	bob.waitLive(t, "alice stopped typing", typingOf("alice", conv, false))
	b.Eval(t, `document.querySelector("#text").value = ""`, nil)

	// An incoming call, declined.
	call1 := uuid.Must(uuid.NewV7()).String()
	if _, err := bob.Call(ctx, cloudwire.Call{Op: cloudwire.CallInvite, CallID: call1, To: "alice"}); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, "ringing", func(s cdptest.State) bool {
		return s.Call != nil && s.Call.ID == call1 && s.Call.RingingHere && s.Call.Incoming
	})
	if txt := b.Text(t, "#call-text"); txt != "Incoming call from bob" {
		t.Errorf("call banner %q", txt)
	}
	if title := b.Text(t, "title"); title != "Incoming call from bob · Ferry" {
		t.Errorf("tab title %q while ringing", title)
	}
	b.Screenshot(t, "1-ringing")
	b.Click(t, "#call-decline")
	bob.waitLive(t, "call declined", callStateOf(call1, cloudwire.CallEnded, cloudwire.ReasonRejected))
	b.WaitState(t, "call declined on the page", func(s cdptest.State) bool {
		return s.Call.State == cloudwire.CallEnded && s.Call.Reason == cloudwire.ReasonRejected && !s.Call.RingingHere
	})
	if txt := b.Text(t, "#call-text"); txt != "Call with bob ended: declined" {
		t.Errorf("call banner %q", txt)
	}
	if title := b.Text(t, "title"); title != "Ferry" {
		t.Errorf("tab title %q after the call", title)
	}

	// An outgoing call from the conversation's Call button, answered by
	// bob, hung up on the page.
	b.Click(t, "#call-start")
	f := bob.waitLive(t, "alice's call ringing", func(f cloudwire.Frame) bool {
		cs, ok := f.(cloudwire.CallState)
		return ok && cs.CallID != call1 && cs.State == cloudwire.CallRinging && cs.From == "alice" && cs.FromDevice == "web1"
	})
	call2 := f.(cloudwire.CallState)
	if !slices.Equal(call2.Ringing, []string{"bob-phone"}) {
		t.Errorf("alice's call rings %q", call2.Ringing)
	}
	b.WaitState(t, "calling bob", func(s cdptest.State) bool {
		return s.Call != nil && s.Call.ID == call2.CallID && !s.Call.Incoming && s.Call.State == cloudwire.CallRinging
	})
	if txt := b.Text(t, "#call-text"); !strings.HasPrefix(txt, "Calling bob") {
		t.Errorf("call banner %q", txt)
	}
	if _, err := bob.Call(ctx, cloudwire.Call{Op: cloudwire.CallAnswer, CallID: call2.CallID}); err != nil {
		t.Fatal(err)
	}
	b.WaitState(t, "in call", func(s cdptest.State) bool {
		return s.Call.State == cloudwire.CallActive && s.Call.Reason == cloudwire.ReasonAnswered
	})
	if txt := b.Text(t, "#call-text"); txt != "In call with bob" {
		t.Errorf("call banner %q", txt)
	}
	b.Screenshot(t, "2-in-call")
	b.Click(t, "#call-hangup")
	bob.waitLive(t, "hung up", callStateOf(call2.CallID, cloudwire.CallEnded, cloudwire.ReasonHangup))
	b.WaitState(t, "hung up on the page", func(s cdptest.State) bool {
		return s.Call.State == cloudwire.CallEnded && s.Call.Reason == cloudwire.ReasonHangup
	})
	if s := b.State(t); strings.Contains(s.LastError, "rate_limited") {
		t.Errorf("the page went over the presence and typing rate limit: %s", s.LastError)
	}
}
