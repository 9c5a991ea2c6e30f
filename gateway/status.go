package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferrygw/ferry/bridge"
	"github.com/ferrygw/ferry/migrate"
)

// agentStatus is the body of GET /v1/admin/status: what an operator woken at
// night needs on one screen. Each part is nil when this agent does not run
// it.
type agentStatus struct {
	Version   string          `json:"version"`
	Time      time.Time       `json:"time"`
	Roles     []string        `json:"roles"`
	Engine    engineStatus    `json:"engine"`
	Users     map[string]int  `json:"users"` // by phase; every phase present
	Campaigns []campaignBrief `json:"campaigns"`
	// Versions are the largest platform and client-version bands, by
	// devices the users' records know of (all phases).
	Versions  []versionBrief `json:"versions"`
	Supernode *snStatus      `json:"supernode,omitempty"`
	Cloud     *cloudStatus   `json:"cloud,omitempty"`
	Bridge    *bridgeBrief   `json:"bridge,omitempty"`
}

type engineStatus struct {
	// Mode is "embedded" (in-process NATS on the data directory) or
	// "external" (-nats-url).
	Mode    string `json:"mode"`
	DataDir string `json:"data_dir"`
	// SyncInterval is the embedded server's fsync interval; empty when
	// external (the cluster's own setting applies).
	SyncInterval string `json:"sync_interval,omitempty"`
}

// statusBands is how many version bands `gateway status` shows.
const statusBands = 5

// versionBrief is one platform and client-version band: its devices and
// users over every phase.
type versionBrief struct {
	Platform string `json:"platform"`
	Band     string `json:"band"`
	Devices  int    `json:"devices"`
	Users    int    `json:"users"`
}

// topBands sums a census's rows over phases and returns the n bands with
// the most devices (ties by platform and band).
func topBands(c migrate.Census, n int) []versionBrief {
	byBand := map[[2]string]*versionBrief{}
	for _, r := range c.Rows {
		k := [2]string{r.Platform, r.Band}
		b := byBand[k]
		if b == nil {
			b = &versionBrief{Platform: r.Platform, Band: r.Band}
			byBand[k] = b
		}
		b.Devices += r.Devices
		b.Users += r.Users // a user has one phase: the rows' users are apart
	}
	out := make([]versionBrief, 0, len(byBand))
	for _, b := range byBand {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(x, y versionBrief) int {
		return cmp.Or(cmp.Compare(y.Devices, x.Devices), cmp.Compare(x.Platform, y.Platform), cmp.Compare(x.Band, y.Band))
	})
	return out[:min(n, len(out))]
}

// campaignBrief is one campaign that is not finished (running, paused,
// rolling back, planned or draft).
type campaignBrief struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Target   string `json:"target"`
	Step     int    `json:"step"` // 1-based; 0 before the first
	Steps    int    `json:"steps"`
	TargetBP int    `json:"target_bp"` // the current step's cohort share
	Reason   string `json:"reason,omitempty"`
}

type snStatus struct {
	Peers             int   `json:"peers"`
	Devices           int   `json:"devices"`
	ReplicaPeers      int   `json:"replica_peers"`
	ReplicationPushed int64 `json:"replication_pushed"`
	ReplicationDrop   int64 `json:"replication_dropped"`
	RateLimited       int64 `json:"rate_limited"`
	PeersCut          int64 `json:"peers_cut"`
}

type cloudStatus struct {
	Sessions int `json:"sessions"`
}

type bridgeBrief struct {
	Links []bridge.LinkStatus `json:"links"`
	// OutboxMessages and OutboxOldestSeconds come from the bridge's own
	// gauges (gateway_bridge_outbox_*).
	OutboxMessages      float64 `json:"outbox_messages"`
	OutboxOldestSeconds float64 `json:"outbox_oldest_age_seconds"`
}

// unfinished campaign states, shown by status.
var activeCampaignStates = map[migrate.CampaignState]bool{
	migrate.CampaignDraft: true, migrate.CampaignPlanned: true, migrate.CampaignRunning: true,
	migrate.CampaignPaused: true, migrate.CampaignRollingBack: true,
}

