package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrygw/ferry/migrate"
)

// Environment of the admin CLI.
const (
	envAddr         = "FERRY_ADDR"
	envToken        = "FERRY_TOKEN"
	defaultAdminURL = "http://" + defaultAdminListen
	cliTimeout      = 30 * time.Second
)

// adminClient calls a running agent's admin API.
type adminClient struct {
	base  string
	token string
	// actor is the operator's name ($USER), sent as actorHeader so that
	// the audit log says who made a change (admin:NAME), not only "admin".
	actor string
	http  *http.Client
}

// operatorName is who runs the CLI, for the audit log: $USER, else the
// account's name ("" when neither is known).
func operatorName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func newAdminClient(addr, token string) (*adminClient, error) {
	if addr == "" {
		addr = os.Getenv(envAddr)
	}
	if addr == "" {
		addr = defaultAdminURL
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	if token == "" {
		token = strings.TrimSpace(os.Getenv(envToken))
	}
	if token == "" {
		return nil, fmt.Errorf("no admin token: set %s (the dev agent prints it and writes it to <data-dir>/admin-token)", envToken)
	}
	return &adminClient{base: strings.TrimRight(addr, "/"), token: token, actor: operatorName(), http: &http.Client{Timeout: cliTimeout}}, nil
}

// remoteError is an error answer of the admin API.
type remoteError struct {
	Status int
	apiError
}

func (e *remoteError) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.apiError.Error, e.Status, e.Code)
}

func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.actor != "" {
		req.Header.Set(actorHeader, c.actor)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("admin API: read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		re := &remoteError{Status: resp.StatusCode}
		if json.Unmarshal(b, &re.apiError) != nil || re.apiError.Error == "" {
			re.apiError = apiError{Error: strings.TrimSpace(string(b)), Code: "http"}
		}
		return re
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin API: answer: %w", err)
	}
	return nil
}

// outputFlags are the flags every admin command shares.
type outputFlags struct {
	format string
	addr   string
	token  string
}

func (o *outputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.format, "format", "text", "output format: text or json")
	fs.StringVar(&o.addr, "addr", "", "admin API address (default $"+envAddr+" or "+defaultAdminURL+")")
	fs.StringVar(&o.token, "token", "", "admin token (default $"+envToken+")")
}

func (o *outputFlags) check() error {
	if o.format != "text" && o.format != "json" {
		return fmt.Errorf("%w: -format must be text or json, not %q", errUsage, o.format)
	}
	return nil
}

func usersCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const sub = "usage: gateway users get ID | list [-phase P] | set-phase ID PHASE -reason TEXT [-op ID]"
	if len(args) == 0 {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	switch args[0] {
	case "hold", "resume", "exempt":
		return userControlCommand(ctx, args, stdout, stderr)
	}
	fs := flag.NewFlagSet("users "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o outputFlags
	o.register(fs)
	var phase, reason, op string
	var breakGlass bool
	var want int
	switch args[0] {
	case "get":
		want = 1
	case "list":
		fs.StringVar(&phase, "phase", "", "only users in this phase")
	case "set-phase":
		want = 2
		fs.StringVar(&reason, "reason", "", "why (required; kept with the record)")
		fs.StringVar(&op, "op", "", "operation id: repeating a command with the same id changes nothing (default: a new id)")
		fs.BoolVar(&breakGlass, "break-glass", false, "allow finalized → cloud")
	default:
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return errUsage
	}
	if len(pos) != want {
		fmt.Fprintln(stderr, sub)
		return errUsage
	}
	if err := o.check(); err != nil {
		return err
	}
	c, err := newAdminClient(o.addr, o.token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()

	switch args[0] {
	case "get":
		var u migrate.User
		if err := c.do(ctx, http.MethodGet, "/v1/admin/users/"+url.PathEscape(pos[0]), nil, &u); err != nil {
			return err
		}
		return printUsers(stdout, o.format, u, []migrate.User{u}, true)
	case "list":
		var all []migrate.User
		after := ""
		for {
			q := url.Values{"limit": {"1000"}}
			if phase != "" {
				q.Set("phase", phase)
			}
			if after != "" {
				q.Set("after", after)
			}
			var page userList
			if err := c.do(ctx, http.MethodGet, "/v1/admin/users?"+q.Encode(), nil, &page); err != nil {
				return err
			}
			all = append(all, page.Users...)
			if page.Next == "" {
				break
			}
			after = page.Next
		}
		if all == nil {
			all = []migrate.User{}
		}
		return printUsers(stdout, o.format, all, all, false)
	default: // set-phase
		if strings.TrimSpace(reason) == "" {
			return fmt.Errorf("%w: set-phase: -reason is required", errUsage)
		}
		var u migrate.User
		req := phaseRequest{Phase: pos[1], Reason: reason, OpID: op, BreakGlass: breakGlass}
		if err := c.do(ctx, http.MethodPost, "/v1/admin/users/"+url.PathEscape(pos[0])+"/phase", req, &u); err != nil {
			return fmt.Errorf("set-phase %s %s: %w", pos[0], pos[1], err)
		}
		return printUsers(stdout, o.format, u, []migrate.User{u}, true)
	}
}

// printUsers writes v as JSON, or users as a table (with devices when detail).
func printUsers(w io.Writer, format string, v any, users []migrate.User, detail bool) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tPHASE\tSINCE\tDEVICES\tREVISION\tREASON")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", u.ID, u.Phase, u.PhaseSince.UTC().Format(time.RFC3339), len(u.Devices), u.Revision, u.Reason)
	}
	if err := tw.Flush(); err != nil || !detail {
		return err
	}
	// The devices get a table of their own: in the users' table, a peer id
	// of 52 characters widened the USER column for every row.
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, u := range users {
		for _, d := range u.Devices {
			fmt.Fprintf(tw, "  device %s\t%s\t%s\tlast seen %s\n", d.ID, d.Platform, d.ClientVersion, d.LastSeen.UTC().Format(time.RFC3339))
		}
	}
	return tw.Flush()
}
