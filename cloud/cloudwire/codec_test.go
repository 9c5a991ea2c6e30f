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
	{"send", Send{Ref: "1", To: "bob", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Text: "hi <bob> & co"}},
	{"send_bridge", Send{Ref: "2", As: "carol", To: "alice", Conv: DirectConversationID("alice", "carol"), MsgID: "01J0000000000000000000000A", Text: "from the overlay"}},
	{"ack", Ack{Ref: "1", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Conv: DirectConversationID("alice", "bob"), Seq: 3, At: at}},
	{"ack_duplicate", Ack{Ref: "9", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Conv: DirectConversationID("alice", "bob"), Seq: 3, At: at, Duplicate: true}},
	{"receipt", Receipt{Ref: "3", Conv: DirectConversationID("alice", "bob"), MsgID: "0190b6d2-1111-7000-8000-00000000000a", Status: StatusRead}},
	{"event_msg", Event{Cursor: 58, User: "bob", Kind: KindMsg, Conv: DirectConversationID("alice", "bob"), Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a", From: "alice", FromDevice: "dev-1", To: "bob", Text: "hi", At: at}},
	{"event_receipt", Event{Cursor: 60, User: "alice", Kind: KindReceipt, Conv: DirectConversationID("alice", "bob"), Seq: 3, MsgID: "0190b6d2-1111-7000-8000-00000000000a", From: "alice", FromDevice: "phone", To: "bob", Status: StatusDelivered, By: "bob", At: at}},
	{"error", Error{Ref: "2", Code: CodeForbidden, Message: "may not act for carol"}},
	{"synced", Synced{Cursor: 57}},
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
