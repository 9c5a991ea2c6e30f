package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// stageFlag is the flag of `versions retire` that dates stage st: its name
// with dashes, except the dry-run stage's, -dry-run-at, since -dry-run is
// the switch that saves nothing.
func stageFlag(st migrate.Stage) string {
	if st == migrate.StageDryRun {
		return "dry-run-at"
	}
	return strings.ReplaceAll(string(st), "_", "-")
}

// versionsCommand runs `gateway versions list|policy|retire|block|report`.
func versionsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "usage: gateway versions list [-platform P] [-active D] | policy | retire -platform P -below V [-recommended V] [-dry-run-at T] [-announced T] [-warning T] [-soft-block T] [-hard-block T] [-retired T] [-jitter D] [-scope cloud,finalized] [-update-url U] -reason TEXT [-op ID] [-dry-run] [-yes] | block -platform P -version V -reason TEXT [-op ID] [-dry-run] [-yes] | report"
	if len(args) == 0 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	fs := flag.NewFlagSet("versions "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var platform, active, below, recommended, version, reason, scope, updateURL, jitter, op string
	var yes, dry bool
	dates := map[migrate.Stage]*string{}
	switch args[0] {
	case "list":
		fs.StringVar(&platform, "platform", "", "only this platform")
		fs.StringVar(&active, "active", "", "only devices seen within this duration (720h)")
	case "policy", "report":
	case "retire", "block":
		fs.StringVar(&platform, "platform", "", "the platform (required)")
		fs.StringVar(&reason, "reason", "", "why (required; kept in the audit log)")
		fs.BoolVar(&dry, "dry-run", false, "show who would be affected; save nothing")
		fs.BoolVar(&yes, "yes", false, "do not ask for confirmation")
		fs.StringVar(&op, "op", "", "operation id: repeating a change with the same id changes nothing (default: a new id)")
		if args[0] == "block" {
			fs.StringVar(&version, "version", "", "the exact version to block now (required)")
			break
		}
		fs.StringVar(&below, "below", "", "retire versions below this one (required)")
		fs.StringVar(&recommended, "recommended", "", "the version notices recommend")
		fs.StringVar(&jitter, "jitter", "", "spread the hard block over this window (72h)")
		fs.StringVar(&scope, "scope", "", "only users in these phases, comma-separated (cloud,finalized)")
		fs.StringVar(&updateURL, "update-url", "", "where notices send people")
		for _, st := range []migrate.Stage{migrate.StageDryRun, migrate.StageAnnounced, migrate.StageWarning, migrate.StageSoftBlock, migrate.StageHardBlock, migrate.StageRetired} {
			dates[st] = fs.String(stageFlag(st), "", "RFC 3339 date of the "+string(st)+" stage")
		}
	default:
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	pos, err := parseArgs(fs, args[1:])
	if err != nil || len(pos) != 0 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	if (args[0] == "retire" || args[0] == "block") && (platform == "" || (!dry && strings.TrimSpace(reason) == "")) {
		return fmt.Errorf("%w: -platform and -reason are required", errUsage)
	}
	var rreq retireRequest
	if args[0] == "retire" {
		if below == "" {
			return fmt.Errorf("%w: -below is required", errUsage)
		}
		rreq = retireRequest{Platform: platform, Below: below, Recommended: recommended, UpdateURL: updateURL, Reason: reason, DryRun: dry, OpID: op}
		for _, st := range migrate.Stages() {
			if s := dates[st]; s != nil && *s != "" {
				t, err := time.Parse(time.RFC3339, *s)
				if err != nil {
					return fmt.Errorf("%w: -%s: %v", errUsage, stageFlag(st), err)
				}
				rreq.Schedule = append(rreq.Schedule, migrate.StageAt{Stage: st, At: t})
			}
		}
		if jitter != "" {
			d, err := time.ParseDuration(jitter)
			if err != nil {
				return fmt.Errorf("%w: -jitter: %v", errUsage, err)
			}
			rreq.JitterWindow = migrate.Duration(d)
		}
		for _, s := range strings.Split(scope, ",") {
			if s = strings.TrimSpace(s); s != "" {
				ph, err := migrate.ParsePhase(s)
				if err != nil {
					return fmt.Errorf("%w: -scope: %v", errUsage, err)
				}
				rreq.Scope = append(rreq.Scope, ph)
			}
		}
	}
	c, err := adminSetup(&o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	switch args[0] {
	case "list":
		q := url.Values{}
		if platform != "" {
			q.Set("platform", platform)
		}
		if active != "" {
			q.Set("active", active)
		}
		var cs migrate.Census
		if err := c.do(ctx, http.MethodGet, "/v1/admin/versions/census?"+q.Encode(), nil, &cs); err != nil {
			return err
		}
		if o.format == "json" {
			return printJSON(stdout, cs)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PLATFORM\tBAND\tPHASE\tDEVICES\tUSERS\tPROTOCOLS\tCAPABILITIES\tUNSEEN")
		for _, r := range cs.Rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\n", r.Platform, r.Band, r.Phase, r.Devices, r.Users,
				counts(r.Protocols), counts(r.Capabilities), r.Unseen)
		}
		fmt.Fprintf(tw, "total\t\t\t%d\t%d\t\t\t\n", cs.Devices, cs.Users)
		return tw.Flush()
	case "policy":
		var out map[string][]migrate.VersionPolicy
		if err := c.do(ctx, http.MethodGet, "/v1/admin/versions/policies", nil, &out); err != nil {
			return err
		}
		if o.format == "json" {
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PLATFORM\tSTAGE\tMINIMUM\tRECOMMENDED\tBLOCKED\tSCOPE\tSCHEDULE")
		for _, p := range out["policies"] {
			st, _ := p.StageAt(time.Now())
			var blocked, sched, sc []string
			for _, b := range p.Blocked {
				blocked = append(blocked, b.Version)
			}
			for _, s := range p.Schedule {
				sched = append(sched, string(s.Stage)+"@"+s.At.UTC().Format(time.RFC3339))
			}
			for _, ph := range p.Scope {
				sc = append(sc, string(ph))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.Platform, st, dash(p.Minimum), dash(p.Recommended), dash(strings.Join(blocked, ",")), dash(strings.Join(sc, ",")), dash(strings.Join(sched, " ")))
		}
		return tw.Flush()
	case "report":
		var out map[string][]migrate.Impact
		if err := c.do(ctx, http.MethodGet, "/v1/admin/versions/report", nil, &out); err != nil {
			return err
		}
		if o.format == "json" {
			return printJSON(stdout, out)
		}
		return printImpacts(stdout, out["reports"])
	}
	// retire or block: a dry run first, then confirmation, then the write.
	path, body := "/v1/admin/versions/retire", any(&rreq)
	what := fmt.Sprintf("retire %s below %s", platform, below)
	breq := blockRequest{Platform: platform, Version: version, Reason: reason, DryRun: true, OpID: op}
	if args[0] == "block" {
		if version == "" {
			return fmt.Errorf("%w: -version is required", errUsage)
		}
		path, body, what = "/v1/admin/versions/block", &breq, fmt.Sprintf("block %s %s now", platform, version)
	}
	rreq.DryRun = true
	var preview retireResponse
	if err := c.do(ctx, http.MethodPost, path, body, &preview); err != nil {
		return err
	}
	if dry {
		if o.format == "json" {
			return printJSON(stdout, preview)
		}
		fmt.Fprintln(stdout, "dry run: nothing saved")
		return printImpacts(stdout, []migrate.Impact{preview.Impact})
	}
	printImpacts(stderr, []migrate.Impact{preview.Impact})
	if err := confirm(yes, stderr, fmt.Sprintf("%s (%d devices of %d users affected)", what, preview.Impact.AffectedDevices, preview.Impact.AffectedUsers)); err != nil {
		return err
	}
	rreq.DryRun, breq.DryRun = false, false
	var out retireResponse
	if err := c.do(ctx, http.MethodPost, path, body, &out); err != nil {
		return fmt.Errorf("versions %s: %w", args[0], err)
	}
	if o.format == "json" {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "saved policy %s (revision %d)\n", out.Policy.Platform, out.Policy.Revision)
	return printImpacts(stdout, []migrate.Impact{out.Impact})
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printImpacts(w io.Writer, ims []migrate.Impact) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLATFORM\tSTAGE\tAFFECTED_DEVICES\tAFFECTED_USERS\tPENDING\tENFORCED\tDEVICES_BY_PHASE\tUSERS_BY_PHASE\tBY_REASON")
	for _, im := range ims {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", im.Platform, im.Stage, im.AffectedDevices, im.AffectedUsers, im.Pending, im.Enforced,
			counts(im.DevicesByPhase), counts(im.UsersByPhase), counts(im.ByReason))
	}
	return tw.Flush()
}
