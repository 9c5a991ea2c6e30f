package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// Exit codes of the admin commands: 0 done, 1 the command failed (the agent
// refused it or could not be reached), 2 the command line was wrong or a
// destructive command was not confirmed.
var errNotConfirmed = fmt.Errorf("%w: not confirmed (pass -yes when stdin is not a terminal)", errUsage)

// opUsage is the help of every command's -op flag.
const opUsage = "operation id: repeating a command with the same id changes nothing (default: a new id)"

// destructive commands ask for confirmation.
var destructive = map[string]bool{"start": true, "abort": true, "rollback": true}

// confirm asks on a terminal, and needs yes otherwise.
func confirm(yes bool, stderr io.Writer, what string) error {
	if yes {
		return nil
	}
	if !isTerminal(os.Stdin) {
		return errNotConfirmed
	}
	fmt.Fprintf(stderr, "%s? [y/N] ", what)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if a := strings.TrimSpace(strings.ToLower(line)); a == "y" || a == "yes" {
		return nil
	}
	return errNotConfirmed
}

// adminCall parses the shared flags and returns a client with the actor set.
func adminSetup(o *outputFlags) (*adminClient, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	return newAdminClient(o.addr, o.token)
}

// adminDo makes one admin API call with the command's output flags (the
// agent's address and token), bounded by cliTimeout.
func adminDo(ctx context.Context, o *outputFlags, method, path string, body, out any) error {
	c, err := adminSetup(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	return c.do(ctx, method, path, body, out)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func campaignCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "usage: gateway campaign create -f FILE | plan NAME | start|pause|resume|abort NAME [-reason TEXT] [-op ID] [-yes] | rollback NAME [-step] [-reason TEXT] [-op ID] [-yes] | status NAME [-watch] [-interval D] | list"
	if len(args) == 0 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	fs := flag.NewFlagSet("campaign "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var file, reason, op string
	var yes, step, watch bool
	var interval, watchFor time.Duration
	want := 1
	switch args[0] {
	case "create":
		want = 0
		fs.StringVar(&file, "f", "", "campaign definition, JSON (- for stdin)")
	case "list":
		want = 0
	case "plan":
	case "status":
		fs.BoolVar(&watch, "watch", false, "refresh every -interval until the campaign is completed or aborted, Ctrl-C, or -for elapses")
		fs.DurationVar(&interval, "interval", defaultWatchInterval, "refresh interval of -watch")
		fs.DurationVar(&watchFor, "for", defaultWatchFor, "stop -watch after this long at most")
	case "start", "pause", "resume", "abort", "rollback":
		fs.StringVar(&reason, "reason", "", "why (kept in the audit log)")
		fs.StringVar(&op, "op", "", opUsage)
		fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
		if args[0] == "rollback" {
			fs.BoolVar(&step, "step", false, "roll back only the current step: the users it moved return to shadow, then the campaign pauses")
		}
	default:
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	pos, err := parseArgs(fs, args[1:])
	if err != nil || len(pos) != want {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	c, err := adminSetup(&o)
	if err != nil {
		return err
	}
	if watch {
		if interval < minWatchInterval || watchFor <= 0 {
			return fmt.Errorf("%w: -interval must be at least %s and -for positive", errUsage, minWatchInterval)
		}
		return watchStatus(ctx, c, pos[0], o.format, interval, watchFor, stdout)
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	switch args[0] {
	case "create":
		var b []byte
		if file == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else if file != "" {
			b, err = os.ReadFile(file)
		} else {
			return fmt.Errorf("%w: create needs -f FILE", errUsage)
		}
		if err != nil {
			return err
		}
		var def migrate.Campaign
		if err := json.Unmarshal(b, &def); err != nil {
			return fmt.Errorf("campaign file: %w", err)
		}
		var out migrate.Campaign
		if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns", def, &out); err != nil {
			return err
		}
		return printCampaigns(stdout, o.format, out, []migrate.Campaign{out})
	case "list":
		var out map[string][]migrate.Campaign
		if err := c.do(ctx, http.MethodGet, "/v1/admin/campaigns", nil, &out); err != nil {
			return err
		}
		return printCampaigns(stdout, o.format, out, out["campaigns"])
	case "status":
		st, err := getStatus(ctx, c, pos[0])
		if err != nil {
			return err
		}
		if o.format == "json" {
			return printJSON(stdout, st)
		}
		printStatus(stdout, st)
		return nil
	case "plan":
		var p migrate.Plan
		if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/"+url.PathEscape(pos[0])+"/plan", commandRequest{}, &p); err != nil {
			return err
		}
		if o.format == "json" {
			return printJSON(stdout, p)
		}
		fmt.Fprintf(stdout, "plan of %s (salt %s) over %d users: %d ineligible, %d beyond the last step\n", p.Campaign, p.Salt, p.Users, p.Ineligible, p.Beyond)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STEP\tTARGET_BP\tCOHORT\tDONE\tMOVE\tBY_PHASE\tBY_PLATFORM\tBY_VERSION\tHELD_BACK")
		for _, s := range p.Steps {
			// 1-based, like status and list ("step 1 of 3"); JSON keeps the index.
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Step+1, s.TargetBP, s.Cohort, s.Done, s.Move,
				counts(s.ByPhase), counts(s.ByPlatform), counts(s.ByVersionBand), counts(s.HeldBack))
		}
		return tw.Flush()
	default:
		if destructive[args[0]] {
			what := fmt.Sprintf("%s campaign %s", args[0], pos[0])
			if step {
				what = fmt.Sprintf("roll back the current step of campaign %s", pos[0])
			}
			if err := confirm(yes, stderr, what); err != nil {
				return err
			}
		}
		var out migrate.Campaign
		if err := c.do(ctx, http.MethodPost, "/v1/admin/campaigns/"+url.PathEscape(pos[0])+"/"+args[0], commandRequest{Reason: reason, Step: step, OpID: op}, &out); err != nil {
			return fmt.Errorf("campaign %s %s: %w", args[0], pos[0], err)
		}
		return printCampaigns(stdout, o.format, out, []migrate.Campaign{out})
	}
}

// Bounds of campaign status -watch.
const (
	defaultWatchInterval = 5 * time.Second
	minWatchInterval     = 10 * time.Millisecond
	defaultWatchFor      = 24 * time.Hour
	// clearScreen moves the cursor home and clears the terminal, so that
	// each refresh replaces the last one in place.
	clearScreen = "\x1b[H\x1b[2J"
)

func getStatus(ctx context.Context, c *adminClient, name string) (campaignStatus, error) {
	var st campaignStatus
	err := c.do(ctx, http.MethodGet, "/v1/admin/campaigns/"+url.PathEscape(name), nil, &st)
	return st, err
}

// watchStatus prints the campaign's status every interval until it is
// completed or aborted, ctx ends (Ctrl-C), or watchFor elapses. On a
// terminal each refresh replaces the last; otherwise refreshes follow each
// other, and with format json each is one line of JSON (a stream of JSON
// lines). A refused or failed request ends the watch with its error.
func watchStatus(ctx context.Context, c *adminClient, name, format string, interval, watchFor time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, watchFor)
	defer cancel()
	tty := isTerminal(stdout) && format != "json"
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, cliTimeout)
		st, err := getStatus(rctx, c, name)
		rcancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil // Ctrl-C or -for: the watch is over, not failed
			}
			return err
		}
		switch {
		case format == "json":
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
				return err
			}
		case tty:
			fmt.Fprint(stdout, clearScreen)
			fmt.Fprintf(stdout, "%s  (every %s, Ctrl-C to stop)\n", time.Now().Format(time.TimeOnly), interval)
			printStatus(stdout, st)
		default:
			fmt.Fprintf(stdout, "--- %s\n", time.Now().UTC().Format(time.RFC3339))
			printStatus(stdout, st)
		}
		if s := st.Campaign.State; s == migrate.CampaignCompleted || s == migrate.CampaignAborted {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// isTerminal reports whether w is a character device other than the null
// device: stdin from </dev/null (cron, systemd, CI) is a character device too,
// and a prompt there would read EOF instead of failing with the -yes hint.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

// printStatus prints a campaign's status for people, with a progress bar.
func printStatus(w io.Writer, st campaignStatus) {
	cp := st.Campaign
	fmt.Fprintf(w, "campaign %s: %s, step %d of %d (target %d bp), actual %d bp\n", cp.Name, cp.State, cp.Step+1, len(cp.Steps), st.TargetBP, st.ActualBP)
	fmt.Fprintf(w, "  %s\n", bar(st.ActualBP, st.TargetBP))
	if cp.RollbackStep != nil {
		fmt.Fprintf(w, "  rolling back step %d only\n", *cp.RollbackStep+1)
	}
	fmt.Fprintf(w, "  eligible %d, done %d, pending %d, held back %s, frozen %v, in window %v\n", st.Eligible, st.Done, st.Pending, counts(st.HeldBack), st.Frozen, st.InWindow)
	if st.Driver.HeldAt(time.Now()) {
		fmt.Fprintf(w, "  driver %s (lease until %s)\n", st.Driver.Holder, st.Driver.Expires.Format(time.RFC3339))
	} else {
		fmt.Fprintln(w, "  driver: no agent holds the lease")
	}
	for _, g := range st.Guardrails {
		fmt.Fprintf(w, "  guardrail %s: %s, value %.4f, max %.4f (cohort %g of %g bad, control %g of %g, min %d)\n",
			g.Guardrail, g.Outcome, g.Value, g.Threshold, g.Cohort.Bad, g.Cohort.Total, g.Control.Bad, g.Control.Total, g.MinSamples)
	}
}

// bar draws actual against target as a 40-character progress bar.
func bar(actual, target int) string {
	const width = 40
	if target <= 0 {
		target = migrate.BasisPoints
	}
	n := min(width, actual*width/target)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + fmt.Sprintf("] %d%%", min(100, actual*100/target))
}

func counts[K ~string](m map[K]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, string(k))
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[K(k)]))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func printCampaigns(w io.Writer, format string, v any, cs []migrate.Campaign) error {
	if format == "json" {
		return printJSON(w, v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAMPAIGN\tSTATE\tSTEP\tTARGET_BP\tTARGET\tPER_MINUTE\tUPDATED")
	for _, c := range cs {
		t := 0
		if c.Step < len(c.Steps) {
			t = c.Steps[c.Step].TargetBP
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%d\t%s\n", c.Name, c.State, c.Step+1, len(c.Steps), t, c.TargetPhase(), c.PerMinute(), c.Updated.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func auditCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var user, campaign, since string
	fs.StringVar(&user, "user", "", "only events about this user")
	fs.StringVar(&campaign, "campaign", "", "only events of this campaign")
	fs.StringVar(&since, "since", "", "only events since an RFC 3339 time or a duration ago (24h)")
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 0 {
		fmt.Fprintln(stderr, "usage: gateway audit [-user ID] [-campaign NAME] [-since T]")
		return errUsage
	}
	c, err := adminSetup(&o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	q := url.Values{}
	for k, v := range map[string]string{"user": user, "campaign": campaign, "since": since} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var out map[string][]migrate.AuditEvent
	if err := c.do(ctx, http.MethodGet, "/v1/admin/audit?"+q.Encode(), nil, &out); err != nil {
		return err
	}
	if o.format == "json" {
		return printJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AT\tKIND\tACTOR\tCAMPAIGN\tSTEP\tUSER\tFROM\tTO\tRESULT\tREASON")
	for _, e := range out["events"] {
		step := "-" // not about a step (the JSON says -1)
		if e.Step >= 0 {
			step = strconv.Itoa(e.Step)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.At.UTC().Format(time.RFC3339Nano), e.Kind, e.Actor, e.Campaign, step, e.User, e.From, e.To, e.Result, e.Reason)
	}
	return tw.Flush()
}

func freezeCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "usage: gateway freeze on|off|status [-reason TEXT] [-op ID]"
	if len(args) == 0 || (args[0] != "on" && args[0] != "off" && args[0] != "status") {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	fs := flag.NewFlagSet("freeze", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var reason, op string
	fs.StringVar(&reason, "reason", "", "why (kept in the audit log)")
	fs.StringVar(&op, "op", "", opUsage)
	if pos, err := parseArgs(fs, args[1:]); err != nil || len(pos) != 0 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	var f map[string]any
	var err error
	if args[0] == "status" {
		err = adminDo(ctx, &o, http.MethodGet, "/v1/admin/freeze", nil, &f)
	} else {
		err = adminDo(ctx, &o, http.MethodPost, "/v1/admin/freeze", freezeRequest{On: new(args[0] == "on"), Reason: reason, OpID: op}, &f)
	}
	if err != nil {
		return err
	}
	if o.format == "json" {
		return printJSON(stdout, f)
	}
	fmt.Fprintln(stdout, "freeze", freezeLine(f))
	return nil
}

// freezeLine prints the freeze's fields as key=value, leaving out the ones
// the agent did not send (an unset reason or a freeze never set) rather than
// printing <nil>.
func freezeLine(f map[string]any) string {
	parts := []string{fmt.Sprintf("on=%v", f["on"] == true)}
	for _, k := range []string{"reason", "actor", "since"} {
		if v, ok := f[k]; ok && v != nil && v != "" {
			parts = append(parts, fmt.Sprintf("%s=%v", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// userControlCommand runs `users hold|resume|exempt`.
func userControlCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "usage: gateway users hold|resume ID -reason TEXT [-op ID] | users exempt ID -campaign NAME -reason TEXT [-until T] [-remove] [-op ID]"
	fs := flag.NewFlagSet("users "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var reason, op, campaign, until string
	var remove bool
	fs.StringVar(&reason, "reason", "", "why (required; kept in the audit log)")
	fs.StringVar(&op, "op", "", opUsage)
	if args[0] == "exempt" {
		fs.StringVar(&campaign, "campaign", "", "the campaign (required)")
		fs.StringVar(&until, "until", "", "RFC 3339 time the exemption lapses (default never)")
		fs.BoolVar(&remove, "remove", false, "lift the exemption")
	}
	pos, err := parseArgs(fs, args[1:])
	if err != nil || len(pos) != 1 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("%w: -reason is required", errUsage)
	}
	if args[0] == "exempt" && campaign == "" {
		return fmt.Errorf("%w: exempt: -campaign is required", errUsage)
	}
	c, err := adminSetup(&o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	path := "/v1/admin/users/" + url.PathEscape(pos[0]) + "/" + args[0]
	if args[0] == "exempt" {
		req := exemptRequest{Campaign: campaign, Reason: reason, Remove: remove, OpID: op}
		if until != "" {
			if req.Until, err = time.Parse(time.RFC3339, until); err != nil {
				return fmt.Errorf("%w: -until: %v", errUsage, err)
			}
		}
		var out migrate.Campaign
		if err := c.do(ctx, http.MethodPost, path, req, &out); err != nil {
			return err
		}
		return printCampaigns(stdout, o.format, out, []migrate.Campaign{out})
	}
	var u migrate.User
	if err := c.do(ctx, http.MethodPost, path, userOpRequest{Reason: reason, OpID: op}, &u); err != nil {
		return fmt.Errorf("%s %s: %w", args[0], pos[0], err)
	}
	return printUsers(stdout, o.format, u, []migrate.User{u}, true)
}
