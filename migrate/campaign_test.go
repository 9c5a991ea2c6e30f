package migrate

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var updateVectors = flag.Bool("update-vectors", false, "rewrite testdata/bucket_vectors.txt")

const vectorsFile = "testdata/bucket_vectors.txt"

// TestBucketVectors pins the cohort hash: a user's bucket must never change
// between releases. Each line of the file is "salt user bucket"; "-" stands
// for an empty salt.
func TestBucketVectors(t *testing.T) {
	if *updateVectors {
		var b strings.Builder
		b.WriteString("# Ferry cohort bucket test vectors: bucket = FNV-1a-64(salt + \":\" + user) mod 10000.\n")
		b.WriteString("# Columns: salt user bucket. \"-\" is the empty salt.\n")
		for _, salt := range []string{"-", "spring-2026", "a1b2c3d4e5f60708"} {
			for _, user := range []string{"alice", "bob", "carol", "sim-1", "sim-2", "user-000001", "Z", "x_y-z"} {
				s := salt
				if s == "-" {
					s = ""
				}
				fmt.Fprintf(&b, "%s %s %d\n", salt, user, Bucket(s, user))
			}
		}
		if err := os.WriteFile(vectorsFile, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		if len(fs) != 3 {
			t.Fatalf("bad line %q", line)
		}
		salt := fs[0]
		if salt == "-" {
			salt = ""
		}
		want, _ := strconv.Atoi(fs[2])
		if got := Bucket(salt, fs[1]); got != want {
			t.Errorf("Bucket(%q, %q) = %d, want %d", salt, fs[1], got, want)
		}
		if got := bucketNoAlloc(salt, fs[1]); got != want {
			t.Errorf("bucketNoAlloc(%q, %q) = %d, want %d", salt, fs[1], got, want)
		}
		n++
	}
	if n < 20 {
		t.Fatalf("only %d vectors", n)
	}
}

// TestBucketSpread checks that buckets are spread evenly enough for basis
// points to mean what they say.
func TestBucketSpread(t *testing.T) {
	const users = 100000
	below := 0
	for i := range users {
		if Bucket("salt", fmt.Sprintf("user-%06d", i)) < 1000 {
			below++
		}
	}
	// 10% expected; allow ±1 percentage point (about 10 standard deviations).
	if below < 9000 || below > 11000 {
		t.Errorf("%d of %d users below 1000 bp", below, users)
	}
}

func TestCampaignStateValid(t *testing.T) {
	for _, s := range CampaignStates() {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
	}
	for _, s := range []CampaignState{"", "Running", "rolling-back"} {
		if s.Valid() {
			t.Errorf("%q valid", s)
		}
	}
}

func TestLifecycle(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	c := Campaign{Name: "c", State: CampaignDraft, Steps: []Step{{TargetBP: 100}}}
	steps := []struct {
		cmd  Command
		want CampaignState
		ok   bool
	}{
		{CmdResume, "", false},
		{CmdPlan, CampaignPlanned, true},
		{CmdStart, CampaignRunning, true},
		{CmdStart, "", false},
		{CmdPause, CampaignPaused, true},
		{CmdPause, "", false},
		{CmdResume, CampaignRunning, true},
		{CmdRollback, CampaignRollingBack, true},
		{CmdResume, "", false},
		{CmdRolledBack, CampaignAborted, true},
		{CmdStart, "", false},
	}
	for i, s := range steps {
		next, err := c.Lifecycle(s.cmd, "r", "salt-1", now)
		if !s.ok {
			if !errors.Is(err, ErrCampaignState) {
				t.Fatalf("%d: %s from %s: err %v, want ErrCampaignState", i, s.cmd, c.State, err)
			}
			continue
		}
		if err != nil || next.State != s.want {
			t.Fatalf("%d: %s from %s: %s, %v; want %s", i, s.cmd, c.State, next.State, err, s.want)
		}
		c = next
	}
	if c.Salt != "salt-1" {
		t.Errorf("salt %q", c.Salt)
	}
	// The salt, once fixed, never changes.
	c2, _ := Campaign{Name: "d", State: CampaignDraft, Salt: "mine", Steps: []Step{{TargetBP: 1}}}.Lifecycle(CmdStart, "", "other", now)
	if c2.Salt != "mine" {
		t.Errorf("salt replaced: %q", c2.Salt)
	}
}

func TestValidate(t *testing.T) {
	good := Campaign{Name: "ok", Steps: []Step{{TargetBP: 100}, {TargetBP: 1000, Gates: Gates{MinVersion: map[string]string{"android": "5.0"}}}},
		Pace: Pace{Windows: []Window{{Start: "22:00", End: "06:00", Days: []string{"mon"}}}}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good: %v", err)
	}
	tests := map[string]func(*Campaign){
		"bad name":         func(c *Campaign) { c.Name = "a.b" },
		"no steps":         func(c *Campaign) { c.Steps = nil },
		"decreasing":       func(c *Campaign) { c.Steps[1].TargetBP = 50 },
		"too big":          func(c *Campaign) { c.Steps[1].TargetBP = 10001 },
		"target phase":     func(c *Campaign) { c.Target = PhaseFinalized },
		"bad gate version": func(c *Campaign) { c.Steps[1].Gates.MinVersion["ios"] = "x" },
		"bad window":       func(c *Campaign) { c.Pace.Windows[0].End = "25:00" },
		"bad day":          func(c *Campaign) { c.Pace.Windows[0].Days = []string{"monday"} },
		"negative pace":    func(c *Campaign) { c.Pace.PerMinute = -1 },
		"bad opt-in":       func(c *Campaign) { c.OptIns = []string{"a b"} },
	}
	for name, mut := range tests {
		t.Run(name, func(t *testing.T) {
			c := good.Clone()
			mut(&c)
			if err := c.Validate(); !errors.Is(err, ErrInvalidCampaign) {
				t.Errorf("err %v, want ErrInvalidCampaign", err)
			}
		})
	}
}

func TestWindows(t *testing.T) {
	c := Campaign{Pace: Pace{Windows: []Window{
		{Start: "09:00", End: "17:00", Days: []string{"tue"}},
		{Start: "22:00", End: "02:00", Days: []string{"fri"}},
	}}}
	// 2026-03-03 is a Tuesday.
	at := func(day, hh, mm int) time.Time { return time.Date(2026, 3, day, hh, mm, 0, 0, time.UTC) }
	tests := []struct {
		t    time.Time
		want bool
	}{
		{at(3, 8, 59), false},
		{at(3, 9, 0), true},
		{at(3, 16, 59), true},
		{at(3, 17, 0), false},
		{at(4, 10, 0), false}, // Wednesday
		{at(6, 22, 30), true}, // Friday night
		{at(7, 1, 59), true},  // Saturday early: Friday's window
		{at(7, 2, 0), false},
		{at(7, 23, 0), false}, // Saturday night
		{at(8, 1, 0), false},  // Sunday early: Saturday's window, none
	}
	for _, tt := range tests {
		if got := c.InWindow(tt.t); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.t.Format("Mon 15:04"), got, tt.want)
		}
	}
	if !(&Campaign{}).InWindow(at(1, 0, 0)) {
		t.Error("no windows means always")
	}
}

func TestVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"5.1", "5.1.0", 0}, {"5.10", "5.9", 1}, {"v6", "5.99.99", 1}, {"x", "0.0.1", -1}, {"", "", 0},
	}
	for _, tt := range tests {
		if got := CompareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	for v, want := range map[string]string{"5.12.3": "5.12", "7": "7.0", "beta": "unknown", "": "unknown"} {
		if got := VersionBand(v); got != want {
			t.Errorf("VersionBand(%q) = %q, want %q", v, got, want)
		}
	}
}

func TestGatesAndFilter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	u := User{ID: "u", Devices: []Device{
		{ID: "old", Platform: "android", ClientVersion: "4.0", LastSeen: now.Add(-60 * 24 * time.Hour)},
		{ID: "new", Platform: "android", ClientVersion: "5.2", LastSeen: now.Add(-time.Hour)},
	}}
	g := Gates{MinVersion: map[string]string{"android": "5.0"}}
	if got := g.Check(&u, now); got == "" {
		t.Error("an old device passed the gate with no activity window")
	}
	g.ActiveWithin = Duration(30 * 24 * time.Hour)
	if got := g.Check(&u, now); got != "" {
		t.Errorf("gate: %s", got)
	}
	f := Filter{Platforms: []string{"android"}, MinVersion: "5.1"}
	if !f.Eligible(&u) {
		t.Error("primary device android 5.2 not eligible")
	}
	f.MaxVersion = "5.1.9"
	if f.Eligible(&u) {
		t.Error("eligible above max version")
	}
	if (Filter{Exclude: []string{"u"}}).Eligible(&u) || !(Filter{Users: []string{"u"}}).Eligible(&u) {
		t.Error("explicit lists")
	}
}

