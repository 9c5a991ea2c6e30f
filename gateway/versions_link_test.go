package main

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// spokenBy waits (bounded) until the census says the phone speaks chat
// version v and the user's record lists the phone, re-registering it while
// it waits.
func spokenBy(t *testing.T, ta *testAgent, user string, p *versionedPhone, v int) {
	t.Helper()
	id := p.host.ID().String()
	censusOf(t, ta, user, id, func(d migrate.CensusDevice) bool { return d.Protocol == v }, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.dev.Register(ctx); err != nil {
			t.Logf("re-register %s: %v", user, err)
		}
	})
	for range 200 {
		if u, ok := ta.a.state.Get(user); ok {
			if _, ok := u.Device(id); ok {
				return
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s's record never listed device %s", user, id)
}

// TestVersionGateReadyToCloud: vic's only device is a real phone that
// speaks chat v1 (it claims 7.4.1, like vera's chat v2 phone). Moving vic
// from ready to cloud is refused, through the admin API and the CLI, with
// 409 not_cloud_capable naming the platform, version and what is missing,
// and the refusal is audited; vera moves. A campaign that targets both
// plans vic as held back by gate:device_capability, and its driver moves
// vera and leaves vic in ready.
func TestVersionGateReadyToCloud(t *testing.T) {
	cfg := agentPorts(t)
	cfg.CampaignTick = 20 * time.Millisecond
	ta := startAgent(t, t.TempDir(), cfg)
	vic := newVersionedPhone(t, ta, "vic", 1)
	vera := newVersionedPhone(t, ta, "vera", 2)
	spokenBy(t, ta, "vic", vic, 1)
	spokenBy(t, ta, "vera", vera, 2)
	for _, u := range []string{"vic", "vera"} {
		setPhases(t, ta.admin(), u, migrate.PhaseShadow, migrate.PhaseReady)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/users/vic/phase", phaseRequest{Phase: "cloud", Reason: "test", OpID: "vic-to-cloud"}, nil)
	var re *remoteError
	if !errors.As(err, &re) || re.Status != http.StatusConflict || re.Code != "not_cloud_capable" {
		t.Fatalf("vic ready→cloud: %v, want 409 not_cloud_capable", err)
	}
	for _, want := range []string{"desktop 7.4.1", vic.host.ID().String(), "chat v1", "chat v2"} {
		if !strings.Contains(re.apiError.Error, want) {
			t.Errorf("refusal %q does not say %q", re.apiError.Error, want)
		}
	}
	cli := campaignCLI(ctx, ta)
	if out, err := cli("users", "set-phase", "vic", "cloud", "-reason", "test"); err == nil || !strings.Contains(out+err.Error(), "cloud capability") {
		t.Fatalf("CLI set-phase vic cloud: %q %v, want a refusal", out, err)
	}
	if u, _ := ta.a.state.Get("vic"); u.Phase != migrate.PhaseReady {
		t.Fatalf("vic is in %s after the refusals", u.Phase)
	}
	var audit map[string][]migrate.AuditEvent
	if err := ta.admin().do(ctx, http.MethodGet, "/v1/admin/audit?user=vic", nil, &audit); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditTransition && e.To == string(migrate.PhaseCloud) && e.Result == migrate.ResultRefused && strings.Contains(e.Reason, "chat v1") {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refused ready→cloud moves of vic audited, want 2: %+v", refused, audit["events"])
	}

	// The campaign driver applies the same rule.
	c := migrate.Campaign{Name: "capable", Target: migrate.PhaseCloud, Filter: migrate.Filter{Users: []string{"vic", "vera"}},
		Steps: []migrate.Step{{TargetBP: migrate.BasisPoints}}}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/campaigns", c, nil); err != nil {
		t.Fatal(err)
	}
	var plan migrate.Plan
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/campaigns/capable/plan", commandRequest{Reason: "test"}, &plan); err != nil {
		t.Fatal(err)
	}
	if s := plan.Steps[0]; s.Move != 1 || s.HeldBack[migrate.GateDeviceCapability] != 1 {
		t.Fatalf("plan moves %d, held back %v; want vera moved and vic held by %s", s.Move, s.HeldBack, migrate.GateDeviceCapability)
	}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/campaigns/capable/start", commandRequest{Reason: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	for {
		if u, _ := ta.a.state.Get("vera"); u.Phase == migrate.PhaseCloud {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the campaign never moved vera to cloud")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if u, _ := ta.a.state.Get("vic"); u.Phase != migrate.PhaseReady {
		t.Fatalf("the campaign moved vic to %s", u.Phase)
	}
}

// TestVersionLinkRefusedInCloud: once lina's home is the cloud, a new
// legacy device of hers that speaks chat v1 is refused at registration with
// upgrade_required and a notice, and one that speaks chat v2 is linked;
// with a policy for the web platform that requires a capability (still in
// its draft stage), a new cloud device without it is refused with 4426 and
// the JSON reason, and one with it opens. (Users still on the overlay
// link chat v1 phones: vic's in TestVersionGateReadyToCloud.)
func TestVersionLinkRefusedInCloud(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "lina", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A new chat v1 phone of lina's. The supernode waits (bounded) for
	// identify before judging, so its first registration is judged on the
	// protocol it speaks.
	h, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	var cert legacywire.Certificate
	req := certRequest{PeerID: h.ID().String(), User: "lina", Platform: "desktop", ClientVersion: "7.4.1"}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert); err != nil {
		t.Fatal(err)
	}
	dev, err := legacy.NewDevice(legacy.DeviceConfig{Host: h, Cert: cert, Authority: agentAuthority(t, ta), Supernode: ta.supernode(t), MaxChatVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	err = dev.Register(ctx)
	var up *legacy.UpgradeRequiredError
	if !errors.As(err, &up) {
		t.Fatalf("lina's new chat v1 device registered: %v, want %s", err, legacywire.CodeUpgradeRequired)
	}
	for _, want := range []string{"moved", "desktop", "7.4.1", "chat v1", "chat v2"} {
		if !strings.Contains(up.Notice, want) {
			t.Errorf("notice %q does not say %q", up.Notice, want)
		}
	}
	if u, _ := ta.a.state.Get("lina"); len(u.Devices) != 0 {
		t.Fatalf("a refused device was linked: %+v", u.Devices)
	}
	lina2 := newVersionedPhone(t, ta, "lina", 2) // registers, or fails the test
	spokenBy(t, ta, "lina", lina2, 2)

	// Cloud: a policy in draft that requires "sync".
	pol := migrate.VersionPolicy{Platform: "web", RequiredCaps: []string{"sync"}, UpdateURL: "https://example.test/web"}
	if _, err := ta.a.versions.policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	dial := func(user, device string, caps []string) error {
		c, err := cloud.Dial(ctx, cloud.ClientConfig{URL: ta.a.cloudURL(), Token: userToken(t, ta, user),
			Hello: cloudwire.Hello{Device: device, Platform: "web", ClientVersion: "1.0.0", Capabilities: caps}})
		if err == nil {
			c.Close()
		}
		return err
	}
	err = dial("lina", "old-web", nil)
	var cup *cloud.UpgradeRequiredError
	// (The notice itself rarely fits in the 123 bytes of a close reason;
	// the update URL does.)
	if !errors.As(err, &cup) || cup.Reason.UpdateURL != "https://example.test/web" {
		t.Fatalf("lina's new web device without sync: %v, want 4426 with the reason", err)
	}
	if err := dial("lina", "new-web", []string{"sync"}); err != nil {
		t.Fatalf("lina's new web device with sync: %v", err)
	}
}

// TestNoticesUserReserved: the system contact's id is one constant on
// every network, and nothing creates a user with it (or with it in another
// case): no certificate, token, user record or admin call, and a
// certificate minted for it anyway is refused at registration.
func TestNoticesUserReserved(t *testing.T) {
	if legacywire.NoticesUser != migrate.NoticesUser || cloudwire.SystemContact != migrate.NoticesUser {
		t.Fatalf("system contact ids differ: legacy %q, cloud %q, migrate %q", legacywire.NoticesUser, cloudwire.SystemContact, migrate.NoticesUser)
	}
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	h, err := legacy.NewHost(legacy.HostConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, id := range []string{migrate.NoticesUser, "Ferry-Notices"} {
		for name, call := range map[string]func() error{
			"certificate": func() error {
				return ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates",
					certRequest{PeerID: h.ID().String(), User: id, Platform: "desktop", ClientVersion: "7.4.1"}, nil)
			},
			"token": func() error {
				return ta.admin().do(ctx, http.MethodPost, "/v1/admin/cloud/tokens", map[string]string{"user": id}, nil)
			},
			"set-phase": func() error {
				return ta.admin().do(ctx, http.MethodPost, "/v1/admin/users/"+id+"/phase", phaseRequest{Phase: "shadow", Reason: "test"}, nil)
			},
			"hold": func() error {
				return ta.admin().do(ctx, http.MethodPost, "/v1/admin/users/"+id+"/hold", map[string]string{"reason": "test"}, nil)
			},
		} {
			err := call()
			var re *remoteError
			if !errors.As(err, &re) || re.Status != http.StatusBadRequest || !strings.Contains(re.apiError.Error, "system contact") {
				t.Errorf("%s for %s: %v, want 400 naming the system contact", name, id, err)
			}
		}
		if _, err := ta.a.store.SeeDevice(ctx, id, migrate.Device{ID: "d", Platform: "desktop", ClientVersion: "1.0"}); !errors.Is(err, migrate.ErrReservedUserID) {
			t.Errorf("user record for %s: %v, want ErrReservedUserID", id, err)
		}
		if _, ok := ta.a.state.Get(id); ok {
			t.Errorf("a record of %s exists", id)
		}
	}
	cert, err := ta.a.authority.Certify(h.ID(), migrate.NoticesUser, "desktop", "7.4.1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, notice := ta.a.admitLegacy(cert); code != legacywire.CodeBadCertificate || !strings.Contains(notice, "reserved") {
		t.Fatalf("registration as the system contact: %q %q, want %s", code, notice, legacywire.CodeBadCertificate)
	}
}

// TestVersionBridgeSessions: legacy devices the bridge talks to (senders
// to cloud_user cora) are counted in the census with source "bridge" and
// the chat version they announced to the bridge, and the version policy is
// enforced on them as at registration: a blocked version's message is
// refused with upgrade_required and the notice, and a device in a warning
// stage is delivered and told once by the system contact.
func TestVersionBridgeSessions(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "cora", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	var pc, qc, wc legacywire.Certificate
	pete := newVersionedPhoneWith(t, ta, "pete", 2, certifyAs(t, ta, "desktop", "7.4.1", &pc))
	quinn := newVersionedPhoneWith(t, ta, "quinn", 3, certifyAs(t, ta, "android", "4.1.0", &qc))
	wes := newVersionedPhoneWith(t, ta, "wes", 2, certifyAs(t, ta, "ios", "2.0.0", &wc))
	for _, p := range []*versionedPhone{pete, quinn, wes} {
		p.waitRoute(t, "cora", ta.a.brHost)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	now := time.Now().UTC()
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/versions/block", blockRequest{Platform: "android", Version: "4.1.0", Reason: "test"}, nil); err != nil {
		t.Fatal(err)
	}
	warn := retireRequest{Platform: "ios", Below: "3.0", Reason: "test",
		Schedule: []migrate.StageAt{{Stage: migrate.StageWarning, At: now.Add(-time.Hour)}, {Stage: migrate.StageSoftBlock, At: now.Add(48 * time.Hour)}}}
	if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/versions/retire", warn, nil); err != nil {
		t.Fatal(err)
	}
	before := metricValues(t, ta, "gateway_versions_notices_total")["legacy/delivered"]

	if _, ack, err := pete.dev.Send(ctx, "cora", "hi cora"); err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("pete → cora: %+v %v", ack, err)
	}
	censusOf(t, ta, "pete", pete.host.ID().String(), func(d migrate.CensusDevice) bool {
		return d.Source == migrate.SourceBridge && d.Protocol == 2
	}, nil)

	_, ack, err := quinn.dev.Send(ctx, "cora", "hi cora")
	var re *legacy.RefusedError
	switch {
	case errors.As(err, &re) && re.Code == legacywire.CodeUpgradeRequired && strings.Contains(re.Message, "4.1.0"):
	case err == nil && ack.Code == legacywire.CodeUpgradeRequired && strings.Contains(ack.Error, "4.1.0"):
	default:
		t.Fatalf("quinn (android 4.1.0, blocked) → cora: %+v %v, want %s with the notice", ack, err, legacywire.CodeUpgradeRequired)
	}
	q := censusOf(t, ta, "quinn", quinn.host.ID().String(), func(d migrate.CensusDevice) bool { return d.Source == migrate.SourceBridge }, nil)
	if q.Protocol != 3 {
		t.Errorf("quinn's census entry %+v: want chat v3 as announced to the bridge", q)
	}

	if _, ack, err := wes.dev.Send(ctx, "cora", "hi cora"); err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("wes (ios 2.0.0, warned) → cora: %+v %v", ack, err)
	}
	if _, ack, err := wes.dev.Send(ctx, "cora", "again"); err != nil || ack.Status != legacywire.StatusDelivered {
		t.Fatalf("wes → cora again: %+v %v", ack, err)
	}
	if got := metricValues(t, ta, "gateway_versions_notices_total")["legacy/delivered"]; got != before+1 {
		t.Fatalf("notices delivered to overlay devices went from %v to %v; want wes told once", before, got)
	}
	decisions := metricValues(t, ta, "gateway_versions_decisions_total")
	if decisions["hard_block/android/draft"] != 1 || decisions["warn/ios/warning"] != 1 { // outcome/platform/stage
		t.Fatalf("decisions %v: want one android hard block and one ios warning through the bridge", decisions)
	}
}

