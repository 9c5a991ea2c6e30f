package legacy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

func TestRunSim(t *testing.T) {
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	var (
		mu       sync.Mutex
		profiles = map[string]SimProfile{}
	)
	cfg := SimConfig{
		Users:     3,
		Duration:  2 * time.Second,
		Rate:      5,
		Supernode: snInfo,
		Authority: auth.PublicKey(),
		Certify: func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
			p, ok := SimProfileFromContext(ctx)
			if !ok {
				return legacywire.Certificate{}, errors.New("no sim profile in context")
			}
			mu.Lock()
			profiles[user] = p
			mu.Unlock()
			return auth.Certify(id, user, p.Platform, p.ClientVersion, nil, time.Hour)
		},
	}
	stats, err := RunSim(testCtx(t), cfg)
	if err != nil {
		t.Fatalf("RunSim: %v", err)
	}
	t.Logf("stats: %+v", stats)
	if stats.Delivered == 0 || stats.Failed != 0 {
		t.Errorf("stats = %+v, want deliveries and no failures", stats)
	}
	if stats.Sent != stats.Delivered+stats.Failed || stats.Received != stats.Delivered {
		t.Errorf("stats = %+v: want Sent = Delivered + Failed and Received = Delivered", stats)
	}
	if len(profiles) != 3 || profiles["sim-0"].Platform != "desktop" || profiles["sim-1"].Platform != "android" {
		t.Errorf("profiles = %+v, want the default platforms spread over sim-0..2", profiles)
	}
	if n := sn.Devices(); n != 3 {
		t.Errorf("supernode has %d devices, want 3", n)
	}
}

func TestRunSimStopsWithContext(t *testing.T) {
	auth := newTestAuthority(t)
	_, snInfo := startSupernode(t, auth, SupernodeConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := RunSim(ctx, SimConfig{
			Users:     2,
			Duration:  time.Hour,
			Supernode: snInfo,
			Authority: auth.PublicKey(),
			Certify: func(_ context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
				return auth.Certify(id, user, "ios", "1", nil, time.Hour)
			},
		})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunSim = %v, want nil when the context ends", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("RunSim did not return after its context ended")
	}
}

func TestSimConfigValidate(t *testing.T) {
	auth := newTestAuthority(t)
	h := newTestHost(t)
	certifyFn := func(context.Context, peer.ID, string) (legacywire.Certificate, error) {
		return legacywire.Certificate{}, nil
	}
	good := SimConfig{Users: 2, Duration: time.Second, Supernode: addrInfoOf(h), Authority: auth.PublicKey(), Certify: certifyFn}
	tests := []struct {
		name string
		mod  func(*SimConfig)
		ok   bool
	}{
		{name: "good", mod: func(*SimConfig) {}, ok: true},
		{name: "no users", mod: func(c *SimConfig) { c.Users = 0 }},
		{name: "too many users", mod: func(c *SimConfig) { c.Users = MaxSimUsers + 1 }},
		{name: "no duration", mod: func(c *SimConfig) { c.Duration = 0 }},
		{name: "negative rate", mod: func(c *SimConfig) { c.Rate = -1 }},
		{name: "no certify", mod: func(c *SimConfig) { c.Certify = nil }},
		{name: "no supernode", mod: func(c *SimConfig) { c.Supernode = peer.AddrInfo{} }},
		{name: "alone", mod: func(c *SimConfig) { c.Users = 1 }},
		{name: "alone with contacts", mod: func(c *SimConfig) { c.Users, c.Contacts = 1, []string{"cloud-1"} }, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.mod(&cfg)
			err := cfg.Validate()
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidConfig)) {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestRunSimPopulation(t *testing.T) {
	auth := newTestAuthority(t)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{})
	var (
		mu       sync.Mutex
		versions = map[int]int{} // chat version → devices
		perUser  = map[string]int{}
	)
	stats, err := RunSim(testCtx(t), SimConfig{
		Users:          3,
		DevicesPerUser: 2,
		V1Percent:      50,
		Duration:       2 * time.Second,
		Rate:           5,
		Supernode:      snInfo,
		Authority:      auth.PublicKey(),
		Certify: func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
			p, _ := SimProfileFromContext(ctx)
			mu.Lock()
			versions[p.ChatVersion]++
			perUser[user]++
			mu.Unlock()
			return auth.Certify(id, user, p.Platform, p.ClientVersion, nil, time.Hour)
		},
	})
	if err != nil {
		t.Fatalf("RunSim: %v", err)
	}
	t.Logf("stats: %+v", stats)
	if versions[1] != 3 || versions[2] != 3 {
		t.Errorf("chat versions = %v, want 3 v1 and 3 v2 devices", versions)
	}
	if len(perUser) != 3 || perUser["sim-0"] != 2 {
		t.Errorf("devices per user = %v, want 2 for each of 3 users", perUser)
	}
	if n := sn.Devices(); n != 6 {
		t.Errorf("supernode has %d devices, want 6", n)
	}
	// v1 and v2 devices talk to each other without errors; a v2 sender fans
	// out to both devices of the recipient, so more arrive than were acked.
	if stats.Delivered == 0 || stats.Failed != 0 || stats.Received < stats.Delivered {
		t.Errorf("stats = %+v, want deliveries, no failures, Received >= Delivered", stats)
	}
}