func TestDurationJSON(t *testing.T) {
	var s Step
	if err := json.Unmarshal([]byte(`{"target_bp":5,"min_soak":"90m"}`), &s); err != nil || time.Duration(s.MinSoak) != 90*time.Minute {
		t.Fatalf("%+v %v", s, err)
	}
	b, _ := json.Marshal(s)
	if !strings.Contains(string(b), `"min_soak":"1h30m0s"`) {
		t.Errorf("%s", b)
	}
}

// FuzzCampaignJSON checks that no campaign document makes decoding,
// validation, placement or window checks panic.
func FuzzCampaignJSON(f *testing.F) {
	f.Add([]byte(`{"name":"c","steps":[{"target_bp":100,"min_soak":"1h","gates":{"min_version":{"android":"5.0"}}}],"pace":{"windows":[{"start":"22:00","end":"02:00","days":["fri"]}]}}`))
	f.Add([]byte(`{"name":"c","filter":{"min_version":"v1.2.3"},"steps":[{"target_bp":10000}]}`))
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	u := User{ID: "u", Phase: PhaseShadow, Devices: []Device{{ID: "d", Platform: "android", ClientVersion: "5.1"}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Campaign
		if json.Unmarshal(b, &c) != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		c.InWindow(now)
		pl := c.Place(&u, now)
		if pl.Bucket < 0 || pl.Bucket >= BasisPoints {
			t.Fatalf("bucket %d", pl.Bucket)
		}
		if pl.Step >= 0 {
			c.Judge(&u, pl, now, nil)
		}
	})
}

// FuzzVersion checks that CompareVersions is antisymmetric and total.
func FuzzVersion(f *testing.F) {
	f.Add("5.1.0", "5.1")
	f.Add("v10", "x")
	f.Fuzz(func(t *testing.T, a, b string) {
		if CompareVersions(a, b) != -CompareVersions(b, a) {
			t.Fatalf("not antisymmetric: %q %q", a, b)
		}
		VersionBand(a)
	})
}

// TestValidateSaysInvalidOnce: a bad name made the error read "migrate:
// invalid campaign: migrate: invalid campaign: name ..." (the name check's
// own ErrInvalidCampaign, wrapped again by Validate).
func TestValidateSaysInvalidOnce(t *testing.T) {
	err := Campaign{Name: "x y", Steps: []Step{{TargetBP: 1}}}.Validate()
	if !errors.Is(err, ErrInvalidCampaign) || strings.Count(err.Error(), ErrInvalidCampaign.Error()) != 1 {
		t.Errorf("Validate = %q, want ErrInvalidCampaign said once", err)
	}
}
