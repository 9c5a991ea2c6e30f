package migrate

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPhases(t *testing.T) {
	want := []Phase{"legacy", "shadow", "ready", "cloud", "finalized", "held", "failed"}
	got := Phases()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Phases() (-want +got):\n%s", diff)
	}
	got[0] = "changed"
	if Phases()[0] != PhaseLegacy {
		t.Errorf("Phases() returned shared memory")
	}
	for _, p := range want {
		if !p.Valid() {
			t.Errorf("%s.Valid() = false", p)
		}
		wantActive := p != PhaseHeld && p != PhaseFailed
		if p.Active() != wantActive {
			t.Errorf("%s.Active() = %v, want %v", p, p.Active(), wantActive)
		}
	}
}

func TestParsePhase(t *testing.T) {
	tests := []struct {
		in      string
		want    Phase
		wantErr bool
	}{
		{"legacy", PhaseLegacy, false},
		{"finalized", PhaseFinalized, false},
		{"failed", PhaseFailed, false},
		{"", "", true},
		{"Cloud", "", true},
		{" cloud", "", true},
		{"islands", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePhase(tt.in)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidPhase) {
					t.Fatalf("err = %v, want ErrInvalidPhase", err)
				}
				if !strings.Contains(err.Error(), "legacy, shadow, ready, cloud, finalized, held, failed") {
					t.Errorf("message %q does not list the phases", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParsePhase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzParsePhase(f *testing.F) {
	for _, p := range Phases() {
		f.Add(string(p))
	}
	f.Add("")
	f.Add("LEGACY")
	f.Add("cloud\x00")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePhase(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidPhase) {
				t.Fatalf("ParsePhase(%q): error %v does not wrap ErrInvalidPhase", s, err)
			}
			if Phase(s).Valid() {
				t.Fatalf("ParsePhase(%q) refused a valid phase", s)
			}
			return
		}
		if string(p) != s || !p.Valid() {
			t.Fatalf("ParsePhase(%q) = %q", s, p)
		}
	})
}

func TestCheckUserID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"simple", "alice", true},
		{"all classes", "A-z_09", true},
		{"one char", "x", true},
		{"64 chars", strings.Repeat("a", 64), true},
		{"empty", "", false},
		{"65 chars", strings.Repeat("a", 65), false},
		{"dot", "alice.bob", false},
		{"wildcard", "*", false},
		{"gt", ">", false},
		{"space", "a b", false},
		{"slash", "a/b", false},
		{"unicode", "zoë", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckUserID(tt.id)
			if tt.ok && err != nil {
				t.Errorf("CheckUserID(%q) = %v", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidUserID) {
				t.Errorf("CheckUserID(%q) = %v, want ErrInvalidUserID", tt.id, err)
			}
		})
	}
}
