package migrate

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type edge struct{ from, to Phase }

// wantEdges is the transition table of DESIGN.md, written out independently
// of the implementation's table.
var wantEdges = map[edge]bool{
	{PhaseLegacy, PhaseShadow}: true, {PhaseLegacy, PhaseHeld}: true, {PhaseLegacy, PhaseFailed}: true,
	{PhaseShadow, PhaseLegacy}: true, {PhaseShadow, PhaseReady}: true, {PhaseShadow, PhaseHeld}: true, {PhaseShadow, PhaseFailed}: true,
	{PhaseReady, PhaseCloud}: true, {PhaseReady, PhaseShadow}: true, {PhaseReady, PhaseHeld}: true, {PhaseReady, PhaseFailed}: true,
	{PhaseCloud, PhaseShadow}: true, {PhaseCloud, PhaseFinalized}: true, {PhaseCloud, PhaseHeld}: true, {PhaseCloud, PhaseFailed}: true,
	{PhaseFinalized, PhaseCloud}: true, {PhaseFinalized, PhaseHeld}: true, {PhaseFinalized, PhaseFailed}: true,
	{PhaseHeld, PhaseLegacy}: true, {PhaseHeld, PhaseShadow}: true, {PhaseHeld, PhaseReady}: true,
	{PhaseHeld, PhaseCloud}: true, {PhaseHeld, PhaseFinalized}: true, {PhaseHeld, PhaseFailed}: true,
	{PhaseFailed, PhaseLegacy}: true, {PhaseFailed, PhaseShadow}: true, {PhaseFailed, PhaseReady}: true,
	{PhaseFailed, PhaseCloud}: true, {PhaseFailed, PhaseFinalized}: true,
}

// testPrior is the realistic prior phase given to held and failed users in
// the table test: a user held during shadow, a user failed after the flip.
var testPrior = map[Phase]Phase{PhaseHeld: PhaseShadow, PhaseFailed: PhaseCloud}

// wantApply reports whether Apply accepts the edge for a user built by
// pairUser, with or without break-glass.
func wantApply(e edge, glass bool) bool {
	switch {
	case !wantEdges[e]:
		return false
	case e.from == PhaseFinalized && e.to == PhaseCloud:
		return glass
	case (e.from == PhaseHeld || e.from == PhaseFailed) && e.to.Active():
		return e.to == testPrior[e.from]
	}
	return true
}

func pairUser(from Phase) User {
	u := NewUser("alice", t0)
	u.Phase = from
	u.Prior = testPrior[from]
	u.OpID = "earlier-op"
	u.Reason = "earlier reason"
	u.Revision = 42
	u.Devices = []Device{{ID: "dev1", Platform: "android", ClientVersion: "5.1.0", LastSeen: t0}}
	return u
}

func TestTransitionTable(t *testing.T) {
	at := t0.Add(time.Hour)
	n := 0
	for _, from := range Phases() {
		for _, to := range Phases() {
			n++
			e := edge{from, to}
			t.Run(string(from)+"_to_"+string(to), func(t *testing.T) {
				if got := Allowed(from, to); got != wantEdges[e] {
					t.Errorf("Allowed(%s, %s) = %v, want %v", from, to, got, wantEdges[e])
				}
				for _, glass := range []bool{false, true} {
					u := pairUser(from)
					op := Op{ID: "op-1", To: to, Reason: "test", BreakGlass: glass, At: at}
					got, err := Apply(u, op)
					if !wantApply(e, glass) {
						var te *TransitionError
						if !errors.As(err, &te) || !errors.Is(err, ErrIllegalTransition) {
							t.Fatalf("break-glass=%v: Apply err = %v, want a *TransitionError", glass, err)
						}
						if te.From != from || te.To != to {
							t.Errorf("TransitionError{From: %s, To: %s}, want %s, %s", te.From, te.To, from, to)
						}
						prefix := "cannot move user from " + string(from) + " to " + string(to) + ": "
						if !strings.HasPrefix(err.Error(), prefix) || te.Reason == "" {
							t.Errorf("message %q, want prefix %q and a reason", err, prefix)
						}
						continue
					}
					if err != nil {
						t.Fatalf("break-glass=%v: Apply: %v", glass, err)
					}
					want := pairUser(from)
					want.Phase, want.PhaseSince, want.Reason, want.OpID = to, at, "test", "op-1"
					switch {
					case to.Active():
						want.Prior = ""
					case from.Active():
						want.Prior = from
					}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("break-glass=%v: Apply (-want +got):\n%s", glass, diff)
					}
					if diff := cmp.Diff(pairUser(from), u); diff != "" {
						t.Errorf("Apply changed its input (-want +got):\n%s", diff)
					}
				}
			})
		}
	}
	if n != 49 {
		t.Fatalf("tested %d pairs, want 49", n)
	}
}

func TestApplyPrior(t *testing.T) {
	tests := []struct {
		name      string
		steps     []Op
		wantPhase Phase
		wantPrior Phase
	}{
		{"held keeps the phase left", []Op{{To: PhaseShadow}, {To: PhaseHeld}}, PhaseHeld, PhaseShadow},
		{"held then failed keeps prior", []Op{{To: PhaseShadow}, {To: PhaseHeld}, {To: PhaseFailed}}, PhaseFailed, PhaseShadow},
		{"failed returns to prior and clears it", []Op{{To: PhaseShadow}, {To: PhaseFailed}, {To: PhaseShadow}}, PhaseShadow, ""},
		{"held returns to prior", []Op{{To: PhaseHeld}, {To: PhaseLegacy}}, PhaseLegacy, ""},
		{"break-glass finalized to cloud", []Op{
			{To: PhaseShadow}, {To: PhaseReady}, {To: PhaseCloud}, {To: PhaseFinalized}, {To: PhaseCloud, BreakGlass: true},
		}, PhaseCloud, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := NewUser("bob", t0)
			for i, op := range tt.steps {
				var err error
				if u, err = Apply(u, op); err != nil {
					t.Fatalf("step %d (%s): %v", i, op.To, err)
				}
			}
			if u.Phase != tt.wantPhase || u.Prior != tt.wantPrior {
				t.Errorf("phase %s prior %q, want %s prior %q", u.Phase, u.Prior, tt.wantPhase, tt.wantPrior)
			}
		})
	}
}

