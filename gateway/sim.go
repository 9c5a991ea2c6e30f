package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

const simUsage = "usage: gateway legacy sim [-standalone [-supernodes N] | -admin URL] [-clients N | -users N] -duration D [-rate R]\n" +
	"  [-v1 P -v2 P -v3 P] [-platforms windows=30,...] [-files P] [-calls P] [-churn P] [-downtime D] [-contacts a,b]"

func legacyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "revoke" {
		return revokeCommand(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "sim" {
		fmt.Fprintln(stderr, simUsage+"\n"+revokeUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("legacy sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		admin, token, contacts, prefix, level, platforms string
		profiles                                         string
		users, clients, perUser, supernodes              int
		v1, v2, v3, files, calls                         int
		duration, downtime, progress                     time.Duration
		rate, churn                                      float64
		standalone                                       bool
	)
	fs.StringVar(&admin, "admin", "", "admin API of a running agent (default $"+envAddr+" or "+defaultAdminURL+")")
	fs.StringVar(&token, "token", "", "admin token (default $"+envToken+")")
	fs.BoolVar(&standalone, "standalone", false, "start an overlay of our own (an authority and -supernodes supernodes in this process) instead of using an agent")
	fs.IntVar(&supernodes, "supernodes", 3, "with -standalone: supernodes to start; devices are spread over them")
	fs.IntVar(&users, "users", 10, "number of simulated legacy users")
	fs.IntVar(&clients, "clients", 0, "number of simulated clients (devices); overrides -users: users = clients / -devices-per-user")
	fs.IntVar(&perUser, "devices-per-user", 1, "devices each user runs")
	fs.DurationVar(&duration, "duration", time.Minute, "how long to run")
	fs.Float64Var(&rate, "rate", 0.5, "messages per second per device")
	fs.IntVar(&v1, "v1", 10, "percent of clients speaking chat v1 only (text and a delivery ack)")
	fs.IntVar(&v2, "v2", 50, "percent of clients speaking chat v2 (receipts, presence, calls)")
	fs.IntVar(&v3, "v3", 40, "percent of clients speaking chat v3 (file offers); -v1, -v2 and -v3 add up to 100")
	fs.StringVar(&platforms, "platforms", formatShares(legacy.DefaultSimPlatformMix), "platform shares, name=percent, comma-separated")
	fs.IntVar(&files, "files", 5, "percent of a v3 client's sends that are file offers")
	fs.IntVar(&calls, "calls", 5, "percent of a v2 or v3 client's sends that are audio calls (signalling only, no media)")
	fs.Float64Var(&churn, "churn", 2, "percent of the clients leaving per minute (each comes back after -downtime on average)")
	fs.DurationVar(&downtime, "downtime", legacy.DefaultSimChurnDowntime, "mean time a leaving client stays away")
	fs.DurationVar(&progress, "progress", legacy.DefaultSimProgress, "how often to print the one-line summary")
	fs.StringVar(&prefix, "prefix", "sim-", "user name prefix")
	fs.StringVar(&contacts, "contacts", "", "extra recipients, comma-separated (cloud users are added from the agent)")
	fs.StringVar(&level, "log-level", "warn", "debug, info, warn or error")
	fs.StringVar(&profiles, "profile", "", "directory to write heap and goroutine profiles to, taken with the last summary (the population at full size)")
	if _, err := parseArgs(fs, args[1:]); err != nil {
		return errUsage
	}
	if clients > 0 {
		users = max(clients/max(perUser, 1), 1)
	}
	mix, err := parseShares(platforms)
	if err != nil {
		return err
	}
	switch {
	case users < 1 || perUser < 1 || duration <= 0 || rate <= 0 || churn < 0 || downtime < 0 || progress <= 0:
		return fmt.Errorf("legacy sim: -users (-clients), -devices-per-user, -duration, -rate and -progress must be positive; -churn and -downtime not negative")
	case v1 < 0 || v2 < 0 || v3 < 0 || v1+v2+v3 != 100:
		return fmt.Errorf("legacy sim: -v1 %d, -v2 %d and -v3 %d must add up to 100", v1, v2, v3)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	devices := users * perUser
	cfg := legacy.SimConfig{
		Users:          users,
		DevicesPerUser: perUser,
		V1Percent:      v1,
		V3Percent:      v3,
		FilePercent:    files,
		CallPercent:    calls,
		ChurnRate:      churn / 100 * float64(devices) / 60,
		ChurnDowntime:  downtime,
		Duration:       duration,
		Rate:           rate,
		UserPrefix:     prefix,
		Platforms:      legacy.SimPlatformMix(mix),
		Progress:       progress,
		Logger:         log,
	}
	var extra []string
	if standalone {
		net, err := legacy.StartSimNetwork(ctx, supernodes, log)
		if err != nil {
			return err
		}
		defer func() {
			if err := net.Close(); err != nil {
				log.Warn("stop simulated supernodes", "err", err)
			}
		}()
		cfg.Supernodes, cfg.Authority, cfg.Certify = net.Infos, net.Authority.PublicKey(), net.Certify
		cfg.Ready = func(ctx context.Context, devices int) error {
			ctx, cancel := context.WithTimeout(ctx, simReadyTimeout)
			defer cancel()
			return net.WaitReplicated(ctx, devices)
		}
	} else {
		if extra, err = simFromAgent(ctx, admin, token, &cfg); err != nil {
			return err
		}
	}
	for _, u := range strings.Split(contacts, ",") {
		if u = strings.TrimSpace(u); u != "" {
			extra = append(extra, u)
		}
	}
	cfg.Contacts = extra
	where := "the agent's supernode"
	if standalone {
		where = fmt.Sprintf("%d supernodes of our own", supernodes)
	}
	fmt.Fprintf(stdout, "simulating %d legacy clients (%d users) on %s for %s at %.2g msg/s each: v1/v2/v3 %d/%d/%d%%, files %d%%, calls %d%%, churn %.3g%%/min; cloud contacts: %v\n",
		devices, users, where, duration, rate, v1, v2, v3, files, calls, churn, extra)
	var last simSample
	cfg.OnProgress = func(s legacy.SimStats) {
		last = sampleProcess(s, profiles != "")
		fmt.Fprintln(stdout, last.line())
	}
	stats, err := legacy.RunSim(ctx, cfg)
	printSimReport(stdout, stats, last)
	if profiles != "" && last.Devices > 0 {
		err = errors.Join(err, writeProfiles(profiles, last.profiles))
	}
	return err
}

// simReadyTimeout bounds the wait for the standalone supernodes to
// replicate every registration.
const simReadyTimeout = time.Minute

// writeProfiles writes the heap and goroutine profiles taken with the
// last sample into dir.
func writeProfiles(dir string, p map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for name, data := range p {
		if err := os.WriteFile(filepath.Join(dir, name+".pprof"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// simFromAgent points cfg at a running agent: its supernode and authority
// (the bootstrap answer), certificates from its admin API. It returns the
// agent's cloud users, to message as contacts.
func simFromAgent(ctx context.Context, admin, token string, cfg *legacy.SimConfig) ([]string, error) {
	c, err := newAdminClient(admin, token)
	if err != nil {
		return nil, err
	}
	bctx, cancel := context.WithTimeout(ctx, cliTimeout)
	var boot bootstrap
	err = c.do(bctx, http.MethodGet, "/v1/admin/legacy/bootstrap", nil, &boot)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	sn, authority, err := parseBootstrap(boot)
	if err != nil {
		return nil, err
	}
	cfg.Supernode, cfg.Authority = sn, authority
	cfg.Certify = func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
		var cert legacywire.Certificate
		profile, ok := legacy.SimProfileFromContext(ctx)
		if !ok {
			return cert, fmt.Errorf("simulator gave no device profile for %s", user)
		}
		req := certRequest{PeerID: id.String(), User: user, Platform: profile.Platform, ClientVersion: profile.ClientVersion,
			Capabilities: legacy.SimCapabilities(profile.ChatVersion)}
		err := c.do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert)
		return cert, err
	}
	return boot.CloudUsers, nil
}

// simSample is the simulator's counters with this process's footprint at
// the same moment.
type simSample struct {
	legacy.SimStats
	rss, heap  uint64 // bytes; rss 0 when /proc is not there
	goroutines int
	profiles   map[string][]byte // heap and goroutine, when asked for
}

func sampleProcess(s legacy.SimStats, profile bool) simSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := simSample{SimStats: s, rss: processRSS(), heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	if profile {
		out.profiles = map[string][]byte{}
		for _, name := range []string{"heap", "goroutine"} {
			var b bytes.Buffer
			if err := pprof.Lookup(name).WriteTo(&b, 0); err == nil {
				out.profiles[name] = b.Bytes()
			}
		}
	}
	return out
}

// processRSS reads VmRSS from /proc/self/status, 0 when it cannot.
func processRSS() uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}

// line is the live one-line summary.
func (s simSample) line() string {
	return fmt.Sprintf("%6.1fs online %d/%d sent %d delivered %d stored %d undeliverable %d received %d p50 %s p99 %s files %d calls %d/%d churn %d/%d rss %s",
		s.Elapsed.Seconds(), s.Online, s.Devices, s.Sent, s.Delivered, s.Stored, s.Failed, s.Received,
		roundLatency(s.LatencyP50), roundLatency(s.LatencyP99), s.FilesOffered, s.CallsConnected, s.CallsPlaced,
		s.ChurnLeft, s.ChurnReturned, mib(s.rss))
}

// printSimReport prints the final report; last is the final sample, taken
// before the clients stopped (zero when none was taken).
func printSimReport(w io.Writer, s legacy.SimStats, last simSample) {
	fmt.Fprintf(w, "messages: sent %d, delivered %d, stored for offline recipients %d, undeliverable %d, expired unread %d, received %d\n",
		s.Sent, s.Delivered, s.Stored, s.Failed, s.Expired, s.Received)
	fmt.Fprintf(w, "latency (send to delivered ack): median %s, p99 %s\n", roundLatency(s.LatencyP50), roundLatency(s.LatencyP99))
	fmt.Fprintf(w, "files: offered %d, received and verified %d, failed or declined %d\n", s.FilesOffered, s.FilesReceived, s.FilesFailed)
	fmt.Fprintf(w, "calls: placed %d, connected %d, unanswered %d (signalling only)\n", s.CallsPlaced, s.CallsConnected, s.CallsUnanswered)
	fmt.Fprintf(w, "churn: %d left, %d came back; upgrade required %d\n", s.ChurnLeft, s.ChurnReturned, s.UpgradeRequired)
	if n := last.Devices; n > 0 {
		fmt.Fprintf(w, "process with %d clients: RSS %s (%s/client), Go heap in use %s (%s/client), %d goroutines (%.1f/client)\n",
			n, mib(last.rss), kib(last.rss/uint64(n)), mib(last.heap), kib(last.heap/uint64(n)), last.goroutines, float64(last.goroutines)/float64(n))
	}
}

func roundLatency(d time.Duration) time.Duration {
	if d > time.Millisecond {
		return d.Round(100 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func kib(b uint64) string { return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10)) }

// parseShares parses "name=percent,..." into platform shares.
func parseShares(s string) ([]legacy.SimShare, error) {
	var out []legacy.SimShare
	for _, part := range strings.Split(s, ",") {
		name, pct, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(pct)
		if !ok || name == "" || err != nil || n < 0 || n > 100 {
			return nil, fmt.Errorf("-platforms: %q is not name=percent (0..100)", part)
		}
		out = append(out, legacy.SimShare{Platform: name, Percent: n})
	}
	if legacy.SimPlatformMix(out) == nil {
		return nil, errors.New("-platforms: every share is zero")
	}
	return out, nil
}

func formatShares(shares []legacy.SimShare) string {
	parts := make([]string, len(shares))
	for i, s := range shares {
		parts[i] = fmt.Sprintf("%s=%d", s.Platform, s.Percent)
	}
	return strings.Join(parts, ",")
}

func parseBootstrap(b bootstrap) (peer.AddrInfo, ed25519.PublicKey, error) {
	var addrs []multiaddr.Multiaddr
	for _, s := range b.Supernode {
		ma, err := multiaddr.NewMultiaddr(s)
		if err != nil {
			return peer.AddrInfo{}, nil, fmt.Errorf("bootstrap supernode %q: %w", s, err)
		}
		addrs = append(addrs, ma)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(addrs...)
	if err != nil || len(infos) != 1 {
		return peer.AddrInfo{}, nil, fmt.Errorf("bootstrap: want one supernode, got %d (%v)", len(infos), err)
	}
	key, err := base64.StdEncoding.DecodeString(b.Authority)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return peer.AddrInfo{}, nil, fmt.Errorf("bootstrap: bad authority key")
	}
	return infos[0], ed25519.PublicKey(key), nil
}
