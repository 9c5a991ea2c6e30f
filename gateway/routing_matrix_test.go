package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// matrixPhases are the rows (sender) and columns (recipient) of DESIGN.md's
// routing matrix, each with the steps that lead there from legacy.
var matrixPhases = []struct {
	phase migrate.Phase
	steps []migrate.Phase
}{
	{migrate.PhaseLegacy, nil},
	{migrate.PhaseShadow, []migrate.Phase{migrate.PhaseShadow}},
	{migrate.PhaseReady, []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady}},
	{migrate.PhaseCloud, []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud}},
	{migrate.PhaseFinalized, []migrate.Phase{migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud, migrate.PhaseFinalized}},
}

// matrixUser is one user of the matrix, with a device at their inbound
// home: a chat v3 legacy device while the overlay is home, a cloud device
// once the cloud is (their legacy devices go through the bridge then, or
// are refused when finalized, and are not what the matrix is about).
type matrixUser struct {
	name     string
	phase    migrate.Phase
	phone    *livePhone
	cloud    *cloudDevice
	presence string // the presence this user published last
}

func (u *matrixUser) cloudHome() bool { return u.phone == nil }

// matrixKinds are the kinds of traffic, each sent by s to r and asserted
// at r's inbound home. A kind with cloudSenders runs only in the rows of
// cloud-home senders: legacy chat (v1 to v3) has no groups, so a
// legacy-home user gets group messages (the cloud rows' legacy columns)
// but has no way to send one; that cell does not exist.
var matrixKinds = []struct {
	name         string
	run          func(m *matrix, t *testing.T, s, r *matrixUser)
	cloudSenders bool
}{
	{"message", (*matrix).message, false},
	{"receipt", (*matrix).receipt, false},
	{"typing", (*matrix).typing, false},
	{"presence", (*matrix).presence, false},
	{"call_invite", (*matrix).callInvite, false},
	{"file", (*matrix).file, false},
	{"group_message", (*matrix).groupMessage, true},
}

type matrix struct {
	ta  *testAgent
	ctx context.Context
}

// TestRoutingMatrix runs every cell of the routing matrix (sender phase ×
// recipient phase over legacy, shadow, ready, cloud, finalized) for every
// kind of traffic on one agent, and asserts where each item is delivered:
// at the recipient's inbound home, whatever the sender's. Messages also
// check the route decision counted (native, interop, or none when two
// legacy devices talk directly).
func TestRoutingMatrix(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	m := &matrix{ta: ta, ctx: ctx}

	var senders, recipients []*matrixUser
	for _, p := range matrixPhases {
		for _, role := range []string{"s", "r"} {
			u := &matrixUser{name: role + "-" + string(p.phase), phase: p.phase}
			setPhases(t, ta.admin(), u.name, p.steps...)
			if p.phase != migrate.PhaseCloud && p.phase != migrate.PhaseFinalized {
				u.phone = newLivePhone(t, ta, u.name, 3)
			}
			if role == "s" {
				senders = append(senders, u)
			} else {
				recipients = append(recipients, u)
			}
		}
	}
	// A cloud session looks its user's contacts up once per 30 s
	// (cloud/presence.go), so the cloud-home users share their one-to-one
	// conversations before the devices of the matrix connect.
	for _, s := range senders {
		if !s.cloudHome() {
			continue
		}
		setup := dialCloud(t, ta, s.name, s.name+"-setup", 0)
		for _, r := range recipients {
			if r.cloudHome() {
				if _, err := setup.c.Send(ctx, cloudwire.Send{To: r.name, MsgID: uuid.Must(uuid.NewV7()).String(), Text: "setup"}); err != nil {
					t.Fatal(err)
				}
			}
		}
		setup.c.Close()
	}
	probe := senders[0].phone
	for _, u := range slices.Concat(senders, recipients) {
		if u.cloudHome() {
			probe.waitRoute(t, u.name, ta.a.brHost)
			u.cloud = dialCloud(t, ta, u.name, u.name+"-laptop", 0)
		}
	}

	for _, s := range senders {
		for _, r := range recipients {
			t.Run(fmt.Sprintf("%s_to_%s", s.phase, r.phase), func(t *testing.T) {
				for _, k := range matrixKinds {
					if k.cloudSenders && !s.cloudHome() {
						continue
					}
					t.Run(k.name, func(t *testing.T) { k.run(m, t, s, r) })
				}
			})
		}
	}
}

