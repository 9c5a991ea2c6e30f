package main

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// notices returns the messages p got from the system contact.
func (p *legacyPhone) notices() []legacywire.ChatMessage {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []legacywire.ChatMessage
	for _, m := range p.got {
		if m.From == legacywire.NoticesUser {
			out = append(out, m)
		}
	}
	return out
}

// TestSystemNotesReachLegacyDevices: when cleo, who talks with lars (on
// the classic app), moves back to the classic app and then to the new
// one again, lars's legacy device gets each move's note once, in order,
// as a message from ferry-notices.
func TestSystemNotesReachLegacyDevices(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "cleo", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	web := dialCloud(t, ta, "cleo", "cleo-web", 0)
	lars := newLegacyPhone(t, ta, "lars")

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := web.c.Send(ctx, cloudwire.Send{To: "lars", MsgID: uuid.Must(uuid.NewV7()).String(), Text: "hi lars"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lars.recv:
	case <-time.After(within):
		t.Fatal("lars never got cleo's message")
	}

	want := []string{cloud.PhaseNoteText("cleo", false), cloud.PhaseNoteText("cleo", true)}
	setPhases(t, ta.admin(), "cleo", migrate.PhaseShadow) // rollback: back on the classic app
	waitUntil(t, within, func() bool { return len(lars.notices()) >= 1 },
		func() string { return "lars never got the note of cleo's rollback" })
	setPhases(t, ta.admin(), "cleo", migrate.PhaseReady, migrate.PhaseCloud)
	waitUntil(t, within, func() bool { return len(lars.notices()) >= 2 },
		func() string { return "lars never got the note of cleo's move" })
	time.Sleep(time.Second) // a repeat would show up meanwhile; not a timing assertion

	got := lars.notices()
	if len(got) != len(want) {
		t.Fatalf("lars got %d notes, want %d: %+v", len(got), len(want), got)
	}
	for i, m := range got {
		if m.Text != want[i] || m.To != "lars" || m.ID == "" {
			t.Fatalf("note %d = %+v, want %q", i, m, want[i])
		}
	}
	waitUntil(t, within, func() bool {
		return metricValues(t, ta, "gateway_bridge_system_notes_total")["ok"] == 2
	}, func() string { return "the notes were not counted twice as ok" })
}