func TestApplyNoPriorNeedsBreakGlass(t *testing.T) {
	u := NewUser("carol", t0)
	u.Phase = PhaseHeld // a record that lost its prior phase
	if _, err := Apply(u, Op{To: PhaseShadow}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("without break-glass: err = %v, want ErrIllegalTransition", err)
	}
	got, err := Apply(u, Op{To: PhaseShadow, BreakGlass: true})
	if err != nil || got.Phase != PhaseShadow {
		t.Fatalf("with break-glass: %+v, %v; want shadow", got, err)
	}
}

func TestApplyMessage(t *testing.T) {
	tests := []struct {
		name string
		u    User
		op   Op
		want string
	}{
		{
			"no edge", NewUser("a", t0), Op{To: PhaseCloud},
			"cannot move user from legacy to cloud: not an allowed transition (from legacy: shadow, held, failed)",
		},
		{
			"same phase", NewUser("a", t0), Op{To: PhaseLegacy},
			"cannot move user from legacy to legacy: already in that phase (from legacy: shadow, held, failed)",
		},
		{
			"held to another phase", User{ID: "a", Phase: PhaseHeld, Prior: PhaseShadow}, Op{To: PhaseCloud},
			"cannot move user from held to cloud: a held user returns only to its prior phase shadow (from held: shadow, failed)",
		},
		{
			"finalized without break-glass", User{ID: "a", Phase: PhaseFinalized}, Op{To: PhaseCloud},
			"cannot move user from finalized to cloud: only a break-glass operation may take this edge (from finalized: cloud with break-glass, held, failed)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Apply(tt.u, tt.op)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v\nwant %s", err, tt.want)
			}
		})
	}
}

func TestApplyInvalidPhase(t *testing.T) {
	for _, to := range []Phase{"", "Legacy", "islands"} {
		t.Run(string(to), func(t *testing.T) {
			_, err := Apply(NewUser("a", t0), Op{To: to})
			if !errors.Is(err, ErrInvalidPhase) || errors.Is(err, ErrIllegalTransition) {
				t.Errorf("err = %v, want ErrInvalidPhase only", err)
			}
		})
	}
}

func TestApplyOpIDIdempotent(t *testing.T) {
	u := NewUser("dave", t0)
	op := Op{ID: "op-7", To: PhaseShadow, Reason: "campaign 1", At: t0.Add(time.Minute)}
	once, err := Apply(u, op)
	if err != nil {
		t.Fatal(err)
	}
	op.At = t0.Add(time.Hour) // a retry arrives later: still no change
	twice, err := Apply(once, op)
	if err != nil {
		t.Fatalf("repeat: %v", err)
	}
	if diff := cmp.Diff(once, twice); diff != "" {
		t.Errorf("repeat changed the record (-once +twice):\n%s", diff)
	}

	tests := []struct {
		name string
		op   Op
	}{
		{"same id, other phase", Op{ID: "op-7", To: PhaseReady}},
		{"other id, same phase", Op{ID: "op-8", To: PhaseShadow}},
		{"no id, same phase", Op{To: PhaseShadow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Apply(once, tt.op); !errors.Is(err, ErrIllegalTransition) {
				t.Errorf("err = %v, want ErrIllegalTransition", err)
			}
		})
	}
}

func TestCloneIndependent(t *testing.T) {
	u := pairUser(PhaseShadow)
	c := u.Clone()
	c.Devices[0].Platform = "ios"
	c.Devices = append(c.Devices, Device{ID: "dev2"})
	if u.Devices[0].Platform != "android" || len(u.Devices) != 1 {
		t.Errorf("changing the clone changed the original: %+v", u.Devices)
	}

	next, err := Apply(u, Op{To: PhaseReady})
	if err != nil {
		t.Fatal(err)
	}
	next.Devices[0].ClientVersion = "9"
	if u.Devices[0].ClientVersion != "5.1.0" {
		t.Errorf("Apply's result shares devices with its input")
	}
}

func TestCloudHome(t *testing.T) {
	tests := []struct {
		phase, prior Phase
		want         bool
	}{
		{PhaseLegacy, "", false},
		{PhaseShadow, "", false},
		{PhaseReady, "", false},
		{PhaseCloud, "", true},
		{PhaseFinalized, "", true},
		{PhaseHeld, PhaseReady, false},
		{PhaseHeld, PhaseCloud, true},
		{PhaseFailed, PhaseFinalized, true},
		{PhaseFailed, PhaseShadow, false},
		{PhaseFailed, "", false},
	}
	for _, tt := range tests {
		t.Run(string(tt.phase)+"_"+string(tt.prior), func(t *testing.T) {
			u := User{ID: "a", Phase: tt.phase, Prior: tt.prior}
			if got := u.CloudHome(); got != tt.want {
				t.Errorf("CloudHome() = %v, want %v", got, tt.want)
			}
		})
	}
}
