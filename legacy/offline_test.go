package legacy

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// TestOfflineStoreAndForward: messages for a user whose only device is gone
// are held at the supernode, bounded, and handed in order and once to the
// next device of that user that registers; expired ones are dropped and
// counted.
func TestOfflineStoreAndForward(t *testing.T) {
	auth := newTestAuthority(t)
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{
		OfflineTTL:        10 * time.Minute,
		MaxOfflinePerUser: 3,
		Now:               func() time.Time { return *now.Load() },
	})
	alice, _ := newTestDevice(t, auth, snInfo, "alice")
	gone, _ := newTestDevice(t, auth, snInfo, "bob")
	if err := gone.cfg.Host.Close(); err != nil { // bob's device dies; its record lingers
		t.Fatal(err)
	}
	ctx := testCtx(t)

	var sent []string
	for i := range 3 {
		msg, ack, err := alice.Send(ctx, "bob", "while you were away")
		if err != nil || ack.Status != legacywire.StatusStored || ack.ID != msg.ID {
			t.Fatalf("send %d = %+v, %v; want stored", i, ack, err)
		}
		sent = append(sent, msg.ID)
	}
	// A retry of a held message is held once; a fourth is refused.
	if err := alice.Directory().Store(ctx, legacywire.ChatMessage{ID: sent[0], From: "alice", To: "bob"}); err != nil {
		t.Errorf("retry of a held message: %v", err)
	}
	if err := alice.Directory().Store(ctx, legacywire.ChatMessage{ID: "m4", From: "alice", To: "bob"}); !isRefusal(err, legacywire.CodeQueueFull) {
		t.Errorf("fourth held message = %v, want %s", err, legacywire.CodeQueueFull)
	}
	if err := alice.Directory().Store(ctx, legacywire.ChatMessage{ID: "m5", From: "carol", To: "bob"}); !isRefusal(err, legacywire.CodeNotYourUser) {
		t.Errorf("held message from another user = %v, want %s", err, legacywire.CodeNotYourUser)
	}
	if held, _ := sn.OfflineStats(); held != 3 {
		t.Fatalf("held = %d, want 3", held)
	}

	// Bob's new device registers and gets them, oldest first.
	_, box := newTestDevice(t, auth, snInfo, "bob")
	var got []string
	for _, m := range box.all() {
		got = append(got, m.ID)
	}
	if len(got) != len(sent) || got[0] != sent[0] || got[1] != sent[1] || got[2] != sent[2] {
		t.Errorf("delivered %v, want %v in order", got, sent)
	}
	if held, _ := sn.OfflineStats(); held != 0 {
		t.Errorf("held after delivery = %d, want 0", held)
	}
	// Registering again delivers nothing twice.
	_, box2 := newTestDevice(t, auth, snInfo, "bob")
	if n := len(box2.all()); n != 0 {
		t.Errorf("second device got %d held messages, want 0", n)
	}

	// Expiry: held for carol, whose device is gone, then the TTL passes.
	carol, _ := newTestDevice(t, auth, snInfo, "carol")
	if err := carol.cfg.Host.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ack, err := alice.Send(ctx, "carol", "too late"); err != nil || ack.Status != legacywire.StatusStored {
		t.Fatalf("send to carol = %+v, %v; want stored", ack, err)
	}
	later := start.Add(20 * time.Minute)
	now.Store(&later)
	_, carolBox := newTestDevice(t, auth, snInfo, "carol")
	if n := len(carolBox.all()); n != 0 {
		t.Errorf("carol got %d expired messages", n)
	}
	if held, expired := sn.OfflineStats(); held != 0 || expired != 1 {
		t.Errorf("OfflineStats = %d held, %d expired; want 0 and 1", held, expired)
	}
}

// TestRequeueKeepsExpiryAndCap: a failed hand-over puts messages back with
// their original expiry (so a message that keeps failing still expires) and
// never beyond MaxOfflinePerUser; what is dropped is counted.
func TestRequeueKeepsExpiryAndCap(t *testing.T) {
	sn, now := clockedStore(t, 2)
	cert := legacywire.Certificate{User: "alice"}
	for _, id := range []string{"m1", "m2"} {
		if resp := sn.store("", cert, &legacywire.ChatMessage{ID: id, From: "alice", To: "bob"}); !resp.OK {
			t.Fatalf("store %s = %+v", id, resp)
		}
	}
	taken := sn.takeHeld("bob")
	if len(taken) != 2 {
		t.Fatalf("takeHeld = %d messages, want 2", len(taken))
	}
	*now = (*now).Add(40 * time.Second)
	if resp := sn.store("", cert, &legacywire.ChatMessage{ID: "m3", From: "alice", To: "bob"}); !resp.OK {
		t.Fatalf("store m3 = %+v", resp)
	}
	sn.requeue("bob", taken) // three for a cap of two: the oldest goes
	if held, dropped := sn.OfflineStats(); held != 2 || dropped != 1 {
		t.Fatalf("after requeue: held %d, dropped %d; want 2, 1", held, dropped)
	}
	*now = (*now).Add(30 * time.Second) // past m1/m2's original expiry, not m3's
	got := sn.takeHeld("bob")
	if len(got) != 1 || got[0].ID != "m3" {
		t.Fatalf("takeHeld after original expiry = %+v, want only m3", got)
	}
	if _, dropped := sn.OfflineStats(); dropped != 2 {
		t.Errorf("dropped = %d, want 2", dropped)
	}
}