func (a *agent) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.collectStatus(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, "status", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *agent) collectStatus(ctx context.Context) (agentStatus, error) {
	st := agentStatus{Version: version, Time: time.Now().UTC().Truncate(time.Millisecond), Users: map[string]int{}, Campaigns: []campaignBrief{}}
	sn := a.state.Snapshot()
	st.Versions = topBands(migrate.TakeCensus(sn, nil, "", 0, st.Time), statusBands)
	for _, role := range allRoles {
		if a.has(role) {
			st.Roles = append(st.Roles, role)
		}
	}
	st.Engine = engineStatus{Mode: "external", DataDir: a.cfg.DataDir}
	if a.eng.Embedded() {
		st.Engine.Mode = "embedded"
		st.Engine.SyncInterval = a.eng.SyncInterval().String()
	}
	for p, n := range sn.CountByPhase() {
		st.Users[string(p)] = n
	}
	cs, err := a.control.campaigns.List(ctx)
	if err != nil {
		return st, fmt.Errorf("list campaigns: %w", err)
	}
	for _, c := range cs {
		if !activeCampaignStates[c.State] {
			continue
		}
		b := campaignBrief{Name: c.Name, State: string(c.State), Target: string(c.Target), Steps: len(c.Steps), Reason: c.Reason}
		if c.State != migrate.CampaignDraft && c.State != migrate.CampaignPlanned && c.Step < len(c.Steps) {
			b.Step, b.TargetBP = c.Step+1, c.Steps[c.Step].TargetBP
		}
		st.Campaigns = append(st.Campaigns, b)
	}
	if a.supernode != nil {
		pushed, dropped := a.supernode.ReplicationStats()
		refused, _ := a.snLimiter.Stats()
		st.Supernode = &snStatus{
			Peers:             len(a.snHost.Network().Peers()),
			Devices:           a.supernode.Devices(),
			ReplicaPeers:      len(a.cfg.SupernodePeers),
			ReplicationPushed: pushed,
			ReplicationDrop:   dropped,
			RateLimited:       refused,
			PeersCut:          a.snGater.Cuts(),
		}
	}
	if a.cloud != nil {
		st.Cloud = &cloudStatus{Sessions: a.cloud.Sessions()}
	}
	if a.bridge != nil {
		st.Bridge = &bridgeBrief{Links: a.bridge.Status().Links}
		mfs, err := a.reg.Gather()
		if err != nil {
			return st, fmt.Errorf("gather metrics: %w", err)
		}
		for _, mf := range mfs {
			if len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge() == nil {
				continue
			}
			v := mf.GetMetric()[0].GetGauge().GetValue()
			switch mf.GetName() {
			case "gateway_bridge_outbox_messages":
				st.Bridge.OutboxMessages = v
			case "gateway_bridge_outbox_oldest_age_seconds":
				st.Bridge.OutboxOldestSeconds = v
			}
		}
	}
	return st, nil
}

// statusCommand is `gateway status`: the agent at a glance.
func statusCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var out outputFlags
	out.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil || len(pos) != 0 {
		if err == nil {
			fmt.Fprintln(stderr, "usage: gateway status [-format json]")
		}
		return errUsage
	}
	if err := out.check(); err != nil {
		fmt.Fprintln(stderr, err)
		return errUsage
	}
	c, err := newAdminClient(out.addr, out.token)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	var st agentStatus
	if err := c.do(ctx, http.MethodGet, "/v1/admin/status", nil, &st); err != nil {
		return err
	}
	if out.format == "json" {
		return printJSON(stdout, st)
	}
	return printAgentStatus(stdout, st)
}

// statusBarWidth is the width of the longest phase bar.
const statusBarWidth = 40

// printAgentStatus writes st for a terminal: phases as bars, then one line per
// part and campaign.
func printAgentStatus(w io.Writer, st agentStatus) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Ferry agent %s\t%s\troles %s\n", st.Version, st.Time.Format(time.RFC3339), strings.Join(st.Roles, ","))
	eng := st.Engine.Mode + " NATS JetStream"
	if st.Engine.SyncInterval != "" {
		eng += ", fsync every " + st.Engine.SyncInterval
	}
	fmt.Fprintf(tw, "engine\t%s\tdata %s\n", eng, st.Engine.DataDir)

	total, most := 0, 0
	for _, n := range st.Users {
		total += n
		most = max(most, n)
	}
	fmt.Fprintf(tw, "\nusers\t%d\t\n", total)
	for _, p := range migrate.Phases() {
		n := st.Users[string(p)]
		bar := 0
		if most > 0 {
			bar = (n*statusBarWidth + most - 1) / most
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\n", p, n, strings.Repeat("#", bar))
	}

	fmt.Fprintf(tw, "\ncampaigns\t%d not finished\t\n", len(st.Campaigns))
	for _, c := range st.Campaigns {
		step := "not started"
		if c.Step > 0 {
			step = fmt.Sprintf("step %d/%d at %d bp", c.Step, c.Steps, c.TargetBP)
		}
		line := fmt.Sprintf("  %s\t%s\t→ %s, %s", c.Name, c.State, c.Target, step)
		if c.Reason != "" {
			line += " (" + c.Reason + ")"
		}
		fmt.Fprintln(tw, line)
	}

	fmt.Fprintf(tw, "\nversions\ttop %d bands by devices\t\n", len(st.Versions))
	for _, v := range st.Versions {
		fmt.Fprintf(tw, "  %s %s\t%d devices\t%d users\n", v.Platform, v.Band, v.Devices, v.Users)
	}

	fmt.Fprintln(tw)
	if s := st.Supernode; s != nil {
		fmt.Fprintf(tw, "supernode\t%d peers, %d devices\treplicas %d (pushed %d, dropped %d); rate-limited %d, cut %d\n",
			s.Peers, s.Devices, s.ReplicaPeers, s.ReplicationPushed, s.ReplicationDrop, s.RateLimited, s.PeersCut)
	} else {
		fmt.Fprintln(tw, "supernode\tnot run here\t")
	}
	if c := st.Cloud; c != nil {
		fmt.Fprintf(tw, "cloud\t%d sessions\t\n", c.Sessions)
	} else {
		fmt.Fprintln(tw, "cloud\tnot run here\t")
	}
	if b := st.Bridge; b != nil {
		for _, l := range b.Links {
			line := fmt.Sprintf("bridge link %s\t%s since %s\treconnects %d", l.Name, l.State, l.Since.Format(time.RFC3339), l.Reconnects)
			if l.LastError != "" {
				line += ", last error: " + l.LastError
			}
			fmt.Fprintln(tw, line)
		}
		fmt.Fprintf(tw, "bridge outbox\t%.0f messages\toldest %s\n", b.OutboxMessages, (time.Duration(b.OutboxOldestSeconds) * time.Second).String())
	} else {
		fmt.Fprintln(tw, "bridge\tnot run here\t")
	}
	return tw.Flush()
}
