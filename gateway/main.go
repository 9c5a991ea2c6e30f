package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// version is the build's version, set with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `gateway: Ferry, the migration and interop gateway.

Usage:
  gateway agent [-dev] [flags]              run the agent (go run ./gateway agent -dev)
  gateway users get ID                      show a user's migration record
  gateway users list [-phase P]             list users
  gateway users set-phase ID PHASE -reason TEXT
                                            move a user to another phase
  gateway users hold|resume ID -reason TEXT
                                            park a user in held, or return it to its prior phase
  gateway users exempt ID -campaign NAME -reason TEXT [-until T] [-remove] [-op ID]
  gateway campaign create -f FILE | list | plan NAME
  gateway campaign status NAME [-watch] [-interval 5s] [-for 24h]
                                            progress; -watch refreshes until completed or aborted
  gateway campaign start|pause|resume|abort|rollback NAME [-reason TEXT] [-op ID] [-yes]
  gateway campaign rollback NAME -step      roll back only the current step's users, then pause
  gateway status [-format json]             the agent at a glance: engine, users per phase, campaigns, parts
  gateway healthcheck [-addr URL] [-timeout D]
                                            exit 0 if the agent's /healthz answers ok in time, else 1 with the reason
  gateway audit [-user ID] [-campaign NAME] [-since T]
  gateway freeze on|off|status [-reason TEXT] [-op ID]
  gateway versions list|policy|retire|block|report   client versions: census, policies, retirement (gateway versions -h)
  gateway legacy sim -users N -duration D   run simulated legacy clients against an agent
  gateway legacy revoke -user ID -peer PEER_ID -reason TEXT
                                            revoke a legacy device's certificate (audited)
  gateway bench NAME|all [-format json]     measure hot paths against raw floors (gateway bench -h)
  gateway version                           print the version

The admin commands read FERRY_ADDR (default http://127.0.0.1:7071) and
FERRY_TOKEN (the dev agent prints it and writes it to <data-dir>/admin-token).
Read commands take -format json; commands that change something take
-op ID (a retry with the same id changes nothing). start, abort and
rollback ask for confirmation on a terminal and need -yes otherwise.
Exit codes: 0 done; 1 the agent refused the command or could not be
reached; 2 the command line was wrong or a destructive command was not
confirmed.
Run "gateway COMMAND -h" for a command's flags.
`

// errUsage marks a command line that could not be understood; it exits 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if code := exitCode(err, os.Stderr); code != 0 {
		os.Exit(code)
	}
}

// exitCode maps run's error to the documented exit code and says why on
// stderr: a usage error that carries its own message ("-reason is
// required", "not confirmed") prints it too, since a bare exit 2 leaves an
// operator guessing; bare errUsage and -h already printed the usage.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp), err == errUsage:
		return 2
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "gateway:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	default:
		fmt.Fprintln(stderr, "gateway:", err)
		return 1
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "agent":
		return agentCommand(ctx, rest, stdout, stderr)
	case "users":
		return usersCommand(ctx, rest, stdout, stderr)
	case "campaign":
		return campaignCommand(ctx, rest, stdout, stderr)
	case "status":
		return statusCommand(ctx, rest, stdout, stderr)
	case "healthcheck":
		return healthcheckCommand(ctx, rest, stdout, stderr)
	case "audit":
		return auditCommand(ctx, rest, stdout, stderr)
	case "freeze":
		return freezeCommand(ctx, rest, stdout, stderr)
	case "versions":
		return versionsCommand(ctx, rest, stdout, stderr)
	case "legacy":
		return legacyCommand(ctx, rest, stdout, stderr)
	case "bench":
		return benchCommand(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "gateway", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "gateway: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// parseArgs parses fs over args, allowing flags after positional arguments
// ("set-phase alice cloud -reason x"), and returns the positional ones.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
