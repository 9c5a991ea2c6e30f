package main

import (
	"context"
	"sync"
	"time"

	"github.com/ferrygw/ferry/legacy/legacywire"
	"github.com/ferrygw/ferry/migrate"
)

// The bridge asks for a version decision on every legacy message and frame
// it takes (bridge.Config.Admit). Decisions are kept per device for
// bridgeAdmitTTL, so that a busy sender costs one policy read and one
// census sighting a minute, not one per message; the set is bounded by
// bridgeAdmitMax (cleared when full: the next items decide again).
const (
	bridgeAdmitTTL = time.Minute
	bridgeAdmitMax = 100_000
)

type bridgeVerdict struct {
	code, notice string
	until        time.Time
}

// bridgeAdmissions caches the bridge's version decisions per device.
type bridgeAdmissions struct {
	mu   sync.Mutex
	seen map[admitKey]bridgeVerdict
}

// admitKey names a device of a user; a struct key costs the per-message
// look-up no allocation.
type admitKey struct{ user, peer string }

func (b *bridgeAdmissions) get(key admitKey, now time.Time) (bridgeVerdict, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, ok := b.seen[key]
	return v, ok && now.Before(v.until)
}

func (b *bridgeAdmissions) put(key admitKey, v bridgeVerdict) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil || len(b.seen) >= bridgeAdmitMax {
		b.seen = make(map[admitKey]bridgeVerdict)
	}
	b.seen[key] = v
}

// admitBridged is the bridge's Admit hook: the legacy device behind a chat
// item, judged like a registration at the supernode (admitOverlay) on the
// chat version it announced to the bridge, and counted in the device
// census with source "bridge". A refusal is CodeUpgradeRequired with the
// notice in the item's refusal; a warning is held once per device and
// stage as a notice from the system contact, as at registration.
func (a *agent) admitBridged(ctx context.Context, from legacywire.Certificate) (code, notice string) {
	now := time.Now()
	key := admitKey{from.User, from.PeerID}
	if v, ok := a.bridgeAdmits.get(key, now); ok {
		return v.code, v.notice
	}
	proto := spokenChatProtocol(a.brHost, from.PeerID)
	if a.devices != nil {
		a.devices.fromBridge(from, proto)
	}
	code, notice = a.admitOverlay(ctx, from, proto, migrate.SourceBridge)
	a.bridgeAdmits.put(key, bridgeVerdict{code: code, notice: notice, until: now.Add(bridgeAdmitTTL)})
	return code, notice
}

// fromBridge records a legacy device seen through the bridge, with the chat
// version it announced there (0 when unknown).
func (r *deviceRecorder) fromBridge(cert legacywire.Certificate, proto int) {
	r.offer(migrate.CensusDevice{User: cert.User, ID: cert.PeerID, Source: migrate.SourceBridge,
		Platform: cert.Platform, ClientVersion: cert.ClientVersion, Protocol: proto, Capabilities: cert.Capabilities})
}
