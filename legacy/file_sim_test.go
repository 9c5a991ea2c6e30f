package legacy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestSimChatVersions(t *testing.T) {
	for _, tt := range []struct{ n, v1, v3, want1, want3 int }{
		{4, 25, 75, 1, 3}, {10, 20, 30, 2, 3}, {6, 50, 0, 3, 0}, {5, 0, 100, 0, 5}, {3, 100, 0, 3, 0}, {100, 15, 35, 15, 35},
	} {
		got := map[int]int{}
		for _, v := range simChatVersions(tt.n, tt.v1, tt.v3) {
			got[v]++
		}
		if got[1] != tt.want1 || got[3] != tt.want3 || got[2] != tt.n-tt.want1-tt.want3 {
			t.Errorf("simChatVersions(%d, %d%%, %d%%) = %v, want %d v1 and %d v3", tt.n, tt.v1, tt.v3, got, tt.want1, tt.want3)
		}
	}
}

// TestRunSimFileOffers: simulated v3 devices offer files; v3 recipients
// take and verify them, the v1 device gets text notices, and nothing fails.
// The certificates carry the chat capabilities of each device's profile.
func TestRunSimFileOffers(t *testing.T) {
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	caps := map[int][]string{1: {legacywire.CapChat1}, 3: {legacywire.CapChat1, legacywire.CapChat2, legacywire.CapChat3}}
	cfg := SimConfig{Users: 4, V1Percent: 25, V3Percent: 75, FilePercent: 100, Duration: 2 * time.Second, Rate: 3,
		Supernode: snInfo, Authority: auth.PublicKey()}
	cfg.Certify = func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
		p, _ := SimProfileFromContext(ctx)
		return auth.Certify(id, user, p.Platform, p.ClientVersion, caps[p.ChatVersion], time.Hour)
	}
	stats, err := RunSim(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("RunSim: %v", err)
	}
	t.Logf("stats: %+v", stats)
	v3 := 0
	for i := range cfg.Users {
		devs, _ := sn.Lookup(fmt.Sprintf("%s%d", DefaultSimUserPrefix, i))
		if len(devs) == 1 && devs[0].Cert.Has(legacywire.CapChat3) {
			v3++
		}
	}
	if v3 != 3 {
		t.Errorf("%d devices certified for chat v3, want 3 of 4", v3)
	}
	if stats.FilesOffered == 0 || stats.FilesReceived == 0 || stats.Failed != 0 ||
		stats.FilesReceived+stats.FilesFailed > stats.FilesOffered {
		t.Errorf("stats = %+v: want files offered and received, no failed send", stats)
	}
}
