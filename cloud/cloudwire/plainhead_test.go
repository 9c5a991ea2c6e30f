package cloudwire

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// TestPlainHeadFolding: encoding/json matches member names under Unicode
// simple folding; plainHead relies on no rune but the ASCII letters
// themselves folding to a letter of "type" or "ref".
func TestPlainHeadFolding(t *testing.T) {
	for _, r := range "typeref" {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f >= 0x80 {
				t.Errorf("%q folds to %q", r, f)
			}
		}
	}
}

func TestPlainHead(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "": the full path
	}{
		{`{"type":"send","ref":"1","to":"bob","msg_id":"m","text":"hi"}`, "send"},
		{`{"type":"ack","msg_id":"m","conv":"c","seq":1,"at":"2026-01-01T00:00:00.000Z"}`, "ack"},
		{`{"type":"typing"}`, "typing"},
		{`{"type":"send","TYPE":"ack"}`, ""},
		{`{"type":"send","\u0074ype":"ack"}`, ""},
		{`{"type":"event","Ref":5}`, ""},      // Event has no ref of its own
		{`{"type":"send","Ref":"x"}`, "send"}, // Send's own ref fails alike
		{`{"type":"nope","a":1}`, ""},
		{`{"type":"send"`, ""},
		{`{"type":"Send","a":1}`, ""},
		{` {"type":"send"}`, ""},
	} {
		got, _, ok := plainHead([]byte(tc.in))
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("plainHead(%s) = %q, %v; want %q", tc.in, got, ok, tc.want)
		}
	}
}

// FuzzDecodeMatchesFull: Decode answers every input as decodeFull, the
// path that reads the head of any frame first, does.
func FuzzDecodeMatchesFull(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(bytes.TrimSpace(b))
		}
	}
	for _, s := range []string{
		`{"type":"send","ref":1,"to":"bob","msg_id":"m","text":"x"}`,
		`{"type":"event","cursor":1,"user":"u","kind":"msg","conv":"c","seq":1,"at":"2026-01-01T00:00:00.000Z","rEf":[]}`,
		`{"type":"ack","msg_id":"m","conv":"c","seq":1,"at":"x","TyPe":"event"}`,
		`{"type":"send","to":"b","msg_id":"m","text":"\u0022type\u0022"}`,
	} {
		f.Add([]byte(s))
	}
	for _, fr := range hotFrames() {
		if b, err := Encode(fr); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := Decode(b)
		if len(b) > MaxFrameSize || !utf8.Valid(b) {
			return
		}
		want, werr := decodeFull(b)
		if !reflect.DeepEqual(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("Decode(%s) = %#v, %v; full path %#v, %v", b, got, gerr, want, werr)
		}
	})
}

// hotFrames are sends, acks and events with every kind of member.
func hotFrames() []Frame {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891e6, time.UTC)
	var out []Frame
	for _, s := range hotStrings {
		out = append(out,
			Send{Ref: "1", As: "carol", To: "bob", Conv: "d1cb15457d1ddab60e205c0fe3ca2f65d", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Text: s, Device: "dev-1"},
			Send{To: "bob", MsgID: "0190b6d2-1111-7000-8000-00000000000a", Text: s},
			Ack{Ref: s, MsgID: "m", Conv: "c", Seq: 1<<64 - 1, Duplicate: true, At: at},
			Event{Cursor: 9, User: "bob", Kind: KindMsg, Conv: "c", Seq: 3, MsgID: "m", From: "alice", FromDevice: "d", To: "bob", Text: s, At: at},
			Event{Cursor: 10, User: "alice", Kind: KindGroup, Conv: "g", Seq: 2, Status: "read", By: "bob", UpTo: 2, Op: "add", Members: []string{"dave", s}, Name: s, Reason: "x", At: at},
		)
	}
	return out
}

// TestDecodePlainTakesEncoded: what Encode writes of the hot frames is
// read by hand (when its strings need no escapes), to the frame the full
// path reads.
func TestDecodePlainTakesEncoded(t *testing.T) {
	for _, fr := range hotFrames() {
		b, err := Encode(fr)
		if err != nil {
			t.Fatal(err)
		}
		typ, rest, ok := plainHead(b)
		got, plain := decodePlain(b, typ, rest)
		want, werr := decodeFull(b)
		if plain && (!ok || !reflect.DeepEqual(got, want)) {
			t.Errorf("%s: by hand %#v, full path %#v (%v)", b, got, want, werr)
		}
		if escapes := bytes.ContainsAny(b, "\\") || bytes.Contains(b, []byte("TYPE")); !plain && !escapes && werr == nil {
			t.Errorf("%s: not read by hand", b)
		}
	}
}
