package migrate

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func newState(tb testing.TB) *State {
	tb.Helper()
	s, err := NewState()
	if err != nil {
		tb.Fatalf("NewState: %v", err)
	}
	return s
}

func user(id string, p Phase, rev uint64) User {
	u := NewUser(id, t0)
	u.Phase, u.Revision = p, rev
	return u
}

func TestStateRevisionOrdering(t *testing.T) {
	tests := []struct {
		name      string
		puts      []User
		wantPhase Phase
		wantRev   uint64
	}{
		{"new record", []User{user("a", PhaseShadow, 3)}, PhaseShadow, 3},
		{"newer wins", []User{user("a", PhaseShadow, 3), user("a", PhaseReady, 4)}, PhaseReady, 4},
		{"older ignored", []User{user("a", PhaseReady, 4), user("a", PhaseShadow, 3)}, PhaseReady, 4},
		{"same revision ignored", []User{user("a", PhaseReady, 4), user("a", PhaseShadow, 4)}, PhaseReady, 4},
		{"revision zero when new", []User{user("a", PhaseLegacy, 0)}, PhaseLegacy, 0},
	}
	for _, tt := range tests {
		for _, oneCall := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/one_call=%v", tt.name, oneCall), func(t *testing.T) {
				s := newState(t)
				if oneCall {
					s.Put(tt.puts...)
				} else {
					for _, u := range tt.puts {
						s.Put(u)
					}
				}
				got, ok := s.Get("a")
				if !ok || got.Phase != tt.wantPhase || got.Revision != tt.wantRev {
					t.Errorf("Get = %s rev %d (found %v), want %s rev %d", got.Phase, got.Revision, ok, tt.wantPhase, tt.wantRev)
				}
				if n := s.Snapshot().Len(); n != 1 {
					t.Errorf("Len = %d, want 1", n)
				}
			})
		}
	}
}

func TestStateIgnoresInvalid(t *testing.T) {
	s := newState(t)
	s.Put(User{ID: "", Phase: PhaseLegacy, Revision: 1}, User{ID: "a.b", Phase: PhaseLegacy, Revision: 1},
		User{ID: "a", Phase: "islands", Revision: 1})
	if n := s.Snapshot().Len(); n != 0 {
		t.Errorf("Len = %d after invalid records, want 0", n)
	}
}

func TestStateListeners(t *testing.T) {
	s := newState(t)
	type call struct {
		Listener int
		Prev     *User
		Cur      User
	}
	var calls []call
	for i := range 2 {
		s.OnChange(func(prev *User, cur User) {
			c := call{Listener: i, Cur: cur.Clone()}
			if prev != nil {
				p := prev.Clone()
				c.Prev = &p
			}
			calls = append(calls, c)
			// Scribbling on what a listener received must not reach State.
			cur.Devices = append(cur.Devices, Device{ID: "listener-scribble"})
			if prev != nil {
				prev.Phase = PhaseFailed
			}
		})
	}
	var removed []string
	s.OnRemove(func(prev User) { removed = append(removed, prev.ID) })

	a1, a2, b1 := user("a", PhaseLegacy, 1), user("a", PhaseShadow, 2), user("b", PhaseLegacy, 5)
	s.Put(a1, b1)
	s.Put(a1)     // unchanged: no call
	s.Put(a2, a1) // a1 is stale within the same call
	want := []call{
		{0, nil, a1}, {1, nil, a1},
		{0, nil, b1}, {1, nil, b1},
		{0, &a1, a2}, {1, &a1, a2},
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("listener calls (-want +got):\n%s", diff)
	}
	if got, _ := s.Get("a"); len(got.Devices) != 0 || got.Phase != PhaseShadow {
		t.Errorf("a listener changed the stored record: %+v", got)
	}

	s.Remove("a")
	s.Remove("missing")
	if diff := cmp.Diff([]string{"a"}, removed); diff != "" {
		t.Errorf("removed (-want +got):\n%s", diff)
	}
	if _, ok := s.Get("a"); ok {
		t.Errorf("a still there after Remove")
	}
	if c := s.Snapshot().CountByPhase(); c[PhaseShadow] != 0 || c[PhaseLegacy] != 1 {
		t.Errorf("counts after Remove: %v", c)
	}
}

func TestStateCopies(t *testing.T) {
	s := newState(t)
	u := user("a", PhaseLegacy, 1)
	u.Devices = []Device{{ID: "d1", Platform: "android"}}
	s.Put(u)
	u.Devices[0].Platform = "changed by the writer"

	got, _ := s.Get("a")
	if got.Devices[0].Platform != "android" {
		t.Fatalf("Put kept the caller's slice")
	}
	got.Devices[0].Platform = "changed by a reader"
	for _, l := range [][]User{{mustGet(t, s, "a")}, s.Snapshot().List("", "", 0)} {
		if l[0].Devices[0].Platform != "android" {
			t.Fatalf("a reader changed the stored record")
		}
	}
}

func mustGet(tb testing.TB, s *State, id string) User {
	tb.Helper()
	u, ok := s.Get(id)
	if !ok {
		tb.Fatalf("user %s not in state", id)
	}
	return u
}

