package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// TestVersionChangeRetried: a retire and an emergency block sent twice
// each with one op_id (a client retrying after a lost answer) change the
// policy once each: the repeat answers 200 with the policy as it is; the
// retire retried after the block is refused (409), and
// the audit log has one event per change, with the actor, the op id, the
// platform's stage before and what changed.
func TestVersionChangeRetried(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := ta.admin()
	retire := retireRequest{Platform: "android", Below: "5.0", Reason: "old clients", OpID: "retire-1"}
	var first retireResponse
	for i := range 2 {
		var out retireResponse
		if err := c.do(ctx, http.MethodPost, "/v1/admin/versions/retire", retire, &out); err != nil {
			t.Fatalf("retire %d: %v", i+1, err)
		}
		if !out.Saved || out.Policy.Minimum != "5.0" || out.Policy.LastOp != "retire-1" || out.Policy.Audit == 0 {
			t.Fatalf("retire %d: %+v", i+1, out)
		}
		if i == 0 {
			first = out
		} else if out.Policy.Revision != first.Policy.Revision {
			t.Fatalf("the repeated retire wrote revision %d over %d", out.Policy.Revision, first.Policy.Revision)
		}
	}
	block := blockRequest{Platform: "android", Version: "4.2.0", Reason: "crash on start", OpID: "block-1"}
	for i := range 2 {
		var out retireResponse
		if err := c.do(ctx, http.MethodPost, "/v1/admin/versions/block", block, &out); err != nil {
			t.Fatalf("block %d: %v", i+1, err)
		}
		if len(out.Policy.Blocked) != 1 || out.Policy.LastOp != "block-1" {
			t.Fatalf("block %d: %+v", i+1, out.Policy)
		}
	}
	// The op id of an older change, retried after the block, is refused:
	// applied again it would undo what changed since.
	var re *remoteError
	if err := c.do(ctx, http.MethodPost, "/v1/admin/versions/retire", retire, &retireResponse{}); !errors.As(err, &re) || re.Status != http.StatusConflict || re.Code != "conflict" {
		t.Fatalf("retire-1 retried after block-1: %v, want 409 conflict", err)
	}
	// A new op id is a new change.
	retire.Below, retire.OpID = "5.1", "retire-2"
	var out retireResponse
	if err := c.do(ctx, http.MethodPost, "/v1/admin/versions/retire", retire, &out); err != nil || out.Policy.Minimum != "5.1" {
		t.Fatalf("second retire: %+v %v", out.Policy, err)
	}
	var audit map[string][]migrate.AuditEvent
	if err := c.do(ctx, http.MethodGet, "/v1/admin/audit", nil, &audit); err != nil {
		t.Fatal(err)
	}
	var got []migrate.AuditEvent
	for _, e := range audit["events"] {
		if e.Kind == migrate.AuditVersions {
			got = append(got, e)
		}
	}
	want := []struct{ op, from, to string }{
		{"retire-1", "android:draft", "retire below 5.0"},
		{"block-1", "android:draft", "block 4.2.0"},
		{"retire-2", "android:draft", "retire below 5.1"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d version events audited, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		e := got[i]
		if e.OpID != w.op || e.From != w.from || e.To != w.to || e.Actor == "" || e.Reason == "" || e.Result != migrate.ResultOK {
			t.Errorf("event %d: %+v, want op %s from %s to %s", i, e, w.op, w.from, w.to)
		}
	}
}

// TestVersionsRetireCommandLine runs `gateway versions retire` as ops
// would: -dry-run shows the impact and saves nothing; with a date for
// every stage (the dry-run stage's is -dry-run-at, apart from the -dry-run
// switch) and -yes it saves the policy with that schedule.
func TestVersionsRetireCommandLine(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	cli := func(args ...string) (retireResponse, error) {
		var out, errOut bytes.Buffer
		args = append(append([]string{"retire"}, args...), "-addr", ta.a.adminURL(), "-token", ta.a.adminToken, "-format", "json")
		err := versionsCommand(context.Background(), args, &out, &errOut)
		var res retireResponse
		if err == nil {
			err = json.Unmarshal(out.Bytes(), &res)
		}
		if err != nil {
			err = fmt.Errorf("%w (stderr: %s)", err, errOut.String())
		}
		return res, err
	}
	day := time.Date(2027, 1, 4, 9, 0, 0, 0, time.UTC)
	dates := []string{}
	for i, st := range migrate.Stages() {
		if st == migrate.StageDraft {
			continue
		}
		dates = append(dates, "-"+stageFlag(st), day.AddDate(0, 0, 7*i).Format(time.RFC3339))
	}
	base := []string{"-platform", "android", "-below", "5.0", "-reason", "old clients"}
	dry, err := cli(append(append(slices.Clone(base), dates...), "-dry-run")...)
	if err != nil || dry.Saved {
		t.Fatalf("retire -dry-run: %+v %v", dry, err)
	}
	saved, err := cli(append(append(slices.Clone(base), dates...), "-yes")...)
	if err != nil || !saved.Saved {
		t.Fatalf("retire -yes: %+v %v", saved, err)
	}
	got := map[migrate.Stage]time.Time{}
	for _, s := range saved.Policy.Schedule {
		got[s.Stage] = s.At.UTC()
	}
	for i := 0; i+1 < len(dates); i += 2 {
		st := migrate.Stage(strings.ReplaceAll(strings.TrimPrefix(strings.TrimSuffix(dates[i], "-at"), "-"), "-", "_"))
		if at, err := time.Parse(time.RFC3339, dates[i+1]); err != nil || !got[st].Equal(at) {
			t.Errorf("stage %s at %v, want %s", st, got[st], dates[i+1])
		}
	}
	if _, err := cli(append(slices.Clone(base), "-warning", "next week", "-yes")...); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "-warning") {
		t.Fatalf("a bad date: %v, want a usage error naming -warning", err)
	}
}