// send sends a one-to-one message from s to r at s's home and returns its id.
func (m *matrix) send(t *testing.T, s, r *matrixUser, text string) string {
	t.Helper()
	if !s.cloudHome() {
		sent, ack, err := s.phone.dev.Send(m.ctx, r.name, text)
		if err != nil || ack.Status != legacywire.StatusDelivered {
			t.Fatalf("%s → %s: %+v %v", s.name, r.name, ack, err)
		}
		return sent.ID
	}
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := s.cloud.c.Send(m.ctx, cloudwire.Send{To: r.name, MsgID: id, Text: text}); err != nil {
		t.Fatalf("%s → %s: %v", s.name, r.name, err)
	}
	return id
}

// expectMsg waits for message id from s at r's home and returns its
// conversation (empty on the overlay).
func (m *matrix) expectMsg(t *testing.T, s, r *matrixUser, id, text string) string {
	t.Helper()
	if !r.cloudHome() {
		for {
			got := r.phone.nextMsg(t)
			if got.ID != id {
				continue
			}
			if got.From != s.name || got.Text != text {
				t.Fatalf("%s's device got %+v, want %q from %s", r.name, got, text, s.name)
			}
			return ""
		}
	}
	for {
		ev, _ := r.cloud.next(t, cloudwire.KindMsg)
		if ev.MsgID != id {
			continue
		}
		if ev.From != s.name || ev.Text != text {
			t.Fatalf("%s's cloud device got %+v, want %q from %s", r.name, ev, text, s.name)
		}
		return ev.Conv
	}
}

func (m *matrix) message(t *testing.T, s, r *matrixUser) {
	path := ""
	switch {
	case s.cloudHome() && r.cloudHome():
		path = "native"
	case s.cloudHome() != r.cloudHome():
		path = "interop"
	}
	series := fmt.Sprintf(`gateway_bridge_route_decisions_total{kind="msg",path=%q}`, path)
	var before float64
	if path != "" {
		before = seriesValue(t, m.ta, series)
	}
	text := "hello " + r.name + " from " + s.name
	id := m.send(t, s, r, text)
	m.expectMsg(t, s, r, id, text)
	if path == "" {
		return // device to device on the overlay: the agent makes no decision
	}
	waitUntil(t, within, func() bool { return seriesValue(t, m.ta, series) >= before+1 },
		func() string { return series + " did not count the message" })
}

// receipt: r sends s a message, s reads it, and the read receipt reaches
// r's home.
func (m *matrix) receipt(t *testing.T, s, r *matrixUser) {
	text := "read me, " + s.name
	id := m.send(t, r, s, text)
	conv := m.expectMsg(t, r, s, id, text)
	if !s.cloudHome() {
		if n, err := s.phone.dev.SendReceipt(m.ctx, r.name, id, legacywire.ReceiptRead); err != nil || n < 1 {
			t.Fatalf("read receipt: %d devices, %v", n, err)
		}
	} else if err := s.cloud.c.Receipt(m.ctx, cloudwire.Receipt{Conv: conv, MsgID: id, Status: cloudwire.StatusRead}); err != nil {
		t.Fatal(err)
	}
	if !r.cloudHome() {
		timeout := time.After(within)
		for {
			select {
			case rc := <-r.phone.receipts:
				if rc.MsgID == id && rc.Status == legacywire.ReceiptRead {
					if rc.Reader != s.name {
						t.Fatalf("receipt %+v, want read by %s", rc, s.name)
					}
					return
				}
			case <-timeout:
				t.Fatalf("%s's read receipt never reached %s's device", s.name, r.name)
			}
		}
	}
	for {
		ev, _ := r.cloud.next(t, cloudwire.KindReceipt)
		if ev.MsgID == id && ev.Status == cloudwire.StatusRead {
			if ev.By != s.name {
				t.Fatalf("receipt %+v, want read by %s", ev, s.name)
			}
			return
		}
	}
}

