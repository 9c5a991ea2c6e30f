package legacy

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// TestShadowMirrorAndHistory runs the shadow protocols on real hosts: a
// mirror route sits next to a home route without displacing the user's
// devices, a withdrawal removes it, a shadow copy reaches the mirror with
// the sender's certificate checked, and a device's history is served,
// paged, to the bridge only.
func TestShadowMirrorAndHistory(t *testing.T) {
	ctx := testCtx(t)
	auth := newTestAuthority(t)
	_, sn := startSupernode(t, auth, SupernodeConfig{})
	bob, _ := newTestDevice(t, auth, sn, "bob")
	alice, _ := newTestDevice(t, auth, sn, "alice")

	bridgeHost := newTestHost(t)
	bcert := certify(t, auth, bridgeHost, "ferry-bridge", legacywire.CapBridge)
	copies := make(chan legacywire.ChatMessage, 8)
	HandleMirror(bridgeHost, ChatConfig{
		Authority: auth.PublicKey(),
		Deliver: func(_ context.Context, from legacywire.Certificate, m legacywire.ChatMessage) legacywire.ChatAck {
			copies <- m
			return legacywire.ChatAck{ID: m.ID, Status: legacywire.StatusDelivered}
		},
	})
	dir := NewDirectory(bridgeHost, bcert, sn)
	publish := func(seq uint64, withdrawn bool) {
		t.Helper()
		err := dir.PublishRoute(ctx, auth.SignRoute(legacywire.RouteRecord{
			User: "bob", PeerID: bridgeHost.ID().String(), Addrs: []string{bridgeHost.Addrs()[0].String()},
			Seq: seq, NotAfter: time.Now().Add(time.Hour), Withdrawn: withdrawn, Kind: legacywire.RouteMirror,
		}))
		if err != nil {
			t.Fatal(err)
		}
	}
	publish(1, false)
	look, err := alice.Directory().Lookup(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if look.Route != nil || len(look.Devices) != 1 || look.Mirror == nil {
		t.Fatalf("lookup with a mirror: %+v", look)
	}
	if targets, _ := look.Targets(); len(targets) != 1 || targets[0].ID != bob.cfg.Host.ID() {
		t.Fatalf("targets %v: the mirror must not be one", targets)
	}

	msg, ack, err := alice.Send(ctx, "bob", "hi bob")
	if err != nil || !ack.Delivered() {
		t.Fatalf("native send: %+v %v", ack, err)
	}
	if ok, err := MirrorMessage(ctx, alice.cfg.Host, alice.cfg.Cert, look, msg); !ok || err != nil {
		t.Fatalf("MirrorMessage = %v, %v", ok, err)
	}
	if got := <-copies; got.ID != msg.ID || got.Text != msg.Text {
		t.Fatalf("mirror got %+v", got)
	}
	// A copy speaks only for its sender's user.
	forged := msg
	forged.ID, forged.From = uuid.Must(uuid.NewV7()).String(), "carol"
	if ok, err := MirrorMessage(ctx, alice.cfg.Host, alice.cfg.Cert, look, forged); ok || !errors.Is(err, ErrRefused) {
		t.Fatalf("forged copy = %v, %v", ok, err)
	}

	publish(2, true)
	look, err = alice.Directory().Lookup(ctx, "bob")
	if err != nil || look.Mirror != nil {
		t.Fatalf("lookup after withdrawal: %+v %v", look, err)
	}
	if ok, err := MirrorMessage(ctx, alice.cfg.Host, alice.cfg.Cert, look, msg); ok || err != nil {
		t.Fatalf("MirrorMessage without a mirror = %v, %v", ok, err)
	}

	// History: bob's device serves its memory to the bridge, in pages.
	hist := NewHistory(5)
	base := time.Now().UTC().Truncate(time.Millisecond)
	var ids []string
	for i := range 7 {
		m := legacywire.ChatMessage{ID: uuid.Must(uuid.NewV7()).String(), From: "alice", To: "bob", Text: fmt.Sprint("m", i), SentAt: base}
		ids = append(ids, m.ID)
		hist.Add(m)
	}
	hist.Add(legacywire.ChatMessage{ID: ids[6], From: "alice", To: "bob", Text: "m6", SentAt: base}) // again: held once
	if hist.Len() != 5 {
		t.Fatalf("history holds %d, want its capacity 5", hist.Len())
	}
	ServeHistory(bob.cfg.Host, HistoryConfig{Authority: auth.PublicKey(), User: "bob", History: hist})
	bobInfo := addrInfoOf(bob.cfg.Host)
	var got []string
	after := ""
	for range 10 {
		page, err := FetchHistory(ctx, bridgeHost, bcert, bobInfo, legacywire.HistoryRequest{User: "bob", After: after, Since: base.Add(-time.Hour), Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Msgs {
			got = append(got, m.ID)
			after = m.ID
		}
		if !page.More {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ids[2:]) {
		t.Fatalf("paged history %v, want the newest five %v", got, ids[2:])
	}
	// Not the bridge: refused. Another user's history: refused.
	if _, err := FetchHistory(ctx, alice.cfg.Host, alice.cfg.Cert, bobInfo, legacywire.HistoryRequest{User: "bob", Since: base, Limit: 2}); !errors.Is(err, ErrRefused) {
		t.Fatalf("history for a non-bridge peer: %v", err)
	}
	if _, err := FetchHistory(ctx, bridgeHost, bcert, bobInfo, legacywire.HistoryRequest{User: "carol", Since: base, Limit: 2}); !errors.Is(err, ErrRefused) {
		t.Fatalf("history of another user: %v", err)
	}
	// A peer that does not serve history (as a v1-only device) is not
	// supported.
	bare := newTestHost(t)
	if _, err := FetchHistory(ctx, bridgeHost, bcert, addrInfoOf(bare), legacywire.HistoryRequest{User: "alice", Since: base, Limit: 2}); !errors.Is(err, ErrNotSupported) {
		t.Fatalf("history from a device without it: %v", err)
	}
}

// TestMirrorRoutesInTheDirectory: a mirror route and a home route of one
// user are kept apart, each ordered by its own Seq; an unknown kind is
// refused; mirrors replicate to the other supernodes like home routes.
func TestMirrorRoutesInTheDirectory(t *testing.T) {
	ctx := testCtx(t)
	auth := newTestAuthority(t)
	m := startMesh(t, auth, 2)
	bridgeHost := newTestHost(t)
	bcert := certify(t, auth, bridgeHost, "ferry-bridge", legacywire.CapBridge)
	dir := NewDirectory(bridgeHost, bcert, m.infos[0])
	rec := func(seq uint64, kind string) legacywire.RouteRecord {
		return auth.SignRoute(legacywire.RouteRecord{User: "carol", PeerID: bridgeHost.ID().String(), Seq: seq, NotAfter: time.Now().Add(time.Hour), Kind: kind})
	}
	if err := dir.PublishRoute(ctx, rec(10, legacywire.RouteMirror)); err != nil {
		t.Fatal(err)
	}
	// A home route with a lower Seq is not stale: kinds are ordered apart.
	if err := dir.PublishRoute(ctx, rec(5, legacywire.RouteHome)); err != nil {
		t.Fatal(err)
	}
	var refused *RefusedError
	if err := dir.PublishRoute(ctx, rec(9, legacywire.RouteMirror)); !errors.As(err, &refused) || refused.Code != legacywire.CodeStaleRoute {
		t.Fatalf("older mirror: %v", err)
	}
	if err := dir.PublishRoute(ctx, rec(11, "sideways")); !errors.As(err, &refused) || refused.Code != legacywire.CodeBadRoute {
		t.Fatalf("unknown kind: %v", err)
	}
	for i := range 2 {
		waitFor(t, "both routes at every supernode", func() bool {
			_, home := m.nodes[i].Lookup("carol")
			mirror := m.nodes[i].Mirror("carol")
			return home != nil && home.Seq == 5 && mirror != nil && mirror.Seq == 10
		})
	}
	look, err := dir.Lookup(ctx, "carol")
	if err != nil || look.Route == nil || look.Mirror == nil {
		t.Fatalf("lookup %+v %v", look, err)
	}
	if _, ok := look.MirrorTarget(); !ok {
		t.Fatal("no mirror target")
	}
}
