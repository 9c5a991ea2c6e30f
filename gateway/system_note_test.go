package main

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// TestPhaseMovePostsSystemNotes moves dave, who has a one-to-one
// conversation and a group in the cloud, from ready to cloud and back to
// shadow with a real agent: each move posts exactly one system note per
// conversation, in the synced history with its own sequence, seen by the
// other members; noting the same move again (a replayed watch) adds
// nothing.
func TestPhaseMovePostsSystemNotes(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	for _, u := range []string{"alice", "bob"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	}
	setPhases(t, ta.admin(), "dave", migrate.PhaseShadow, migrate.PhaseReady)
	alice := dialCloud(t, ta, "alice", "alice-web", 0)
	bob := dialCloud(t, ta, "bob", "bob-web", 0)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := alice.c.Send(ctx, cloudwire.Send{To: "dave", MsgID: uuid.Must(uuid.NewV7()).String(), Text: "hi dave"}); err != nil {
		t.Fatal(err)
	}
	g, err := alice.c.Group(ctx, cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: uuid.Must(uuid.NewV7()).String(), Name: "team", Members: []string{"bob", "dave"}})
	if err != nil {
		t.Fatal(err)
	}
	direct := cloudwire.DirectConversationID("alice", "dave")

	// notes returns the next n system notes a device gets.
	notes := func(d *cloudDevice, n int) map[string]cloudwire.Event {
		t.Helper()
		out := map[string]cloudwire.Event{}
		for len(out) < n {
			ev, _ := d.next(t, cloudwire.KindSystem)
			if _, dup := out[ev.Conv]; dup {
				t.Fatalf("two notes in %s: %+v", ev.Conv, ev)
			}
			out[ev.Conv] = ev
		}
		return out
	}
	// count returns the system notes with text in conv's history.
	count := func(conv, text string) int {
		t.Helper()
		page, err := alice.c.History(ctx, cloudwire.History{Conv: conv})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range page.Msgs {
			if m.Kind == cloudwire.KindSystem && m.Text == text {
				n++
			}
		}
		return n
	}

	for _, move := range []struct {
		phase   migrate.Phase
		toCloud bool
	}{{migrate.PhaseCloud, true}, {migrate.PhaseShadow, false}} {
		setPhases(t, ta.admin(), "dave", move.phase)
		text := cloud.PhaseNoteText("dave", move.toCloud)
		got := notes(alice, 2)
		for _, conv := range []string{direct, g.Conv} {
			ev, ok := got[conv]
			if !ok || ev.From != "dave" || ev.Text != text || ev.Seq == 0 {
				t.Fatalf("%s: alice's note in %s is %+v", move.phase, conv, ev)
			}
		}
		if ev := notes(bob, 1)[g.Conv]; ev.Text != text {
			t.Fatalf("%s: bob's note in the group %+v", move.phase, ev)
		}
		u, _ := ta.a.state.Get("dave")
		if n, err := ta.a.cloud.PostPhaseNote(ctx, "dave", u.OpID, move.toCloud); err != nil || n != 2 {
			t.Fatalf("%s: noting the move again: %d conversations, %v", move.phase, n, err)
		}
		for _, conv := range []string{direct, g.Conv} {
			if n := count(conv, text); n != 1 {
				t.Fatalf("%s: %d notes %q in %s, want 1", move.phase, n, text, conv)
			}
		}
	}
}