// TestRunSimUpgradeRequired: devices the supernode refuses with
// upgrade_required report the notice and stop: they register once, never
// again, and send nothing, while the others run as usual.
func TestRunSimUpgradeRequired(t *testing.T) {
	auth := newTestAuthority(t)
	const notice = "Your desktop app (version 5.9.2) is no longer supported; please update to 6.2.1 or later."
	var (
		mu       sync.Mutex
		attempts = map[string]int{} // registrations per refused peer
	)
	sn, snInfo := startSupernode(t, auth, SupernodeConfig{
		Admit: func(cert legacywire.Certificate) (string, string) {
			if cert.ClientVersion != "5.9.2" {
				return "", ""
			}
			mu.Lock()
			attempts[cert.PeerID]++
			mu.Unlock()
			return legacywire.CodeUpgradeRequired, notice
		},
	})
	stats, err := RunSim(testCtx(t), SimConfig{
		Users:     8, // versions cycle over 4: sim-0 and sim-4 run 5.9.2
		Duration:  2 * time.Second,
		Rate:      5,
		Supernode: snInfo,
		Authority: auth.PublicKey(),
		Certify: func(ctx context.Context, id peer.ID, user string) (legacywire.Certificate, error) {
			p, _ := SimProfileFromContext(ctx)
			return auth.Certify(id, user, p.Platform, p.ClientVersion, nil, time.Hour)
		},
	})
	if err != nil {
		t.Fatalf("RunSim: %v", err)
	}
	t.Logf("stats: %+v", stats)
	if stats.UpgradeRequired != 2 || stats.LastNotice != notice {
		t.Errorf("UpgradeRequired = %d, LastNotice = %q; want 2 and the supernode's notice", stats.UpgradeRequired, stats.LastNotice)
	}
	if n := sn.Devices(); n != 6 {
		t.Errorf("supernode has %d devices, want the 6 not refused", n)
	}
	if stats.Sent != stats.Delivered+stats.Failed || stats.Delivered == 0 {
		t.Errorf("stats = %+v, want deliveries among the devices still running", stats)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 {
		t.Errorf("refused peers = %d, want 2", len(attempts))
	}
	for p, n := range attempts {
		if n != 1 {
			t.Errorf("refused peer %s registered %d times, want once", p, n)
		}
	}
}

func TestDirectoryUpgradeRequiredError(t *testing.T) {
	auth := newTestAuthority(t)
	const notice = "please update to 7.0"
	_, snInfo := startSupernode(t, auth, SupernodeConfig{
		Admit: func(legacywire.Certificate) (string, string) { return legacywire.CodeUpgradeRequired, notice },
	})
	h := newTestHost(t)
	d, err := NewDevice(DeviceConfig{Host: h, Cert: certify(t, auth, h, "alice"), Authority: auth.PublicKey(), Supernode: snInfo})
	if err != nil {
		t.Fatalf("NewDevice: %v", err)
	}
	err = d.Register(testCtx(t))
	var up *UpgradeRequiredError
	if !errors.As(err, &up) || up.Notice != notice {
		t.Fatalf("Register = %v, want an *UpgradeRequiredError with the notice", err)
	}
	if !errors.Is(err, ErrUpgradeRequired) || !errors.Is(err, ErrRefused) {
		t.Errorf("Register = %v, want it to match ErrUpgradeRequired and ErrRefused", err)
	}
}
