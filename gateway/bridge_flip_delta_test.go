package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// TestFlipFinalDeltaFillsMirrorHoles: a shadow copy of one of lars's
// messages to ulla fails in shadow, another in ready (a fault hook on the
// bridge's mirror), the messages reaching ulla's device natively. As ulla
// enters ready, and again as she flips to the cloud, the final delta
// reads her device's history and writes what the cloud lacks, so her
// cloud history ends up complete, in order, each message once (each
// delta skips what is there already).
func TestFlipFinalDeltaFillsMirrorHoles(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lars := newShadowPhone(t, ta, "fd-lars")
	ulla := newShadowPhone(t, ta, "fd-ulla")
	setPhases(t, ta.admin(), "fd-ulla", migrate.PhaseShadow)
	lars.waitMirror(t, ctx, "fd-ulla", true)
	waitShadowStats(t, ta, "fd-ulla", func(s bridge.ShadowStats) bool { return s.BackfillDone })

	var mu sync.Mutex
	failing := map[string]bool{}
	ta.a.bridge.SetMirrorFault(func(id string) error {
		mu.Lock()
		defer mu.Unlock()
		if failing[id] {
			return errors.New("fault: copy not stored")
		}
		return nil
	})
	var want []string
	send := func(text string, fail bool) {
		t.Helper()
		m := lars.newMsg("fd-ulla", text)
		mu.Lock()
		failing[m.ID] = fail
		mu.Unlock()
		ack, err := lars.dev.SendMessage(ctx, m)
		if err != nil || !ack.Delivered() {
			t.Fatalf("send %s: %+v %v", text, ack, err)
		}
		if got := ulla.nextMsg(t); got.ID != m.ID {
			t.Fatalf("ulla got %+v, want %s", got, text)
		}
		want = append(want, m.ID)
	}
	copies := func(series string) func() bool {
		return func() bool { return seriesValue(t, ta, series) >= 1 }
	}
	why := func(what string) func() string {
		return func() string {
			return fmt.Sprintf("%s: %v", what, metricValues(t, ta, "gateway_bridge_shadow_copies_total"))
		}
	}

	send("one", false)
	send("two", false)
	send("three", true) // a hole in shadow
	waitUntil(t, within, copies(`gateway_bridge_shadow_copies_total{result="error",source="mirror"}`), why("the copy did not fail"))
	setPhases(t, ta.admin(), "fd-ulla", migrate.PhaseReady)
	waitUntil(t, within, copies(`gateway_bridge_shadow_copies_total{result="written",source="delta"}`), why("ready's delta wrote nothing"))
	send("four", true) // a hole in ready
	setPhases(t, ta.admin(), "fd-ulla", migrate.PhaseCloud)
	waitUntil(t, within, func() bool {
		return seriesValue(t, ta, `gateway_bridge_shadow_copies_total{result="written",source="delta"}`) == 2 &&
			seriesValue(t, ta, `gateway_bridge_shadow_copies_total{result="repeat",source="delta"}`) == 5
	}, why("the deltas did not write each hole once and skip the rest"))
	ta.a.bridge.SetMirrorFault(nil)

	dev := dialCloud(t, ta, "fd-ulla", "ulla-web", 0)
	page, err := dev.c.History(ctx, cloudwire.History{Conv: cloudwire.DirectConversationID("fd-lars", "fd-ulla"), Limit: cloudwire.MaxHistoryLimit})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range page.Msgs {
		if m.Kind == cloudwire.KindMsg {
			got = append(got, m.MsgID)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("cloud history of lars and ulla: %v, want %v (complete, once, in order)", got, want)
	}
}
