package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// TestRollbackLosesNothing: while vera is in cloud her legacy device is
// away; what she receives there meanwhile is mirrored to the legacy device
// she comes back on, in order and once, so rolling her back to shadow
// loses nothing, and what she gets after the rollback follows on the same
// device.
func TestRollbackLosesNothing(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	old := newLegacyPhone(t, ta, "vera")
	waitDevice(t, ta, "vera")
	setPhases(t, ta.admin(), "vera", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	setPhases(t, ta.admin(), "walt", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	old.waitRoute(t, "vera", ta.a.brHost)
	old.host.Close() // vera's legacy device goes away without a word
	walt := dialCloud(t, ta, "walt", "walt-web", 0)
	web := dialCloud(t, ta, "vera", "vera-web", 0)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(n int, tag string) []string {
		var ids []string
		for i := range n {
			id := uuid.Must(uuid.NewV7()).String()
			if _, err := walt.c.Send(ctx, cloudwire.Send{To: "vera", MsgID: id, Text: tag + string(rune('a'+i))}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	inCloud := send(8, "cloud ")
	for range inCloud { // vera's cloud device is her home now
		web.next(t, cloudwire.KindMsg)
	}

	vera := newLegacyPhone(t, ta, "vera") // back on a new legacy device
	ck := newChecker()
	pullSender(ck, flowName("walt", "vera"), vera, "walt")
	for _, id := range inCloud {
		ck.ack(flowName("walt", "vera"), id)
	}
	ck.verify(t, within, 300*time.Millisecond, func() string { return "" })
	for _, m := range vera.got {
		if !strings.HasPrefix(m.Text, "cloud ") {
			t.Errorf("mirror copy %s reads %q, want the original text", m.ID, m.Text)
		}
	}

	setPhases(t, ta.admin(), "vera", migrate.PhaseShadow)
	waitUntil(t, within, func() bool {
		u, ok := ta.a.state.Get("vera")
		return ok && !u.CloudHome()
	}, func() string { return "rollback not in memdb" })
	for _, id := range send(4, "shadow ") {
		ck.ack(flowName("walt", "vera"), id)
	}
	ck.verify(t, within, 300*time.Millisecond, func() string { return "" })
}
