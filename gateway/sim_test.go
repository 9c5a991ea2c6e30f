package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy"
)

// TestLegacySimStandalone runs `gateway legacy sim -standalone` with a
// small population briefly: live summaries, then the final report.
func TestLegacySimStandalone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := legacyCommand(ctx, []string{"sim", "-standalone", "-supernodes", "2", "-clients", "6", "-duration", "2s",
		"-rate", "3", "-progress", "500ms", "-calls", "20", "-files", "10", "-churn", "600", "-downtime", "300ms"}, &out, &errOut)
	if err != nil {
		t.Fatalf("legacy sim: %v\nstderr: %s", err, errOut.String())
	}
	got := out.String()
	t.Log(got)
	for _, want := range []string{"simulating 6 legacy clients", "online ", "messages: sent ", "latency (send to delivered ack): median ",
		"files: offered ", "calls: placed ", "churn: ", "process with 6 clients: RSS "} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestLegacySimFlags(t *testing.T) {
	for _, args := range [][]string{
		{"sim", "-standalone", "-v1", "50", "-v2", "50", "-v3", "50"},
		{"sim", "-standalone", "-platforms", "ios=x"},
		{"sim", "-standalone", "-platforms", "ios=0"},
		{"sim", "-standalone", "-churn", "-1"},
	} {
		var out, errOut bytes.Buffer
		if err := legacyCommand(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("legacy %v: no error", args)
		}
	}
}

func TestParseShares(t *testing.T) {
	got, err := parseShares(formatShares(legacy.DefaultSimPlatformMix))
	if err != nil || len(got) != len(legacy.DefaultSimPlatformMix) {
		t.Fatalf("parseShares(default) = %v, %v", got, err)
	}
	for i, s := range got {
		if s != legacy.DefaultSimPlatformMix[i] {
			t.Errorf("share %d = %+v, want %+v", i, s, legacy.DefaultSimPlatformMix[i])
		}
	}
}

func FuzzParseShares(f *testing.F) {
	f.Add("windows=30,mac=10,linux=5,android=40,ios=15")
	f.Add("ios=0")
	f.Add("=,=")
	f.Add("a=-1")
	f.Fuzz(func(t *testing.T, s string) {
		shares, err := parseShares(s)
		if err != nil {
			return
		}
		mix := legacy.SimPlatformMix(shares)
		if len(mix) == 0 {
			t.Fatalf("parseShares(%q) accepted shares that make no mix", s)
		}
		for _, sh := range shares {
			if sh.Percent < 0 || sh.Platform == "" {
				t.Fatalf("parseShares(%q) = %+v", s, shares)
			}
		}
	})
}
