package main

import (
	"context"
	"testing"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// TestDirectoryMetrics: the supernode's directory on /metrics: live device
// records, lookups answered, the offline store's depth, and registered
// devices by platform and version band; a route record appears once a user
// moves to the cloud.
func TestDirectoryMetrics(t *testing.T) {
	ta := startAgent(t, t.TempDir(), agentPorts(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	newLegacyPhone(t, ta, "dm-rita")
	ron := newLegacyPhone(t, ta, "dm-ron")
	if look, err := ron.dir.Lookup(ctx, "dm-rita"); err != nil || len(look.Devices) != 1 {
		t.Fatalf("lookup: %+v %v", look, err)
	}
	// A message to a user whose only device is gone is held offline.
	away := newLegacyPhone(t, ta, "dm-away")
	away.host.Close()
	if _, ack, err := ron.dev.Send(ctx, "dm-away", "later"); err != nil || ack.Status != legacywire.StatusStored {
		t.Fatalf("send to a user whose device is gone: %+v %v", ack, err)
	}
	for series, want := range map[string]float64{
		`gateway_legacy_directory_records{kind="device"}`:                  3,
		`gateway_legacy_registered_devices{band="7.4",platform="desktop"}`: 3,
		`gateway_legacy_offline_messages`:                                  1,
		`gateway_legacy_directory_records{kind="route"}`:                   0,
	} {
		if got := seriesValue(t, ta, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if got := seriesValue(t, ta, `gateway_legacy_directory_lookups_total`); got < 1 {
		t.Errorf("lookups answered = %v, want at least 1", got)
	}
	setPhases(t, ta.admin(), "dm-rita", migrate.PhaseShadow, migrate.PhaseReady, migrate.PhaseCloud)
	waitUntil(t, within, func() bool { return seriesValue(t, ta, `gateway_legacy_directory_records{kind="route"}`) == 1 },
		func() string { return "no route record counted after dm-rita moved to the cloud" })
}
