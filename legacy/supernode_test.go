package legacy

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestSupernodeRefusesRegistration(t *testing.T) {
	auth := newTestAuthority(t)
	foreign := newTestAuthority(t)
	var registered atomic.Int64
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{
		OnRegister: func(legacywire.DeviceRecord) { registered.Add(1) },
	})
	h := newTestHost(t)
	other := newTestHost(t)

	tests := []struct {
		name     string
		cert     *legacywire.Certificate
		wantCode string
	}{
		{name: "no certificate", cert: nil, wantCode: legacywire.CodeNoCertificate},
		{name: "certificate for another peer", cert: ptr(certify(t, auth, other, "alice")), wantCode: legacywire.CodePeerMismatch},
		{name: "expired certificate", cert: ptr(legacywire.SignCertificate(auth.key, legacywire.Certificate{
			PeerID: h.ID().String(), User: "alice", NotAfter: time.Now().Add(-time.Minute),
		})), wantCode: legacywire.CodeExpired},
		{name: "foreign authority", cert: ptr(certify(t, foreign, h, "alice")), wantCode: legacywire.CodeBadCertificate},
		{name: "tampered user", cert: ptr(func() legacywire.Certificate {
			c := certify(t, auth, h, "alice")
			c.User = "bob"
			return c
		}()), wantCode: legacywire.CodeBadCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDirectory(h, legacywire.Certificate{}, snInfo)
			_, err := d.roundTrip(testCtx(t), legacywire.DirRequest{Op: legacywire.OpRegister, Cert: tt.cert})
			var refused *RefusedError
			if !errors.As(err, &refused) || !errors.Is(err, ErrRefused) {
				t.Fatalf("register = %v, want a *RefusedError", err)
			}
			if refused.Code != tt.wantCode {
				t.Errorf("code = %q, want %q (%s)", refused.Code, tt.wantCode, refused.Message)
			}
		})
	}
	if n := sn.Devices(); n != 0 {
		t.Errorf("supernode stored %d devices after refusals", n)
	}
	if n := registered.Load(); n != 0 {
		t.Errorf("OnRegister called %d times after refusals", n)
	}

	// And the same peer with a good certificate is accepted.
	if err := NewDirectory(h, certify(t, auth, h, "alice"), snInfo).Register(testCtx(t)); err != nil {
		t.Fatalf("valid registration: %v", err)
	}
	if sn.Devices() != 1 || registered.Load() != 1 {
		t.Errorf("after a valid registration: Devices() = %d, OnRegister calls = %d, want 1 and 1", sn.Devices(), registered.Load())
	}
}

func TestSupernodeRefusesBadRequests(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	h := newTestHost(t)
	cert := certify(t, auth, h, "alice")
	other := certify(t, auth, newTestHost(t), "bob")
	tests := []struct {
		name     string
		req      legacywire.DirRequest
		wantCode string
	}{
		{name: "unknown op", req: legacywire.DirRequest{Op: "teleport", Cert: &cert}, wantCode: legacywire.CodeUnknownOp},
		{name: "bad address", req: legacywire.DirRequest{Op: legacywire.OpRegister, Cert: &cert, Addrs: []string{"not-a-multiaddr"}}, wantCode: legacywire.CodeBadRequest},
		{name: "lookup without certificate", req: legacywire.DirRequest{Op: legacywire.OpLookup, User: "alice"}, wantCode: legacywire.CodeNoCertificate},
		{name: "lookup with another peer's certificate", req: legacywire.DirRequest{Op: legacywire.OpLookup, Cert: &other, User: "alice"}, wantCode: legacywire.CodePeerMismatch},
		{name: "route op without route", req: legacywire.DirRequest{Op: legacywire.OpRoute}, wantCode: legacywire.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewDirectory(h, cert, snInfo).roundTrip(testCtx(t), tt.req)
			var refused *RefusedError
			if !errors.As(err, &refused) {
				t.Fatalf("request = %v, want a *RefusedError", err)
			}
			if refused.Code != tt.wantCode {
				t.Errorf("code = %q, want %q (%s)", refused.Code, tt.wantCode, refused.Message)
			}
		})
	}
}

