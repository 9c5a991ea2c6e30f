package cloudwire

import (
	"errors"
	"strings"
	"testing"
)

var goldenFile = File{
	ID: "0190b6d2-4444-7000-8000-000000000001", Name: "holiday.jpg", Size: 68412, MIME: "image/jpeg",
	SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
}

// The file frames (v9) join TestGolden's table: testdata/send_file.json,
// event_file.json and page_file.json pin their bytes.
func init() {
	goldenFrames = append(goldenFrames,
		struct {
			name  string
			frame Frame
		}{"send_file", Send{Ref: "30", To: "bob", MsgID: "0190b6d2-4444-7000-8000-0000000000aa", Text: "holiday.jpg", File: &goldenFile}},
		struct {
			name  string
			frame Frame
		}{"event_file", Event{Cursor: 80, User: "bob", Kind: KindMsg, Conv: DirectConversationID("alice", "bob"), Seq: 12, MsgID: "0190b6d2-4444-7000-8000-0000000000aa", From: "alice", FromDevice: "dev-1", To: "bob", Text: "holiday.jpg", File: &goldenFile, At: at}},
		struct {
			name  string
			frame Frame
		}{"page_file", Page{Ref: "31", Conv: DirectConversationID("alice", "bob"), Head: 12, Msgs: []Message{
			{Seq: 12, Kind: KindMsg, MsgID: "0190b6d2-4444-7000-8000-0000000000aa", From: "alice", To: "bob", Text: "holiday.jpg", File: &goldenFile, At: at},
		}}},
	)
}

func TestFileValidate(t *testing.T) {
	ok := goldenFile
	tests := []struct {
		name string
		edit func(*File)
		bad  bool
	}{
		{"ok", func(*File) {}, false},
		{"no mime", func(f *File) { f.MIME = "" }, false},
		{"empty file", func(f *File) { f.Size = 0 }, false},
		{"no id", func(f *File) { f.ID = "" }, true},
		{"id with slash", func(f *File) { f.ID = "a/b" }, true},
		{"no name", func(f *File) { f.Name = "" }, true},
		{"path in name", func(f *File) { f.Name = "../etc/passwd" }, true},
		{"backslash in name", func(f *File) { f.Name = `a\b` }, true},
		{"dot dot", func(f *File) { f.Name = ".." }, true},
		{"name too long", func(f *File) { f.Name = strings.Repeat("a", MaxFileNameSize+1) }, true},
		{"control in name", func(f *File) { f.Name = "a\x00b" }, true},
		{"negative size", func(f *File) { f.Size = -1 }, true},
		{"upper hex", func(f *File) { f.SHA256 = strings.ToUpper(f.SHA256) }, true},
		{"short hash", func(f *File) { f.SHA256 = f.SHA256[:63] }, true},
		{"mime too long", func(f *File) { f.MIME = strings.Repeat("a", 200) }, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.edit(&f)
			err := f.Validate()
			if tc.bad != (err != nil) {
				t.Fatalf("Validate(%+v) = %v, want bad=%v", f, err, tc.bad)
			}
			if err != nil && !errors.Is(err, ErrInvalidField) {
				t.Errorf("error %v is not ErrInvalidField", err)
			}
			s := Send{To: "bob", MsgID: "m1", Text: "x", File: &f}
			if got := s.Validate(); (got != nil) != tc.bad {
				t.Errorf("Send.Validate = %v, want bad=%v", got, tc.bad)
			}
		})
	}
}
