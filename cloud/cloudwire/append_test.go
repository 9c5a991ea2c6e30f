package cloudwire

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// hotStrings are strings every JSON string escape applies to.
var hotStrings = []string{
	"", "bob", "a\"b\\c", "<script>&amp;</script>", "tab\tnl\nrc\rbs\bff\f", "\x00\x01\x1f\x7f",
	"héllo wörld 🙂", "line\u2028sep\u2029", "bad \xff\xfe utf8 \xc3", "\xed\xa0\x80", strings.Repeat("x", 300),
}

func TestHotFramesMatchReflect(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 891_234_567, time.FixedZone("X", 5*3600+1800))
	var frames []Frame
	for _, s := range hotStrings {
		frames = append(frames,
			Ack{Ref: s, MsgID: s, Conv: s, Seq: 7, At: at},
			Ack{MsgID: s, Duplicate: true, At: time.Time{}},
			Event{Cursor: 1<<64 - 1, User: s, Kind: KindMsg, Conv: s, Seq: 3, MsgID: s, From: s, FromDevice: s, To: s, Text: s, At: at},
			Event{User: s, Kind: KindReceiptUpTo, Status: s, By: s, UpTo: 9, Op: s, Name: s, Reason: s, Members: []string{s, "b", s}, At: at.Local()},
			Event{Members: []string{}, At: time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC)},
			Send{Ref: s, As: s, To: s, Conv: s, MsgID: s, Text: s, Device: s},
			Send{},
		)
	}
	for _, f := range frames {
		want, werr := encodeReflect(f)
		got, gerr := Encode(f)
		if !bytes.Equal(got, want) || (gerr == nil) != (werr == nil) {
			t.Errorf("%#v:\n got %s (%v)\nwant %s (%v)", f, got, gerr, want, werr)
		}
	}
	// Too large: the same error either way.
	big := Event{Text: strings.Repeat("<", MaxFrameSize/5), At: at}
	if _, err := Encode(big); err == nil {
		t.Errorf("a %d-byte event encoded", len(big.Text)*6)
	}
}

// FuzzHotFramesMatchReflect: the hand encoders of Send, Ack and Event
// write the bytes of encoding/json for every value.
func FuzzHotFramesMatchReflect(f *testing.F) {
	for _, s := range hotStrings {
		f.Add(s, s, uint64(3), int64(1772600767891234567), true)
	}
	f.Fuzz(func(t *testing.T, a, b string, n uint64, nanos int64, dup bool) {
		at := time.Unix(0, nanos).In(time.FixedZone("", int(n%86400)-43200))
		var members []string
		if dup {
			members = []string{b, a}
		}
		for _, fr := range []Frame{
			Ack{Ref: a, MsgID: b, Conv: a, Seq: n, Duplicate: dup, At: at},
			Event{Cursor: n, User: a, Kind: b, Conv: a, Seq: n / 2, MsgID: b, From: a, FromDevice: b, To: a, Text: b,
				Status: a, By: b, UpTo: n % 3, Op: a, Members: members, Name: b, Reason: a, At: at},
			Send{Ref: a, As: b, To: a, Conv: b, MsgID: a, Text: b, Device: a},
		} {
			want, werr := encodeReflect(fr)
			got, gerr := Encode(fr)
			if !bytes.Equal(got, want) || (gerr == nil) != (werr == nil) {
				t.Fatalf("%#v:\n got %s (%v)\nwant %s (%v)", fr, got, gerr, want, werr)
			}
		}
		if q, _ := json.Marshal(a); !bytes.Equal(AppendString(nil, a), q) {
			t.Fatalf("AppendString(%q) = %s, json %s", a, AppendString(nil, a), q)
		}
	})
}
