package legacywire

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// TestMirrorRouteSignature: a mirror route verifies, and neither removing
// its kind nor adding one to a home route keeps a valid signature; the
// home route's bytes are those of protocol version 1 (golden route_record).
func TestMirrorRouteSignature(t *testing.T) {
	key := testKey(t, 7)
	pub := key.Public().(ed25519.PublicKey)
	frames := goldenFrames(t)
	mirror := frames["route_mirror"].(RouteRecord)
	home := frames["route_record"].(RouteRecord)
	now := mirror.NotAfter.Add(-time.Minute)
	if err := mirror.Verify(pub, now); err != nil {
		t.Fatalf("mirror route: %v", err)
	}
	stripped := mirror
	stripped.Kind = RouteHome
	if err := stripped.Verify(pub, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("mirror without its kind verifies: %v", err)
	}
	promoted := home
	promoted.Kind = RouteMirror
	if err := promoted.Verify(pub, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("home route turned mirror verifies: %v", err)
	}
}

func TestHistoryRequestValid(t *testing.T) {
	ok := goldenFrames(t)["history_request"].(HistoryRequest)
	if !ok.Valid() {
		t.Fatalf("golden request not Valid: %+v", ok)
	}
	for name, change := range map[string]func(r *HistoryRequest){
		"no user":    func(r *HistoryRequest) { r.User = "" },
		"zero limit": func(r *HistoryRequest) { r.Limit = 0 },
		"over limit": func(r *HistoryRequest) { r.Limit = MaxHistoryPage + 1 },
		"long after": func(r *HistoryRequest) { r.After = strings.Repeat("a", 65) },
	} {
		r := ok
		change(&r)
		if r.Valid() {
			t.Errorf("%s: Valid", name)
		}
	}
}

// FuzzReadHistory decodes history requests and pages (what a device and
// the bridge read from each other) without panicking or returning a
// non-sentinel error; what decodes encodes again.
func FuzzReadHistory(f *testing.F) {
	addGoldenSeeds(f, func(name string, _ any) bool { return strings.HasPrefix(name, "history_") })
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req HistoryRequest
		err := ReadFrame(bufio.NewReader(bytes.NewReader(data)), &req)
		checkReadErr(t, err)
		if err == nil && req.Valid() && (req.Limit < 1 || req.Limit > MaxHistoryPage) {
			t.Fatalf("valid request out of bounds: %+v", req)
		}
		var page HistoryPage
		err = ReadFrame(bufio.NewReader(bytes.NewReader(data)), &page)
		checkReadErr(t, err)
		if err == nil {
			if err := WriteFrame(io.Discard, page); err != nil && !errors.Is(err, ErrFrameTooLarge) {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}