// TestVersionNegotiatedNotClaimed: cleo's certificate claims chat v3 (the
// chat1..chat3 capabilities) but her client speaks chat v2. What she gets
// follows what she speaks: the census records chat v2, a file offer (a v3
// feature) she sends the bridge on the stream she negotiated is refused as
// unsupported, and a policy with a chat v3 minimum refuses her on the
// protocol she speaks, whatever she claims.
func TestVersionNegotiatedNotClaimed(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	setPhases(t, ta.admin(), "cora", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	var cert legacywire.Certificate
	claimsV3 := func(dc *legacy.DeviceConfig) {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		req := certRequest{PeerID: dc.Host.ID().String(), User: dc.Cert.User, Platform: "desktop", ClientVersion: "9.0.0",
			Capabilities: []string{legacywire.CapChat1, legacywire.CapChat2, legacywire.CapChat3}}
		if err := ta.admin().do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert); err != nil {
			t.Fatal(err)
		}
		dc.Cert = cert
	}
	cleo := newVersionedPhoneWith(t, ta, "cleo", 2, claimsV3)
	spokenBy(t, ta, "cleo", cleo, 2)
	if d, _ := ta.a.devices.census.Get("cleo", cleo.host.ID().String()); !slices.Contains(d.Capabilities, legacywire.CapChat3) {
		t.Fatalf("census entry %+v: want the claimed chat3 kept beside the spoken chat v2", d)
	}
	cleo.waitRoute(t, "cora", ta.a.brHost)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	offer := legacywire.FileOffer{ID: "f-1", From: "cleo", To: "cora", Name: "a.txt", Size: 3, ChunkSize: 1024,
		SHA256: strings.Repeat("ab", 32), SentAt: time.Now().UTC().Truncate(time.Millisecond)}
	br := peer.AddrInfo{ID: ta.a.brHost.ID(), Addrs: ta.a.brHost.Addrs()}
	frame := legacywire.ChatFrame{Type: legacywire.FrameFileOffer, ID: offer.ID, FileOffer: &offer}
	// Her client degrades the offer to a text notice on the v2 stream it
	// negotiated...
	ack, v, err := legacy.SendChatFrame(ctx, cleo.host, cert, br, 2, frame)
	if err != nil || v != 2 || !ack.Delivered() {
		t.Fatalf("cleo's file offer over chat v2: ack %+v, v%d, %v; want delivered as a notice on v2", ack, v, err)
	}
	// ...and one forced onto that stream is refused by the bridge, whatever
	// her certificate claims.
	s, err := cleo.host.NewStream(ctx, br.ID, legacywire.ChatV2ProtocolID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	w := bufio.NewWriter(s)
	if err := legacywire.WriteFrame(w, legacywire.ChatHello{Cert: cert}); err != nil {
		t.Fatal(err)
	}
	if err := legacywire.WriteFrame(w, frame); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(within))
	var resp legacywire.ChatFrame
	if err := legacywire.ReadFrame(bufio.NewReader(s), &resp); err != nil || resp.Ack == nil || resp.Ack.Code != legacywire.CodeUnsupported {
		t.Fatalf("a file offer forced onto cleo's chat v2 stream: %+v %v; want refused %s", resp.Ack, err, legacywire.CodeUnsupported)
	}

	pol := migrate.VersionPolicy{Platform: "desktop", MinLegacyProtocol: 3, Schedule: []migrate.StageAt{{Stage: migrate.StageRetired, At: time.Now().Add(-time.Hour)}}}
	if _, err := ta.a.versions.policies.Put(ctx, pol); err != nil {
		t.Fatal(err)
	}
	code, notice := ta.a.admitLegacy(cert)
	if code != legacywire.CodeUpgradeRequired || !strings.Contains(notice, "lacks features") {
		t.Fatalf("a chat v2 speaker claiming chat v3 under a chat v3 minimum: %q %q, want %s", code, notice, legacywire.CodeUpgradeRequired)
	}
}