func TestDirectoryLookupDevices(t *testing.T) {
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	phone, _ := newTestDevice(t, auth, snInfo, "alice")
	laptop, _ := newTestDevice(t, auth, snInfo, "alice")
	bob, _ := newTestDevice(t, auth, snInfo, "bob")

	look, err := bob.Directory().Lookup(testCtx(t), "alice")
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	if look.Route != nil {
		t.Errorf("Route = %+v, want none", look.Route)
	}
	var got []string
	for _, d := range look.Devices {
		got = append(got, d.Cert.PeerID)
		if d.Cert.User != "alice" || len(d.Addrs) == 0 || !d.Expires.After(time.Now()) {
			t.Errorf("device record %+v: want alice's, with addresses and a future expiry", d)
		}
	}
	want := []string{phone.cfg.Host.ID().String(), laptop.cfg.Host.ID().String()}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("devices = %v, want %v", got, want)
	}
	targets, err := look.Targets()
	if err != nil || len(targets) != 2 {
		t.Fatalf("Targets = %v, %v; want both devices", targets, err)
	}
	if n := sn.Devices(); n != 3 {
		t.Errorf("Devices() = %d, want 3", n)
	}

	// Unknown users have no devices and that is not an error.
	look, err = bob.Directory().Lookup(testCtx(t), "nobody")
	if err != nil || len(look.Devices) != 0 || look.Route != nil {
		t.Errorf("Lookup(nobody) = %+v, %v; want empty", look, err)
	}
}

func TestSupernodeExpiresRecords(t *testing.T) {
	auth := newTestAuthority(t)
	var now atomic.Pointer[time.Time]
	start := time.Now()
	now.Store(&start)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{
		RecordTTL: time.Minute,
		Now:       func() time.Time { return *now.Load() },
	})
	newTestDevice(t, auth, snInfo, "alice")
	if sn.Devices() != 1 {
		t.Fatalf("Devices() = %d, want 1", sn.Devices())
	}
	later := start.Add(2 * time.Minute)
	now.Store(&later)
	if devs, _ := sn.Lookup("alice"); len(devs) != 0 || sn.Devices() != 0 {
		t.Errorf("after the TTL: Lookup = %v, Devices() = %d; want nothing", devs, sn.Devices())
	}
	if n := sn.sweep(); n != 1 {
		t.Errorf("sweep dropped %d records, want 1", n)
	}
}

func TestRouteRecords(t *testing.T) {
	auth := newTestAuthority(t)
	foreign := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	carol, _ := newTestDevice(t, auth, snInfo, "carol")
	bob, _ := newTestDevice(t, auth, snInfo, "bob")
	bridge := newTestHost(t)
	dir := bob.Directory()

	route := func(a *Authority, seq uint64, withdrawn bool) legacywire.RouteRecord {
		var addrs []string
		for _, m := range bridge.Addrs() {
			addrs = append(addrs, m.String())
		}
		return a.SignRoute(legacywire.RouteRecord{
			User: "carol", PeerID: bridge.ID().String(), Addrs: addrs,
			Seq: seq, NotAfter: time.Now().Add(time.Hour), Withdrawn: withdrawn,
		})
	}
	targetsOf := func(t *testing.T) []peer.ID {
		t.Helper()
		look, err := dir.Lookup(testCtx(t), "carol")
		if err != nil {
			t.Fatalf("Lookup: %v", err)
		}
		ts, err := look.Targets()
		if err != nil {
			t.Fatalf("Targets: %v", err)
		}
		var ids []peer.ID
		for _, ai := range ts {
			ids = append(ids, ai.ID)
		}
		return ids
	}

	r5 := route(auth, 5, false)
	steps := []struct {
		name        string
		record      legacywire.RouteRecord
		wantCode    string // "" means accepted
		wantTargets []peer.ID
	}{
		{name: "route wins over devices", record: r5, wantTargets: []peer.ID{bridge.ID()}},
		{name: "same record again is accepted", record: r5, wantTargets: []peer.ID{bridge.ID()}},
		{name: "lower seq is ignored", record: route(auth, 3, true), wantCode: legacywire.CodeStaleRoute, wantTargets: []peer.ID{bridge.ID()}},
		{name: "foreign key is refused", record: route(foreign, 9, true), wantCode: legacywire.CodeBadRoute, wantTargets: []peer.ID{bridge.ID()}},
		{name: "withdrawn with higher seq hides the route", record: route(auth, 6, true), wantTargets: []peer.ID{carol.cfg.Host.ID()}},
		{name: "older live record cannot come back", record: route(auth, 5, false), wantCode: legacywire.CodeStaleRoute, wantTargets: []peer.ID{carol.cfg.Host.ID()}},
		{name: "new route after withdrawal", record: route(auth, 7, false), wantTargets: []peer.ID{bridge.ID()}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := dir.PublishRoute(testCtx(t), st.record)
			switch {
			case st.wantCode == "" && err != nil:
				t.Fatalf("PublishRoute = %v, want accepted", err)
			case st.wantCode != "":
				var refused *RefusedError
				if !errors.As(err, &refused) || refused.Code != st.wantCode {
					t.Fatalf("PublishRoute = %v, want refusal %q", err, st.wantCode)
				}
			}
			if got := targetsOf(t); !slices.Equal(got, st.wantTargets) {
				t.Errorf("targets = %v, want %v", got, st.wantTargets)
			}
		})
	}
	if _, r := sn.Lookup("carol"); r == nil || r.Seq != 7 {
		t.Errorf("supernode's route = %+v, want seq 7", r)
	}
}