func (m *matrix) typing(t *testing.T, s, r *matrixUser) {
	conv := cloudwire.DirectConversationID(s.name, r.name)
	if !s.cloudHome() {
		if n, err := s.phone.dev.SendTyping(m.ctx, r.name, true); err != nil || n < 1 {
			t.Fatalf("typing: %d devices, %v", n, err)
		}
	} else if err := s.cloud.c.SetTyping(m.ctx, conv, true); err != nil {
		t.Fatal(err)
	}
	if !r.cloudHome() {
		if ty := r.phone.nextTyping(t, s.name); ty.To != r.name || !ty.Active {
			t.Fatalf("%s's device got typing %+v", r.name, ty)
		}
		return
	}
	r.cloud.nextLive(t, s.name+"'s typing", func(f cloudwire.Frame) bool {
		ty, ok := f.(cloudwire.Typing)
		return ok && ty.User == s.name && ty.Conv == conv && ty.Typing
	})
}

// presence: r watches s (a legacy device subscribes; a cloud user shares
// the conversation of the message above), s changes presence at home, and
// the new state reaches r's home.
func (m *matrix) presence(t *testing.T, s, r *matrixUser) {
	state := legacywire.PresenceIdle
	if s.presence == state {
		state = legacywire.PresenceActive
	}
	s.presence = state
	if !r.cloudHome() {
		if n, err := r.phone.dev.SubscribePresence(m.ctx, s.name); err != nil || n < 1 {
			t.Fatalf("subscribe to %s: %d devices, %v", s.name, n, err)
		}
	}
	if s.cloudHome() {
		if err := s.cloud.c.SetPresence(m.ctx, state); err != nil {
			t.Fatal(err)
		}
		if r.cloudHome() {
			r.cloud.nextLive(t, s.name+"'s presence", func(f cloudwire.Frame) bool {
				p, ok := f.(cloudwire.Presence)
				return ok && p.User == s.name && p.State == state
			})
		} else {
			r.phone.nextPresence(t, s.name, state)
		}
		return
	}
	if r.cloudHome() {
		publishUntilSeen(t, s.phone, r.cloud, state)
		return
	}
	if n, err := s.phone.dev.PublishPresence(m.ctx, state); err != nil || n < 1 {
		t.Fatalf("publish presence: %d subscribers, %v", n, err)
	}
	r.phone.nextPresence(t, s.name, state)
}

// callInvite: s calls r from s's home and the call rings at r's home (the
// cloud device, or the legacy device natively or through the bridge); s
// then cancels, and r's side ends too.
func (m *matrix) callInvite(t *testing.T, s, r *matrixUser) {
	var id string
	var out *legacy.Call
	if s.cloudHome() {
		id = uuid.Must(uuid.NewV7()).String()
		if _, err := s.cloud.c.Call(m.ctx, cloudwire.Call{Op: cloudwire.CallInvite, CallID: id, To: r.name, Media: "audio"}); err != nil {
			t.Fatal(err)
		}
	} else {
		c, err := s.phone.dev.Call(m.ctx, r.name, legacywire.CallAudio)
		if err != nil {
			t.Fatalf("%s calls %s: %v", s.name, r.name, err)
		}
		out, id = c, c.ID()
	}
	var in *legacy.Call
	if r.cloudHome() {
		r.cloud.nextLive(t, "the ringing call", func(f cloudwire.Frame) bool {
			cs, ok := f.(cloudwire.CallState)
			return ok && cs.CallID == id && cs.State == cloudwire.CallRinging && slices.Contains(cs.Ringing, r.name+"-laptop")
		})
	} else {
		in = nextIncomingCall(t, r.phone.incoming, s.name)
		if in.ID() != id {
			t.Fatalf("the legacy device rings call %s, want %s", in.ID(), id)
		}
	}
	if out == nil {
		if _, err := s.cloud.c.Call(m.ctx, cloudwire.Call{Op: cloudwire.CallCancel, CallID: id}); err != nil {
			t.Fatal(err)
		}
	} else if err := out.HangUp(m.ctx); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if in == nil {
		r.cloud.nextLive(t, "the cancelled call", func(f cloudwire.Frame) bool {
			cs, ok := f.(cloudwire.CallState)
			return ok && cs.CallID == id && cs.State == cloudwire.CallEnded
		})
	} else {
		waitCallState(t, in, legacy.CallCancelled)
	}
}

