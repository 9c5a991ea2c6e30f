package main

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

func legacyCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "sim" {
		fmt.Fprintln(stderr, "usage: gateway legacy sim [-admin URL] -users N -duration D [-rate R] [-contacts a,b]")
		return errUsage
	}
	fs := flag.NewFlagSet("legacy sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		admin, token, contacts, prefix, level string
		users                                 int
		duration                              time.Duration
		rate                                  float64
	)
	fs.StringVar(&admin, "admin", "", "admin API of a running agent (default $"+envAddr+" or "+defaultAdminURL+")")
	fs.StringVar(&token, "token", "", "admin token (default $"+envToken+")")
	fs.IntVar(&users, "users", 10, "number of simulated legacy users, one device each")
	fs.DurationVar(&duration, "duration", time.Minute, "how long to run")
	fs.Float64Var(&rate, "rate", 0.5, "messages per second per user")
	fs.StringVar(&prefix, "prefix", "sim-", "user name prefix")
	fs.StringVar(&contacts, "contacts", "", "extra recipients, comma-separated (cloud users are added from the agent)")
	fs.StringVar(&level, "log-level", "warn", "debug, info, warn or error")
	if _, err := parseArgs(fs, args[1:]); err != nil {
		return errUsage
	}
	if users < 1 || duration <= 0 || rate <= 0 {
		return fmt.Errorf("legacy sim: -users, -duration and -rate must be positive")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	c, err := newAdminClient(admin, token)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, cliTimeout)
	var boot bootstrap
	err = c.do(bctx, http.MethodGet, "/v1/admin/legacy/bootstrap", nil, &boot)
	cancel()
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	sn, authority, err := parseBootstrap(boot)
	if err != nil {
		return err
	}
	extra := boot.CloudUsers
	for _, u := range strings.Split(contacts, ",") {
		if u = strings.TrimSpace(u); u != "" {
			extra = append(extra, u)
		}
	}
	fmt.Fprintf(stdout, "simulating %d legacy users for %s at %.2g msg/s each; cloud contacts: %v\n", users, duration, rate, extra)
	stats, err := legacy.RunSim(ctx, legacy.SimConfig{
		Users:      users,
		Duration:   duration,
		Rate:       rate,
		UserPrefix: prefix,
		Contacts:   extra,
		Supernode:  sn,
		Authority:  authority,
		Logger:     log,
		Certify: func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
			var cert legacywire.Certificate
			profile, ok := legacy.SimProfileFromContext(ctx)
			if !ok {
				return cert, fmt.Errorf("simulator gave no device profile for %s", user)
			}
			req := certRequest{PeerID: id.String(), User: user, Platform: profile.Platform, ClientVersion: profile.ClientVersion}
			err := c.do(ctx, http.MethodPost, "/v1/admin/legacy/certificates", req, &cert)
			return cert, err
		},
	})
	fmt.Fprintf(stdout, "sent %d, delivered %d, failed %d, received %d\n", stats.Sent, stats.Delivered, stats.Failed, stats.Received)
	return err
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
