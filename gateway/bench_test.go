package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/cloud/cloudwire"
)

// TestMain lets the test binary stand in for the gateway binary as a
// benchmark's load process ("gateway bench internal-..."), which the
// benchmark starts from os.Executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "bench" && (os.Args[2] == reconnectDialerArg || os.Args[2] == idleDialerArg || os.Args[2] == bridgeLoadArg) {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs the quick benchmarks with tiny sizes and checks the
// shape of their output, never a speed: the figures of a smoke run mean
// nothing. reconnect's load processes are this test binary (TestMain).
// cloud-idle is not run here.
func TestBenchSmoke(t *testing.T) {
	for _, name := range []string{"floor", "cloud-rtt", "cloud-fanout", "bridge", "bridge-intake", "wave", "sim", "reconnect"} {
		t.Run(name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), []string{"bench", name, "-smoke", "-format", "json"}, &out, &errOut); err != nil {
				t.Fatalf("bench %s: %v\n%s", name, err, errOut.String())
			}
			var rows []map[string]json.RawMessage
			if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
				t.Fatalf("output is not a JSON array of rows: %v\n%s", err, out.String())
			}
			if len(rows) == 0 {
				t.Fatal("no rows")
			}
			for _, r := range rows {
				for _, k := range []string{"name", "measure", "case", "floor", "unit", "runs", "medians", "ratio", "target", "met"} {
					if _, ok := r[k]; !ok {
						t.Errorf("row %s lacks %q", r["measure"], k)
					}
				}
				var got struct {
					Name    string
					Runs    struct{ Case, Floor []float64 }
					Medians struct{ Case, Floor float64 }
					Target  *benchTarget
					Met     *bool
				}
				if err := json.Unmarshal(mustJSON(t, r), &got); err != nil {
					t.Fatal(err)
				}
				if got.Name != name {
					t.Errorf("name %q, want %q", got.Name, name)
				}
				if len(got.Runs.Case) < 3 || len(got.Runs.Floor) < 3 {
					t.Errorf("%d case and %d floor runs, want at least 3 each", len(got.Runs.Case), len(got.Runs.Floor))
				}
				if got.Medians.Case <= 0 || got.Medians.Floor <= 0 {
					t.Errorf("medians %+v, want both positive", got.Medians)
				}
				if (got.Target == nil) != (got.Met == nil) {
					t.Errorf("target %v and met %v: want both or neither", got.Target, got.Met)
				}
			}

			out.Reset()
			if err := run(context.Background(), []string{"bench", name, "-smoke"}, &out, &errOut); err != nil {
				t.Fatalf("bench %s (text): %v", name, err)
			}
			if lines := strings.Split(out.String(), "\n"); !strings.HasPrefix(lines[0], "NAME") || len(lines) < len(rows)+1 {
				t.Errorf("text output lacks the header or rows:\n%s", out.String())
			}
		})
	}
}