func TestSnapshotIsolation(t *testing.T) {
	s := newState(t)
	s.Put(user("a", PhaseLegacy, 1))
	sn := s.Snapshot()
	s.Put(user("a", PhaseShadow, 2), user("b", PhaseLegacy, 3))
	if got, _ := sn.Get("a"); got.Phase != PhaseLegacy {
		t.Errorf("old snapshot sees phase %s", got.Phase)
	}
	if sn.Len() != 1 || s.Snapshot().Len() != 2 {
		t.Errorf("Len old %d new %d, want 1 and 2", sn.Len(), s.Snapshot().Len())
	}
}

func ids(us []User) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.ID
	}
	return out
}

func TestSnapshotList(t *testing.T) {
	s := newState(t)
	// u00..u09: even ids in shadow, odd in legacy; inserted out of order.
	for _, i := range []int{7, 3, 0, 9, 1, 4, 8, 2, 6, 5} {
		p := PhaseLegacy
		if i%2 == 0 {
			p = PhaseShadow
		}
		s.Put(user(fmt.Sprintf("u%02d", i), p, uint64(i+1)))
	}
	sn := s.Snapshot()
	tests := []struct {
		name  string
		phase Phase
		after string
		limit int
		want  []string
	}{
		{"all", "", "", 0, []string{"u00", "u01", "u02", "u03", "u04", "u05", "u06", "u07", "u08", "u09"}},
		{"first page", "", "", 3, []string{"u00", "u01", "u02"}},
		{"second page", "", "u02", 3, []string{"u03", "u04", "u05"}},
		{"after a missing id", "", "u025", 2, []string{"u03", "u04"}},
		{"last page", "", "u08", 3, []string{"u09"}},
		{"past the end", "", "u09", 3, nil},
		{"phase", PhaseShadow, "", 0, []string{"u00", "u02", "u04", "u06", "u08"}},
		{"phase page", PhaseShadow, "u02", 2, []string{"u04", "u06"}},
		{"phase after odd id", PhaseLegacy, "u04", 0, []string{"u05", "u07", "u09"}},
		{"phase ends", PhaseLegacy, "u09", 0, nil},
		{"empty phase", PhaseCloud, "", 0, nil},
		{"invalid phase", "islands", "", 0, nil},
		{"negative limit", PhaseShadow, "u06", -1, []string{"u08"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sn.List(tt.phase, tt.after, tt.limit)
			if diff := cmp.Diff(tt.want, ids(got)); len(got)+len(tt.want) > 0 && diff != "" {
				t.Errorf("List(%q, %q, %d) (-want +got):\n%s", tt.phase, tt.after, tt.limit, diff)
			}
		})
	}

	// Paging through everything visits each user once.
	var all []string
	after := ""
	for range 20 {
		page := sn.List("", after, 4)
		if len(page) == 0 {
			break
		}
		all = append(all, ids(page)...)
		after = page[len(page)-1].ID
	}
	if len(all) != 10 {
		t.Errorf("paging visited %v", all)
	}
}

func TestCountByPhase(t *testing.T) {
	s := newState(t)
	want := map[Phase]int{}
	for _, p := range Phases() {
		want[p] = 0
	}
	if diff := cmp.Diff(want, s.Snapshot().CountByPhase()); diff != "" {
		t.Fatalf("empty state (-want +got):\n%s", diff)
	}
	s.Put(user("a", PhaseLegacy, 1), user("b", PhaseLegacy, 2), user("c", PhaseCloud, 3))
	s.Put(user("a", PhaseShadow, 4), user("c", PhaseHeld, 5), user("b", PhaseLegacy, 1))
	want[PhaseLegacy], want[PhaseShadow], want[PhaseHeld] = 1, 1, 1
	if diff := cmp.Diff(want, s.Snapshot().CountByPhase()); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
	if n := s.Snapshot().Len(); n != 3 {
		t.Errorf("Len = %d, want 3", n)
	}
}

func TestStatePutLarge(t *testing.T) {
	const n = 2000 // crosses maxTxnObjects several times
	s := newState(t)
	changes := 0
	s.OnChange(func(*User, User) { changes++ })
	users := make([]User, n)
	for i := range users {
		p := Phases()[i%5]
		users[i] = user(fmt.Sprintf("user-%05d", i), p, uint64(i+1))
	}
	s.Put(users...)
	sn := s.Snapshot()
	if sn.Len() != n || changes != n {
		t.Fatalf("Len %d, listener calls %d, want %d", sn.Len(), changes, n)
	}
	for p, c := range sn.CountByPhase() {
		want := n / 5
		if !p.Active() {
			want = 0
		}
		if c != want {
			t.Errorf("count %s = %d, want %d", p, c, want)
		}
	}
	if got := sn.List(PhaseReady, "", 0); len(got) != n/5 {
		t.Errorf("List(ready) has %d users, want %d", len(got), n/5)
	}

	// Moving everyone to shadow in one call.
	for i := range users {
		users[i].Phase = PhaseShadow
		users[i].Revision += n
	}
	s.Put(users...)
	if c := s.Snapshot().CountByPhase(); c[PhaseShadow] != n || c[PhaseLegacy] != 0 {
		t.Errorf("after the move: %v", c)
	}
}

func BenchmarkStatePut(b *testing.B) {
	for _, batch := range []int{1, 100, 500} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := newState(b)
			const population = 10000
			users := make([]User, batch)
			rev := uint64(0)
			next := 0
			b.ReportAllocs()
			for b.Loop() {
				for i := range users {
					rev++
					next = (next + 1) % population
					users[i] = user(fmt.Sprintf("user-%05d", next), Phases()[rev%5], rev)
				}
				s.Put(users...)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "users/s")
		})
	}
}
