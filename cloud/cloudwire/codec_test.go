package cloudwire

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

var at = time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC)

// goldenFrames holds one example of every frame; testdata/<name>.json pins
// its bytes.
var goldenFrames = []struct {
	name  string
	frame Frame
}{
	{"hello", Hello{Device: "dev-1", Platform: "ios", ClientVersion: "4.2.0", Capabilities: []string{"receipts", "sync"}, Cursor: 41}},
	{"hello_token", Hello{Token: "eyJ.sig", Device: "browser-7", Platform: "web"}},
	{"welcome", Welcome{ProtocolVersion: ProtocolVersion, User: "alice", Role: RoleUser, Device: "dev-1", Session: "0190b6d2-0000-7000-8000-000000000001", Head: 57}},
	{"welcome_notice", Welcome{ProtocolVersion: ProtocolVersion, User: "alice", Role: RoleUser, Device: "dev-1", Session: "0190b6d2-0000-7000-8000-000000000001", Head: 57, Notice: "Your android app (version 4.1.0) is no longer supported; please update to 5.2 or later at https://example.test/update. From 2026-03-04 00:00 UTC, new sign-ins and device links with this version will be refused."}},
	{"send", Send{Ref: "1", To: "bob", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Text: "hi <bob> & co"}},
	{"send_bridge", Send{Ref: "2", As: "carol", To: "alice", Conv: DirectConversationID("alice", "carol"), MsgID: "01J0000000000000000000000A", Text: "from the overlay"}},
	{"send_bridge_device", Send{Ref: "3", As: "carol", To: "alice", MsgID: "01J0000000000000000000000B", Text: "from carol's classic app", Device: "12D3KooWGzBkMkHBnWgHqkfvt9gSjK7PrUB8V5q4TfGqTEBZtC4S"}},
	{"ack", Ack{Ref: "1", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Conv: DirectConversationID("alice", "bob"), Seq: 3, At: at}},
	{"ack_duplicate", Ack{Ref: "9", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Conv: DirectConversationID("alice", "bob"), Seq: 3, At: at, Duplicate: true}},
	{"receipt", Receipt{Ref: "3", Conv: DirectConversationID("alice", "bob"), MsgID: "0190b6d2-1111-7000-8000-00000000000a", Status: StatusRead}},
	{"event_msg", Event{Cursor: 58, User: "bob", Kind: KindMsg, Conv: DirectConversationID("alice", "bob"), Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a", From: "alice", FromDevice: "dev-1", To: "bob", Text: "hi", At: at}},
	{"event_receipt", Event{Cursor: 60, User: "alice", Kind: KindReceipt, Conv: DirectConversationID("alice", "bob"), Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a", From: "alice", FromDevice: "phone", To: "bob", Status: StatusDelivered, By: "bob", At: at}},
	{"receipt_up_to", Receipt{Ref: "4", Conv: DirectConversationID("alice", "bob"), UpTo: 7, Status: StatusRead}},
	{"event_receipt_up_to", Event{Cursor: 61, User: "alice", Kind: KindReceiptUpTo, Conv: DirectConversationID("alice", "bob"), Seq: 7, FromDevice: "tablet", Status: StatusRead, By: "bob", UpTo: 7, At: at}},
	{"history", History{Ref: "5", Conv: DirectConversationID("alice", "bob"), Before: 40, Limit: 2}},
	{"history_after", History{Ref: "6", As: "carol", Conv: DirectConversationID("alice", "carol"), After: 12}},
	{"page", Page{Ref: "5", Conv: DirectConversationID("alice", "bob"), Head: 57, More: true,
		Msgs: []Message{
			{Seq: 38, Kind: KindMsg, MsgID: "0190b6d2-1111-7000-8000-000000000026", From: "alice", FromDevice: "dev-1", To: "bob", Text: "one", At: at},
			{Seq: 39, Kind: KindMsg, MsgID: "0190b6d2-1111-7000-8000-000000000027", From: "bob", To: "alice", Text: "two", At: at},
		},
		Receipts: []ReceiptState{{User: "alice", Delivered: 57, Read: 57}, {User: "bob", Delivered: 39, Read: 12}}}},
	{"page_empty", Page{Ref: "7", Conv: DirectConversationID("alice", "bob"), Msgs: []Message{}}},
	{"group_create", Group{Ref: "10", Op: GroupCreate, MsgID: "0190b6d2-2222-7000-8000-000000000001", Name: "Ferry crew", Members: []string{"bob", "carol"}}},
	{"group_add", Group{Ref: "11", Op: GroupAdd, Conv: GroupConversationID("alice", "0190b6d2-2222-7000-8000-000000000001"), MsgID: "0190b6d2-2222-7000-8000-000000000002", Members: []string{"dave"}}},
	{"send_group", Send{Ref: "12", Conv: GroupConversationID("alice", "0190b6d2-2222-7000-8000-000000000001"), MsgID: "0190b6d2-2222-7000-8000-000000000003", Text: "hello all"}},
	{"event_system_notice", Event{Cursor: 71, User: "alice", Kind: KindSystem, Conv: DirectConversationID(SystemContact, "alice"), Seq: 1, MsgID: "ntc0123456789abcdef0123456789abcdef", From: SystemContact, To: "alice", Text: "Your android app (version 4.1.0) is no longer supported; please update to 5.2 or later.", At: at}},
	{"event_system_moved", Event{Cursor: 72, User: "bob", Kind: KindSystem, Conv: DirectConversationID("alice", "bob"), Seq: 9, MsgID: "sys0123456789abcdef0123456789abcdef", From: "alice", To: "bob", Text: "alice moved to the new app", At: at}},
	{"event_undeliverable", Event{Cursor: 73, User: "alice", Kind: KindUndeliverable, Conv: DirectConversationID("alice", "bob"), Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a", From: "alice", To: "bob", Reason: UndeliverableExpired, At: at}},
	{"event_group", Event{Cursor: 70, User: "dave", Kind: KindGroup, Conv: GroupConversationID("alice", "0190b6d2-2222-7000-8000-000000000001"), Seq: 2, MsgID: "0190b6d2-2222-7000-8000-000000000002", From: "alice", FromDevice: "dev-1", Op: GroupAdd, Members: []string{"dave"}, At: at}},
	{"page_group", Page{Ref: "13", Conv: GroupConversationID("alice", "0190b6d2-2222-7000-8000-000000000001"), Head: 3,
		Msgs: []Message{
			{Seq: 1, Kind: KindGroup, MsgID: "0190b6d2-2222-7000-8000-000000000001", From: "alice", FromDevice: "dev-1", Op: GroupCreate, Members: []string{"alice", "bob", "carol"}, Name: "Ferry crew", At: at},
			{Seq: 2, Kind: KindGroup, MsgID: "0190b6d2-2222-7000-8000-000000000002", From: "alice", FromDevice: "dev-1", Op: GroupAdd, Members: []string{"dave"}, At: at},
			{Seq: 3, Kind: KindMsg, MsgID: "0190b6d2-2222-7000-8000-000000000003", From: "bob", Text: "hello all", At: at},
		}}},
	{"presence", Presence{State: PresenceIdle}},
	{"presence_event", Presence{User: "bob", Device: "b-phone", State: PresenceOffline, At: at}},
	{"presence_snapshot", PresenceSnapshot{Presences: []Presence{
		{User: "alice", Device: "a-laptop", State: PresenceIdle, At: at},
		{User: "bob", Device: "b-phone", State: PresenceActive, At: at},
	}}},
	{"event_placeholder", Event{Cursor: 62, User: "bob", Kind: KindPlaceholder, Conv: DirectConversationID("alice", "bob"), Seq: 8, MsgID: "0190b6d2-1111-7000-8000-00000000000b", At: at}},
	{"typing", Typing{Conv: DirectConversationID("alice", "bob"), Typing: true}},
	{"typing_event", Typing{Conv: DirectConversationID("alice", "bob"), User: "alice", Device: "dev-1", Typing: false}},
	{"call_invite", Call{Ref: "20", Op: CallInvite, CallID: "0190b6d2-3333-7000-8000-000000000001", To: "bob", Media: "audio"}},
	{"call_answer", Call{Ref: "21", Op: CallAnswer, CallID: "0190b6d2-3333-7000-8000-000000000001"}},
	{"call_state_ringing", CallState{CallID: "0190b6d2-3333-7000-8000-000000000001", From: "alice", FromDevice: "dev-1", To: "bob", Media: "audio", State: CallRinging, Ringing: []string{"b-phone"}, At: at}},
	{"call_state_active", CallState{CallID: "0190b6d2-3333-7000-8000-000000000001", From: "alice", FromDevice: "dev-1", To: "bob", State: CallActive, Device: "b-laptop", Reason: ReasonAnsweredElsewhere, At: at}},
	{"call_state_ended", CallState{CallID: "0190b6d2-3333-7000-8000-000000000001", From: "alice", FromDevice: "dev-1", To: "bob", State: CallEnded, Reason: ReasonTimeout, At: at}},
	{"error", Error{Ref: "2", Code: CodeForbidden, Message: "may not act for carol"}},
	{"synced", Synced{Cursor: 57}},
	{"hello_bridge_no_feed", Hello{Device: "bridge-12D3KooW", Platform: "bridge", ClientVersion: "1.0.0", Cursor: 0, NoFeed: true}},
	{"act_open", Act{Ref: "30", Op: ActOpen, As: "carol"}},
	{"act_close", Act{Ref: "31", Op: ActClose, As: "carol"}},
	{"acting", Acting{Ref: "30", Op: ActOpen, As: "carol", Puppets: 3}},
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenFrames {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.frame)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			path := filepath.Join("testdata", tc.name+".json")
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			want = bytes.TrimSuffix(want, []byte("\n"))
			if !bytes.Equal(got, want) {
				t.Errorf("bytes changed (a protocol change needs a ProtocolVersion bump):\n got %s\nwant %s", got, want)
			}
			back, err := Decode(want)
			if err != nil {
				t.Fatalf("Decode golden: %v", err)
			}
			if diff := cmp.Diff(tc.frame, back); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeTypeFirst(t *testing.T) {
	b, err := Encode(Synced{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"type":"synced","cursor":0}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	long := strings.Repeat("x", MaxTextSize+1)
	tests := []struct {
		name    string
		in      string
		want    error
		wantRef string
	}{
		{"too large", `{"type":"send","text":"` + strings.Repeat("a", MaxFrameSize) + `"}`, ErrFrameTooLarge, ""},
		{"invalid utf8", "{\"type\":\"send\",\"text\":\"\xff\"}", ErrInvalidUTF8, ""},
		{"not json", `{"type":`, ErrMalformedFrame, ""},
		{"array", `[1,2]`, ErrMalformedFrame, ""},
		{"null", `null`, ErrMalformedFrame, ""},
		{"no type", `{"ref":"1"}`, ErrMalformedFrame, ""},
		{"type not string", `{"type":7}`, ErrMalformedFrame, ""},
		{"unknown type", `{"type":"teleport","ref":"5"}`, ErrUnknownFrame, "5"},
		{"wrong member type", `{"type":"send","ref":"6","to":7}`, ErrMalformedFrame, "6"},
		{"send without msg id", `{"type":"send","ref":"7","to":"bob","text":"x"}`, ErrInvalidField, "7"},
		{"send bad msg id", `{"type":"send","ref":"7","to":"bob","msg_id":"a.b","text":"x"}`, ErrInvalidField, "7"},
		{"send empty text", `{"type":"send","ref":"8","to":"bob","msg_id":"m1","text":""}`, ErrInvalidField, "8"},
		{"send text too long", `{"type":"send","ref":"9","to":"bob","msg_id":"m1","text":"` + long + `"}`, ErrTextTooLong, "9"},
		{"send control char in to", `{"type":"send","to":"bo\u0000b","msg_id":"m1","text":"x"}`, ErrInvalidField, ""},
		{"receipt bad status", `{"type":"receipt","ref":"r","conv":"d1","msg_id":"m1","status":"seen"}`, ErrInvalidField, "r"},
		{"receipt msg id and up_to", `{"type":"receipt","ref":"r","conv":"d1","msg_id":"m1","up_to":3,"status":"read"}`, ErrInvalidField, "r"},
		{"receipt neither msg id nor up_to", `{"type":"receipt","ref":"r","conv":"d1","status":"read"}`, ErrInvalidField, "r"},
		{"receipt negative up_to", `{"type":"receipt","ref":"r","conv":"d1","up_to":-1,"status":"read"}`, ErrMalformedFrame, "r"},
		{"history before and after", `{"type":"history","ref":"h","conv":"d1","before":3,"after":1}`, ErrInvalidField, "h"},
		{"history limit too big", `{"type":"history","ref":"h","conv":"d1","limit":101}`, ErrInvalidField, "h"},
		{"history without conv", `{"type":"history","ref":"h"}`, ErrInvalidField, "h"},
		{"group bad op", `{"type":"group","ref":"g","op":"merge","msg_id":"m1","members":["bob"]}`, ErrInvalidField, "g"},
		{"group add to a direct conversation", `{"type":"group","ref":"g","op":"add","conv":"d1cb15457d1ddab60e205c0fe3ca2f65d","msg_id":"m1","members":["bob"]}`, ErrInvalidField, "g"},
		{"group add nobody", `{"type":"group","ref":"g","op":"add","conv":"g1","msg_id":"m1","members":[]}`, ErrInvalidField, "g"},
		{"group create with conv", `{"type":"group","ref":"g","op":"create","conv":"g1","msg_id":"m1","members":[]}`, ErrInvalidField, "g"},
		{"group without msg id", `{"type":"group","ref":"g","op":"create","members":[]}`, ErrInvalidField, "g"},
		{"group bad member", `{"type":"group","ref":"g","op":"create","msg_id":"m1","members":[" bob"]}`, ErrInvalidField, "g"},
		{"send to a group with to", `{"type":"send","ref":"s","conv":"g1","to":"bob","msg_id":"m1","text":"x"}`, ErrInvalidField, "s"},
		{"send without to or group", `{"type":"send","ref":"s","conv":"d1","msg_id":"m1","text":"x"}`, ErrInvalidField, "s"},
		{"presence bad state", `{"type":"presence","state":"away"}`, ErrInvalidField, ""},
		{"typing without conv", `{"type":"typing","typing":true}`, ErrInvalidField, ""},
		{"call bad op", `{"type":"call","ref":"c","op":"dial","call_id":"c1"}`, ErrInvalidField, "c"},
		{"call invite without to", `{"type":"call","ref":"c","op":"invite","call_id":"c1"}`, ErrInvalidField, "c"},
		{"call answer with to", `{"type":"call","ref":"c","op":"answer","call_id":"c1","to":"bob"}`, ErrInvalidField, "c"},
		{"call without id", `{"type":"call","ref":"c","op":"answer"}`, ErrInvalidField, "c"},
		{"hello without device", `{"type":"hello"}`, ErrInvalidField, ""},
		{"hello too many capabilities", `{"type":"hello","device":"d","capabilities":[` + strings.Repeat(`"c",`, MaxCapabilities) + `"c"]}`, ErrInvalidField, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Decode([]byte(tc.in))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %v, %v; want error %v", f, err, tc.want)
			}
			var fe *FrameError
			ref := ""
			if errors.As(err, &fe) {
				ref = fe.Ref
			}
			if ref != tc.wantRef {
				t.Errorf("ref = %q, want %q", ref, tc.wantRef)
			}
		})
	}
}

func TestDecodeIgnoresUnknownMembers(t *testing.T) {
	f, err := Decode([]byte(`{"type":"synced","cursor":4,"future":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Frame(Synced{Cursor: 4}), f); diff != "" {
		t.Error(diff)
	}
}

func TestDirectConversationID(t *testing.T) {
	a, b := DirectConversationID("alice", "bob"), DirectConversationID("bob", "alice")
	if a != b {
		t.Fatalf("order-dependent: %s vs %s", a, b)
	}
	if len(a) != 33 || a[0] != 'd' {
		t.Fatalf("bad shape %q", a)
	}
	// Pinned (printf 'alice\nbob' | sha256sum): the other network derives the same id.
	if want := "d1cb15457d1ddab60e205c0fe3ca2f65d"; a != want {
		t.Errorf("DirectConversationID(alice, bob) = %s, want %s", a, want)
	}
	// The separator cannot collide: valid ids hold no control characters.
	if ValidID("a\nb") {
		t.Error("ValidID accepts a newline")
	}
	if !ValidID(a) {
		t.Error("conversation id is not a valid id")
	}
}

func TestGroupConversationID(t *testing.T) {
	g := GroupConversationID("alice", "m1")
	if g != GroupConversationID("alice", "m1") || g == GroupConversationID("bob", "m1") || g == GroupConversationID("alice", "m2") {
		t.Fatalf("not a function of creator and message id: %s", g)
	}
	if !IsGroupID(g) || len(g) != 33 || !ValidID(g) {
		t.Errorf("bad group id %q", g)
	}
	if IsGroupID(DirectConversationID("alice", "bob")) || IsGroupID("g") || IsGroupID("") {
		t.Error("IsGroupID accepts a non-group id")
	}
}

func TestCloseReason(t *testing.T) {
	long := CloseReason{Reason: strings.Repeat("é\"", 100), RetryMS: 1500}
	s := long.String()
	if len(s) > 123 {
		t.Fatalf("close reason of %d bytes", len(s))
	}
	got, ok := ParseCloseReason(s)
	if !ok || got.RetryMS != 1500 || !strings.HasPrefix(long.Reason, got.Reason) {
		t.Errorf("ParseCloseReason(%q) = %+v, %v", s, got, ok)
	}
	if got, ok := ParseCloseReason("plain text"); ok || got.Reason != "plain text" {
		t.Errorf("plain text parsed as %+v, %v", got, ok)
	}
}
