package legacy

import (
	"context"
	"errors"
	"testing"
	"time"

	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
)

// TestRelayLimitsRaised pins our relays' limits above go-libp2p's defaults,
// which would cut a call's relayed media after 2 minutes or 128 KiB.
func TestRelayLimitsRaised(t *testing.T) {
	lib := relayv2.DefaultResources()
	ours := RelayConfig{}.resources()
	checks := []struct {
		name      string
		ours, lib int64
	}{
		{"circuit duration", int64(ours.Limit.Duration), int64(lib.Limit.Duration)},
		{"circuit data", ours.Limit.Data, lib.Limit.Data},
		{"reservations", int64(ours.MaxReservations), int64(lib.MaxReservations)},
		{"circuits per peer", int64(ours.MaxCircuits), int64(lib.MaxCircuits)},
		{"reservations per IP", int64(ours.MaxReservationsPerIP), int64(lib.MaxReservationsPerIP)},
		{"reservations per ASN", int64(ours.MaxReservationsPerASN), int64(lib.MaxReservationsPerASN)},
		{"buffer", int64(ours.BufferSize), int64(lib.BufferSize)},
	}
	for _, c := range checks {
		if c.ours <= c.lib {
			t.Errorf("%s: ours %d, not above go-libp2p's %d", c.name, c.ours, c.lib)
		}
	}
	if ours.Limit.Duration < time.Hour || ours.Limit.Data < 500<<20 {
		t.Errorf("circuit limit %v / %d bytes cannot carry an hour-long call", ours.Limit.Duration, ours.Limit.Data)
	}
	custom := RelayConfig{Duration: time.Minute, Data: 1 << 20, Reservations: 10}.resources()
	if custom.Limit.Duration != time.Minute || custom.Limit.Data != 1<<20 || custom.MaxReservations != 10 {
		t.Errorf("explicit limits not applied: %+v %+v", custom, custom.Limit)
	}
	if err := (RelayConfig{Data: -1}).Validate(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Validate(negative) = %v, want ErrInvalidConfig", err)
	}
	if _, err := NewHost(HostConfig{Relay: &RelayConfig{Reservations: -1}}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("NewHost with a negative relay limit = %v, want ErrInvalidConfig", err)
	}
}

func TestKeepReservation(t *testing.T) {
	stats := NewNetStats()
	relay := newNetHost(t, HostConfig{Relay: &RelayConfig{}, Stats: stats})
	dev := newNetHost(t, HostConfig{RelayClient: true})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() {
		done <- KeepReservation(ctx, dev, addrInfoOf(relay), func(err error) { t.Errorf("reservation: %v", err) })
	}()
	eventually(t, "relay holds the reservation", func() bool { return stats.Snapshot().Reservations == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("KeepReservation = %v, want context.Canceled", err)
	}
}