// TestOfflineExpiryReportedToSender: a held message that expires unread is
// reported to its sender's device at its next registration, with the
// message ID and the reason, once, and counted. The supernode's periodic
// sweep finds it even though its recipient never comes back.
func TestOfflineExpiryReportedToSender(t *testing.T) {
	auth := newTestAuthority(t)
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{
		OfflineTTL: 10 * time.Minute,
		RecordTTL:  4 * time.Second, // the sweep runs every second
		Now:        func() time.Time { return *now.Load() },
	})
	reports := make(chan legacywire.Undeliverable, 4)
	alice, _, _ := newVersionedDevice(t, auth, snInfo, "alice", 0, func(c *DeviceConfig) {
		c.OnUndeliverable = func(u legacywire.Undeliverable) { reports <- u }
	})
	bob, _, _ := newVersionedDevice(t, auth, snInfo, "bob", 0)
	if err := bob.cfg.Host.Close(); err != nil { // bob's only device is gone
		t.Fatal(err)
	}
	ctx := testCtx(t)
	msg, ack, err := alice.Send(ctx, "bob", "are you there?")
	if err != nil || ack.Status != legacywire.StatusStored {
		t.Fatalf("Send = %+v, %v; want stored", ack, err)
	}
	if err := alice.Register(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-reports:
		t.Fatalf("report before expiry: %+v", u)
	default:
	}

	later := start.Add(11 * time.Minute)
	now.Store(&later)
	var got []legacywire.Undeliverable
	waitFor(t, "the undeliverable report", func() bool {
		if err := alice.Register(ctx); err != nil {
			t.Fatalf("Register: %v", err)
		}
		for len(reports) > 0 {
			got = append(got, <-reports)
		}
		return len(got) > 0
	})
	if len(got) != 1 || got[0].MsgID != msg.ID || got[0].From != "alice" || got[0].To != "bob" || got[0].Reason != legacywire.ReasonExpired {
		t.Fatalf("reports = %+v, want one for %s with reason %s", got, msg.ID, legacywire.ReasonExpired)
	}
	if err := alice.Register(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(reports); n != 0 {
		t.Errorf("%d reports repeated at the next registration", n)
	}
	if pending, reported := sn.UndeliverableStats(); pending != 0 || reported != 1 {
		t.Errorf("UndeliverableStats = %d pending, %d reported; want 0, 1", pending, reported)
	}
	if held, expired := sn.OfflineStats(); held != 0 || expired != 1 {
		t.Errorf("OfflineStats = %d held, %d expired; want 0, 1", held, expired)
	}
}

// TestOverflowAndStaleReports: a message dropped by a requeue overflow is
// reported with reason overflow; a report nobody fetches expires after
// OfflineTTL, and a failed hand-over puts reports back.
func TestOverflowAndStaleReports(t *testing.T) {
	sn, now := clockedStore(t, 1)
	cert := legacywire.Certificate{User: "alice"}
	if resp := sn.store("", cert, &legacywire.ChatMessage{ID: "m1", From: "alice", To: "bob"}); !resp.OK {
		t.Fatal(resp)
	}
	taken := sn.takeHeld("bob")
	if resp := sn.store("", cert, &legacywire.ChatMessage{ID: "m2", From: "alice", To: "bob"}); !resp.OK {
		t.Fatal(resp)
	}
	sn.requeue("bob", taken) // two for a cap of one: m1 goes
	rs := sn.takeReports("alice")
	if len(rs) != 1 || rs[0].MsgID != "m1" || rs[0].Reason != legacywire.ReasonOverflow {
		t.Fatalf("reports = %+v, want m1 overflow", rs)
	}
	sn.requeueReports("alice", rs)
	if pending, reported := sn.UndeliverableStats(); pending != 1 || reported != 0 {
		t.Fatalf("after a failed hand-over: %d pending, %d reported; want 1, 0", pending, reported)
	}
	*now = (*now).Add(2 * time.Minute) // m2 expires (reported); m1's report expires unread
	sn.sweep()
	rs = sn.takeReports("alice")
	if len(rs) != 1 || rs[0].MsgID != "m2" || rs[0].Reason != legacywire.ReasonExpired {
		t.Errorf("reports after the sweep = %+v, want only m2 expired", rs)
	}
}

// clockedStore returns a supernode (not serving) whose offline store holds
// up to maxPerUser messages for "bob" for a minute, on a clock the test
// moves by setting *now.
func clockedStore(t *testing.T, maxPerUser int) (*Supernode, *time.Time) {
	t.Helper()
	now := time.Now()
	sn, err := NewSupernode(newTestHost(t), SupernodeConfig{Authority: newTestAuthority(t).PublicKey(), OfflineTTL: time.Minute,
		MaxOfflinePerUser: maxPerUser, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	sn.known["bob"] = struct{}{}
	return sn, &now
}
