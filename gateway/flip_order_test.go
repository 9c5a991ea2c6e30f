package main

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/migrate"
)

// pullSender makes ck read flow's received ids from p, keeping only the
// messages from sender (a phone's record holds every sender's).
func pullSender(ck *checker, flow string, p *legacyPhone, sender string) {
	ck.mu.Lock()
	defer ck.mu.Unlock()
	ck.pulled[flow] = func() []string {
		p.mu.Lock()
		defer p.mu.Unlock()
		var ids []string
		for _, m := range p.got {
			if m.From == sender {
				ids = append(ids, m.ID)
			}
		}
		return ids
	}
}

// waitDevice waits until user's migration record lists a legacy device
// (the agent records registrations asynchronously): mirroring needs one.
func waitDevice(t *testing.T, ta *testAgent, user string) {
	t.Helper()
	waitUntil(t, within, func() bool {
		u, ok := ta.a.state.Get(user)
		return ok && len(u.Devices) > 0
	}, func() string { return user + "'s legacy device was never recorded" })
}

// TestFlipKeepsOrderAndExactlyOnce flips ulla (ready → cloud) in the
// middle of two streams of messages to her, one from lars on the overlay
// and one from cleo in the cloud. ulla's legacy device, which stays hers
// across the flip (native before it, mirror copies after it), must have
// every acknowledged message of both streams once and in order. Her cloud
// device, which connects after the flip, must have cleo's whole stream,
// and of lars's stream, in order and without repeats, everything lars sent
// once her route was out; what he sent before reached the cloud only as
// shadow copies (lars's chat v2 device sends one to ulla's mirror while
// she is in ready), which are best effort: a copy that fails leaves a
// hole that only a backfill fills, and a message sent between the flip
// and the route reached her legacy device alone (doc.go).
func TestFlipKeepsOrderAndExactlyOnce(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ulla := newLegacyPhone(t, ta, "ulla")
	lars := newLegacyPhone(t, ta, "lars")
	setPhases(t, ta.admin(), "ulla", migrate.PhaseShadow, migrate.PhaseReady)
	setPhases(t, ta.admin(), "cleo", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	waitDevice(t, ta, "ulla")

	ck := newChecker()
	cleo := newCloudUser(t, ta, ta.a.cloudURL(), "cleo", "ulla", ck)
	const n = 40
	ck.plan(2 * n)
	pullSender(ck, flowName("lars", "ulla"), ulla, "lars")
	pullSender(ck, flowName("cleo", "ulla"), ulla, "cleo")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = sendLegacy(ctx, ck, lars, "lars", "ulla", n, 15*time.Millisecond) })
	wg.Go(func() { errs[1] = sendCloud(ctx, ck, cleo, "ulla", n, 15*time.Millisecond) })
	// Flip ulla once about a third of each stream is acknowledged.
	waitUntil(t, time.Minute, func() bool {
		acked, _ := ck.snapshot()
		return len(acked[flowName("lars", "ulla")]) >= n/3 && len(acked[flowName("cleo", "ulla")]) >= n/3
	}, ck.String)
	setPhases(t, ta.admin(), "ulla", migrate.PhaseCloud)
	waitAnyRoute(t, lars, "ulla")
	acked, _ := ck.snapshot()
	routed := len(acked[flowName("lars", "ulla")]) + 1 // the send in flight may have looked up before the route
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("%v\n%s", err, ck)
	}
	ck.verify(t, time.Minute, 500*time.Millisecond, func() string { return "" })

	// ulla's cloud device syncs her inbox from the start.
	acked, _ = ck.snapshot()
	larsSent := acked[flowName("lars", "ulla")]
	phone := dialCloud(t, ta, "ulla", "ulla-web", 0)
	got := map[string][]string{}
	waitUntil(t, within, func() bool {
		for {
			select {
			case ev := <-phone.c.Events():
				if ev.Kind == cloudwire.KindMsg && ev.User == "ulla" {
					got[ev.From] = append(got[ev.From], ev.MsgID)
				}
				continue
			default:
			}
			break
		}
		return len(got["cleo"]) >= n && len(got["lars"]) > 0 && got["lars"][len(got["lars"])-1] == larsSent[n-1]
	}, func() string { return "ulla's cloud device did not catch up" })
	if want := acked[flowName("cleo", "ulla")]; !slices.Equal(got["cleo"], want) {
		t.Errorf("cleo→ulla on ulla's cloud device:\ngot  %v\nwant %v", got["cleo"], want)
	}
	// In order and once: each message lars sent appears at most once, and
	// later than the one before it.
	next := 0
	for _, id := range got["lars"] {
		i := slices.Index(larsSent[next:], id)
		if i < 0 {
			t.Fatalf("lars→ulla on ulla's cloud device is not an in-order subsequence of what lars sent:\ngot  %v\nwant %v", got["lars"], larsSent)
		}
		next += i + 1
	}
	for _, id := range larsSent[min(routed, n):] {
		if !slices.Contains(got["lars"], id) {
			t.Errorf("lars→ulla: %s, sent once ulla's route was out, is not on her cloud device", id)
		}
	}
	t.Logf("lars→ulla: %d of %d in the cloud (the %d sent once the route was out, and %d of the %d before as shadow copies)",
		len(got["lars"]), n, n-min(routed, n), len(got["lars"])-(n-min(routed, n)), min(routed, n))
}
