package cloudwire

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestUpgradeRequiredGolden(t *testing.T) {
	u := UpgradeRequired{Minimum: "6.2.1", UpdateURL: "https://example.com/update", Deadline: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		Notice: "Please update."}
	got := u.String()
	path := filepath.Join("testdata", "close_upgrade_required.txt")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run with -update to create): %v", err)
	}
	if got != string(want) {
		t.Errorf("String() = %s, want %s", got, want)
	}
	back, ok := ParseUpgradeRequired(got)
	if !ok || !back.Deadline.Equal(u.Deadline) || back.Minimum != u.Minimum || back.UpdateURL != u.UpdateURL {
		t.Errorf("ParseUpgradeRequired = %+v, %v; want the fields back", back, ok)
	}
}

func TestUpgradeRequiredFits(t *testing.T) {
	long := strings.Repeat("é", 200)
	tests := []struct {
		name string
		in   UpgradeRequired
		keep func(UpgradeRequired) bool
	}{
		{"long notice is dropped", UpgradeRequired{Minimum: "6.2.1", UpdateURL: "https://example.com/u", Notice: long},
			func(u UpgradeRequired) bool {
				return u.Minimum == "6.2.1" && u.UpdateURL == "https://example.com/u" && u.Notice == ""
			}},
		{"long url is dropped", UpgradeRequired{Minimum: "6.2.1", UpdateURL: "https://example.com/" + strings.Repeat("x", 200), Deadline: time.Unix(1, 0)},
			func(u UpgradeRequired) bool { return u.Minimum == "6.2.1" && u.UpdateURL == "" && !u.Deadline.IsZero() }},
		{"everything too long", UpgradeRequired{Minimum: strings.Repeat("9", 200), UpdateURL: long, Notice: long},
			func(u UpgradeRequired) bool { return u.Minimum == "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.in.String()
			if len(s) > maxCloseReason || !utf8.ValidString(s) {
				t.Fatalf("String() = %d bytes %q, want valid UTF-8 of at most %d", len(s), s, maxCloseReason)
			}
			u, ok := ParseUpgradeRequired(s)
			if !ok || !tt.keep(u) {
				t.Errorf("parsed %+v (ok %v) from %s", u, ok, s)
			}
		})
	}
}

func FuzzParseUpgradeRequired(f *testing.F) {
	f.Add(`{"minimum":"6.2.1","update_url":"https://x","deadline":"2026-06-01T00:00:00Z"}`)
	f.Add("plain text")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		u, ok := ParseUpgradeRequired(text)
		if !ok {
			if diff := cmp.Diff(UpgradeRequired{Notice: text}, u); diff != "" {
				t.Errorf("not ok but fields set: %s", diff)
			}
			return
		}
		if s := u.String(); len(s) > maxCloseReason {
			t.Errorf("re-encoded reason is %d bytes", len(s))
		}
	})
}
