package legacy

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// liveDevices answers whether a peer is a certified, live device: a
// Supernode (LiveDevice) of the relay's own process.
type liveDevices interface {
	LiveDevice(id peer.ID) bool
}

var (
	_ relayv2.ACLFilter = (*RelayAccess)(nil)
	_ liveDevices       = (*Supernode)(nil)
)

// RelayAccess is the access list of our relays (RelayConfig.Access): a
// peer may reserve a slot, or open a circuit, only when it is one of ours
// (a trusted supernode or bridge, Trust) or a device with a valid,
// unrevoked certificate of our authority that is registered now at a
// supernode the relay asks (UseDevices). A circuit needs both ends
// allowed, so a device revoked after it reserved can no longer be reached
// through the relay. Everyone else is refused with PERMISSION_DENIED,
// counted under RefusedPermission in the relay's NetStats.
//
// It holds no peer beyond the trusted set; the zero value (and a
// RelayAccess with no trusted peer and no device source) refuses
// everyone. It is safe for concurrent use, and may be filled in after the
// relay starts (the supernode that answers for devices needs the relay's
// host first).
type RelayAccess struct {
	mu      sync.RWMutex
	trusted map[peer.ID]struct{}
	sources []liveDevices
}

// NewRelayAccess returns an access list that lets the trusted peers (our
// supernodes and bridge) in.
func NewRelayAccess(trusted ...peer.ID) *RelayAccess {
	a := &RelayAccess{}
	a.Trust(trusted...)
	return a
}

// Trust lets ids (our own supernodes and bridge) use the relay.
func (a *RelayAccess) Trust(ids ...peer.ID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.trusted == nil {
		a.trusted = make(map[peer.ID]struct{}, len(ids))
	}
	for _, id := range ids {
		a.trusted[id] = struct{}{}
	}
}

// UseDevices lets in the devices that src (a Supernode) reports as live.
func (a *RelayAccess) UseDevices(src liveDevices) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sources = append(a.sources, src)
}

// Allowed reports whether id may use the relay.
func (a *RelayAccess) Allowed(id peer.ID) bool {
	a.mu.RLock()
	_, ok := a.trusted[id]
	sources := a.sources
	a.mu.RUnlock()
	if ok {
		return true
	}
	for _, s := range sources {
		if s.LiveDevice(id) {
			return true
		}
	}
	return false
}

// AllowReserve is go-libp2p's reservation check: p must be allowed.
func (a *RelayAccess) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return a.Allowed(p) }

// AllowConnect is go-libp2p's circuit check: both src and dest must be
// allowed.
func (a *RelayAccess) AllowConnect(src peer.ID, _ ma.Multiaddr, dest peer.ID) bool {
	return a.Allowed(src) && a.Allowed(dest)
}