func TestLookupTargets(t *testing.T) {
	h := newTestHost(t)
	id := h.ID().String()
	tests := []struct {
		name    string
		look    Lookup
		want    int
		wantErr error
	}{
		{name: "no records", look: Lookup{}, want: 0},
		{name: "devices", look: Lookup{Devices: []legacywire.DeviceRecord{{Cert: legacywire.Certificate{PeerID: id}, Addrs: []string{"/ip4/127.0.0.1/tcp/1"}}, {Cert: legacywire.Certificate{PeerID: id}}}}, want: 2},
		{name: "route wins", look: Lookup{Devices: make([]legacywire.DeviceRecord, 3), Route: &legacywire.RouteRecord{PeerID: id}}, want: 1},
		{name: "withdrawn route does not", look: Lookup{Devices: []legacywire.DeviceRecord{{Cert: legacywire.Certificate{PeerID: id}}}, Route: &legacywire.RouteRecord{Withdrawn: true}}, want: 1},
		{name: "bad peer id", look: Lookup{Devices: []legacywire.DeviceRecord{{Cert: legacywire.Certificate{PeerID: "nope"}}}}, wantErr: ErrBadRecord},
		{name: "bad address", look: Lookup{Route: &legacywire.RouteRecord{PeerID: id, Addrs: []string{"nope"}}}, wantErr: ErrBadRecord},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.look.Targets()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Targets error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Fatalf("Targets = %v, %v; want %d targets", got, err, tt.want)
			}
		})
	}
}

func TestSupernodeRunRemovesHandler(t *testing.T) {
	auth := newTestAuthority(t)
	snHost := newTestHost(t)
	sn, err := NewSupernode(snHost, SupernodeConfig{Authority: auth.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sn.Run(ctx) }()
	h := newTestHost(t)
	dir := NewDirectory(h, certify(t, auth, h, "alice"), addrInfoOf(snHost))
	if err := dir.Register(testCtx(t)); err != nil {
		t.Fatalf("Register while running: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return after cancel")
	}
	if err := dir.Register(testCtx(t)); err == nil {
		t.Fatal("Register after Run returned succeeded, want an error")
	}
}

func TestSupernodeConfigValidate(t *testing.T) {
	auth := newTestAuthority(t)
	tests := []struct {
		name string
		cfg  SupernodeConfig
		ok   bool
	}{
		{name: "minimal", cfg: SupernodeConfig{Authority: auth.PublicKey()}, ok: true},
		{name: "no authority", cfg: SupernodeConfig{}},
		{name: "negative ttl", cfg: SupernodeConfig{Authority: auth.PublicKey(), RecordTTL: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