// TestBenchExplain runs a short benchmark with -explain and checks that
// its first row says where each side's CPU went, in JSON and in text. The
// runs are short (200 ms, about 20 samples each): the shares are checked
// for shape, not for figures.
func TestBenchExplain(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"bench", "cloud-rtt", "-explain", "-duration", "200ms", "-conns", "2", "-format", "json"}, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\n%s", err, errOut.String())
	}
	var rows []benchRow
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("output: %v\n%s", err, out.String())
	}
	if len(rows) == 0 || rows[0].CPU == nil {
		t.Fatalf("the first row has no cpu:\n%s", out.String())
	}
	for i, r := range rows[1:] {
		if r.CPU != nil {
			t.Errorf("row %d has a cpu too", i+1)
		}
	}
	for name, s := range map[string]cpuSide{"case": rows[0].CPU.Case, "floor": rows[0].CPU.Floor} {
		if s.CoresBusy <= 0 || s.CPUPerItem <= 0 {
			t.Errorf("%s: cores busy %v, cpu per item %v µs: want both positive", name, s.CoresBusy, s.CPUPerItem)
		}
		if s.Samples == 0 {
			t.Errorf("%s: no profile samples in %v of runs", name, 3*200*time.Millisecond)
			continue
		}
		sum := 0.0
		for i, p := range s.Parts {
			sum += p.Share
			if p.Syscalls > p.Share || (i > 0 && p.Share > s.Parts[i-1].Share) {
				t.Errorf("%s: part %d %+v out of order or with more system calls than CPU", name, i, p)
			}
		}
		if sum < 0.999 || sum > 1.001 {
			t.Errorf("%s: shares add up to %v", name, sum)
		}
	}
	if !slices.ContainsFunc(rows[0].CPU.Case.Parts, func(p cpuPart) bool { return p.Part == "NATS server (JetStream)" }) {
		t.Errorf("the cloud's case spent nothing in the NATS server: %+v", rows[0].CPU.Case.Parts)
	}

	out.Reset()
	if err := run(context.Background(), []string{"bench", "cloud-rtt", "-smoke", "-explain"}, &out, &errOut); err != nil {
		t.Fatalf("bench (text): %v", err)
	}
	for _, side := range []string{"case", "floor"} {
		if !strings.Contains(out.String(), "cpu: "+side+" runs: ") {
			t.Errorf("text output lacks the %s side's cpu:\n%s", side, out.String())
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBenchRow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cs, fs    []float64
		target    *benchTarget
		ratio     float64
		met, hasM bool
	}{
		{"higher is better, met", []float64{5, 6, 7}, []float64{10, 10, 12}, &benchTarget{"ratio", ">=", 0.5}, 0.6, true, true},
		{"higher is better, missed", []float64{1, 2, 9}, []float64{10, 10, 10}, &benchTarget{"ratio", ">=", 0.5}, 0.2, false, true},
		{"lower is better, absolute", []float64{10, 12, 11}, []float64{5, 5, 5}, &benchTarget{"case", "<=", 11}, 2.2, true, true},
		{"reference", []float64{1, 1, 1, 3}, []float64{2, 2, 2}, nil, 0.5, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRow("x", "m", "c", "f", "u", tc.cs, tc.fs, tc.target)
			if r.Ratio != tc.ratio {
				t.Errorf("ratio %v, want %v", r.Ratio, tc.ratio)
			}
			if (r.Met != nil) != tc.hasM || (r.Met != nil && *r.Met != tc.met) {
				t.Errorf("met %v, want %v (has %v)", r.Met, tc.met, tc.hasM)
			}
		})
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{{"bench"}, {"bench", "nope"}, {"bench", "floor", "-runs", "2"}, {"bench", "floor", "-format", "xml"}, {"bench", "floor", "-explain", "-cpuprofile", "/dev/null"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestReconnectObserve checks how a reconnect load process judges what a
// client received: exactly its first and its missed message, or not.
func TestReconnectObserve(t *testing.T) {
	msg := func(id, text string) cloudwire.Event {
		return cloudwire.Event{Kind: cloudwire.KindMsg, MsgID: id, From: reconnectSender, Text: text}
	}
	const u = "rc1-0-7"
	for _, tc := range []struct {
		name     string
		evs      []cloudwire.Event
		msgs     int
		bad      bool
		resynced bool
	}{
		{"exact", []cloudwire.Event{msg("a", rcBefore(u)), {Kind: cloudwire.KindReceipt}, msg("b", rcMissed(u))}, 2, false, true},
		{"lost", []cloudwire.Event{msg("a", rcBefore(u))}, 1, false, false},
		{"replayed first", []cloudwire.Event{msg("a", rcBefore(u)), msg("a", rcBefore(u))}, 2, true, true},
		{"someone else's", []cloudwire.Event{msg("a", rcBefore(u)), msg("b", rcMissed("rc1-0-8"))}, 2, true, true},
		{"duplicate", []cloudwire.Event{msg("a", rcBefore(u)), msg("b", rcMissed(u)), msg("b", rcMissed(u))}, 3, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rcClient{user: u}
			for _, ev := range tc.evs {
				c.observe(ev)
			}
			if c.msgs != tc.msgs || c.bad != tc.bad || (c.gotAt != 0) != tc.resynced {
				t.Errorf("msgs %d bad %v resynced %v, want %d %v %v", c.msgs, c.bad, c.gotAt != 0, tc.msgs, tc.bad, tc.resynced)
			}
		})
	}
}