// file: s sends r a file from s's home (a chat v3 offer, or an upload and
// a file message) and r's home gets the same bytes: the legacy device
// accepts the offer (from s's device or from the bridge, which serves it
// out of the cloud's object store), the cloud device downloads the file
// message's attachment (which the bridge stored, for a legacy sender).
func (m *matrix) file(t *testing.T, s, r *matrixUser) {
	data := patterned(20<<10 + len(s.name)*7 + len(r.name))
	name := s.name + "-to-" + r.name + ".bin"
	var id string
	if !s.cloudHome() {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		offer, res, err := s.phone.dev.OfferFile(m.ctx, r.name, path)
		if err != nil || res.Offered < 1 {
			t.Fatalf("%s offers %s a file: %+v, %v", s.name, r.name, res, err)
		}
		id = offer.ID
	} else {
		f, err := cloud.UploadFile(m.ctx, http.DefaultClient, m.ta.a.cloudURL(), userToken(t, m.ta, s.name),
			cloud.FileUpload{To: r.name, Name: name, Data: data})
		if err != nil {
			t.Fatal(err)
		}
		id = uuid.Must(uuid.NewV7()).String()
		if _, err := s.cloud.c.Send(m.ctx, cloudwire.Send{To: r.name, MsgID: id, Text: name, File: &f}); err != nil {
			t.Fatal(err)
		}
	}
	if !r.cloudHome() {
		o := waitOffer(t, r.phone.offers)
		for o.ID != id {
			o = waitOffer(t, r.phone.offers)
		}
		if o.From != s.name || o.Name != name || o.Size != int64(len(data)) {
			t.Fatalf("%s's device got offer %+v, want %s of %d bytes", r.name, o, name, len(data))
		}
		out := filepath.Join(t.TempDir(), "got-"+name)
		if err := r.phone.dev.AcceptFile(m.ctx, o.ID, out); err != nil {
			t.Fatalf("%s accepts %s's file: %v", r.name, s.name, err)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if sha256Hex(got) != sha256Hex(data) {
			t.Fatalf("%s's device saved %d bytes that differ from the %d sent", r.name, len(got), len(data))
		}
		return
	}
	for {
		ev, _ := r.cloud.next(t, cloudwire.KindMsg)
		if ev.MsgID != id {
			continue
		}
		if ev.From != s.name || ev.File == nil || ev.File.Name != name || ev.File.SHA256 != sha256Hex(data) {
			t.Fatalf("%s's cloud device got %+v (file %+v), want %s from %s", r.name, ev, ev.File, name, s.name)
		}
		got, err := cloud.DownloadFile(m.ctx, http.DefaultClient, m.ta.a.cloudURL(), userToken(t, m.ta, r.name), ev.File.ID)
		if err != nil {
			t.Fatal(err)
		}
		if sha256Hex(got) != sha256Hex(data) {
			t.Fatalf("%s downloaded %d bytes that differ from the %d sent", r.name, len(got), len(data))
		}
		return
	}
}

func (m *matrix) groupMessage(t *testing.T, s, r *matrixUser) {
	name := s.name + " and " + r.name
	g, err := s.cloud.c.Group(m.ctx, cloudwire.Group{Op: cloudwire.GroupCreate, MsgID: uuid.Must(uuid.NewV7()).String(),
		Name: name, Members: []string{r.name}})
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.Must(uuid.NewV7()).String()
	if _, err := s.cloud.c.Send(m.ctx, cloudwire.Send{Conv: g.Conv, MsgID: id, Text: "to the group"}); err != nil {
		t.Fatal(err)
	}
	if !r.cloudHome() {
		m.expectMsg(t, s, r, id, "["+name+"] to the group")
		return
	}
	if conv := m.expectMsg(t, s, r, id, "to the group"); conv != g.Conv {
		t.Fatalf("group message in %s, want %s", conv, g.Conv)
	}
}
