package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// defaultHealthTimeout is how long `gateway healthcheck` gives the agent to
// answer: shorter than the Dockerfile's HEALTHCHECK --timeout, so that the
// container runtime records our one-line reason rather than its own kill.
const defaultHealthTimeout = 3 * time.Second

// healthcheckCommand runs `gateway healthcheck`: it exits 0 when the local
// agent's /healthz answers "ok" within the timeout, and 1 with a one-line
// reason otherwise. It needs no token (/healthz is open), so it works in a
// container's HEALTHCHECK with nothing but the address.
func healthcheckCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "admin listener (default $"+envAddr+" or "+defaultAdminURL+")")
	timeout := fs.Duration("timeout", defaultHealthTimeout, "how long the agent has to answer")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *timeout <= 0 {
		fmt.Fprintln(stderr, "usage: gateway healthcheck [-addr URL] [-timeout D]")
		return errUsage
	}
	// The admin client resolves the address as every admin command does;
	// /healthz ignores the token, so a placeholder stands in for it.
	c, err := newAdminClient(*addr, "unused-by-healthz")
	if err != nil {
		return err
	}
	if err := checkHealth(ctx, c.base, *timeout); err != nil {
		return fmt.Errorf("healthcheck %s: %w", c.base, err)
	}
	fmt.Fprintln(stdout, "ok", c.base)
	return nil
}

// maxHealthBody bounds what checkHealth reads of an answer and quotes in
// its reason.
const maxHealthBody = 128

// checkHealth asks base's /healthz and returns why the answer is not a
// healthy one, on one line.
func checkHealth(ctx context.Context, base string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", timeout)
	}
	if err != nil {
		return oneLine(err.Error())
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxHealthBody))
	if err != nil {
		return fmt.Errorf("HTTP %d, body unreadable: %s", resp.StatusCode, oneLine(err.Error()))
	}
	body := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK || body != "ok" {
		return fmt.Errorf("HTTP %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
	return nil
}

// oneLine makes an error text fit the one line a health reason gets.
func oneLine(s string) error {
	return errors.New(strings.Join(strings.Fields(s), " "))
}
