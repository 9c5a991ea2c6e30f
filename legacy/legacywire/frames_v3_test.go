package legacywire

import (
	"bytes"
	"strings"
	"testing"
)

// TestFileFramesValid: every golden chat v3 frame is valid, a full chunk
// fits a frame, and offers, answers and chunks outside the bounds are not.
func TestFileFramesValid(t *testing.T) {
	frames := goldenFrames(t)
	for name, v := range frames {
		if f, ok := v.(ChatFrame); ok && strings.HasPrefix(name, "chat3_") && !f.Valid() {
			t.Errorf("golden %s is not Valid: %+v", name, f)
		}
	}
	offer := *frames["chat3_file_offer"].(ChatFrame).FileOffer
	full := ChatFrame{Type: FrameFileChunk, FileChunk: &FileChunk{FileID: offer.ID, Offset: MaxFileSize - MaxFileChunk, Data: bytes.Repeat([]byte{0xff}, MaxFileChunk)}}
	if !full.Valid() {
		t.Fatal("a full chunk is not Valid")
	}
	if err := WriteFrame(&bytes.Buffer{}, full); err != nil {
		t.Errorf("a full chunk does not fit a frame: %v", err)
	}

	for name, change := range map[string]func(o *FileOffer){
		"no id":          func(o *FileOffer) { o.ID = "" },
		"no name":        func(o *FileOffer) { o.Name = "" },
		"long name":      func(o *FileOffer) { o.Name = strings.Repeat("n", MaxFileNameLen+1) },
		"negative size":  func(o *FileOffer) { o.Size = -1 },
		"too large":      func(o *FileOffer) { o.Size = MaxFileSize + 1 },
		"zero chunk":     func(o *FileOffer) { o.ChunkSize = 0 },
		"chunk too big":  func(o *FileOffer) { o.ChunkSize = MaxFileChunk + 1 },
		"short hash":     func(o *FileOffer) { o.SHA256 = o.SHA256[:62] },
		"uppercase hash": func(o *FileOffer) { o.SHA256 = strings.ToUpper(o.SHA256) },
		"not hex":        func(o *FileOffer) { o.SHA256 = strings.Repeat("z", 64) },
		"no recipient":   func(o *FileOffer) { o.To = "" },
	} {
		o := offer
		change(&o)
		if o.Valid() || (ChatFrame{Type: FrameFileOffer, ID: o.ID, FileOffer: &o}).Valid() {
			t.Errorf("offer with %s is Valid", name)
		}
	}
	for name, f := range map[string]ChatFrame{
		"offer id differs from file id": {Type: FrameFileOffer, ID: "other", FileOffer: &offer},
		"accept without id":             {Type: FrameFileAccept, FileAnswer: &FileAnswer{FileID: "f", From: "bob", To: "alice"}},
		"accept with negative offset":   {Type: FrameFileAccept, ID: "a", FileAnswer: &FileAnswer{FileID: "f", From: "bob", To: "alice", Offset: -1}},
		"decline without file":          {Type: FrameFileDecline, ID: "a", FileAnswer: &FileAnswer{From: "bob", To: "alice"}},
		"empty chunk":                   {Type: FrameFileChunk, FileChunk: &FileChunk{FileID: "f"}},
		"oversized chunk":               {Type: FrameFileChunk, FileChunk: &FileChunk{FileID: "f", Data: make([]byte, MaxFileChunk+1)}},
		"chunk with a second payload":   {Type: FrameFileChunk, FileChunk: &FileChunk{FileID: "f", Data: []byte{1}}, Msg: &ChatMessage{}},
		"offer typed as a chunk":        {Type: FrameFileChunk, FileOffer: &offer},
	} {
		if f.Valid() {
			t.Errorf("%s is Valid", name)
		}
	}
	for _, typ := range []string{FrameFileOffer, FrameFileAccept, FrameFileDecline, FrameFileChunk} {
		if !V3Only(typ) {
			t.Errorf("V3Only(%q) = false", typ)
		}
	}
	if V3Only(FrameMsg) || V3Only(FrameReceipt) {
		t.Error("a v2 frame type is V3Only")
	}
}
