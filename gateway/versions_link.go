package main

import (
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/migrate"
)

// checkCloudMove is the ready→cloud check of a manual phase change (admin
// API and `gateway users set-phase`), the same rule the campaign driver
// applies (migrate.Gates.CheckCloud): a *migrate.CloudCapabilityError
// naming each recently active device the census saw speak a protocol
// without the cloud capability, nil otherwise.
func (a *agent) checkCloudMove(user string, to migrate.Phase) error {
	u, ok := a.state.Get(user)
	if !ok {
		return nil
	}
	return migrate.CheckCloudMove(&u, to, &a.censusGate, migrate.DefaultCloudActiveWithin, time.Now())
}

// identifyWait bounds how long a registration waits for the supernode to
// finish identifying the peer, so that the chat version it speaks is known
// when the version policy and the link rule judge it.
const identifyWait = time.Second

// spokenLegacyProtocol is legacyProtocol once the supernode has identified
// the peer (bounded by identifyWait): identify runs when the connection
// opens and usually ends before the registration arrives, but not always.
// 0 when it is still unknown.
func (a *agent) spokenLegacyProtocol(peerID string) int { return spokenChatProtocol(a.snHost, peerID) }

// spokenChatProtocol is chatProtocolOn(h, peerID) once h has identified the
// peer, waiting at most identifyWait, and not at all when h has no
// connection to it or has already identified it (its peerstore lists the
// peer's protocols: a peer that speaks no chat version costs no wait). It
// listens on h's event bus rather than asking the identify service, which
// hosts that wrap another (a relay host) hide.
func spokenChatProtocol(h host.Host, peerID string) int {
	if v := chatProtocolOn(h, peerID); v != 0 || h == nil {
		return v
	}
	id, err := peer.Decode(peerID)
	if err != nil || len(h.Network().ConnsToPeer(id)) == 0 {
		return 0
	}
	if protos, err := h.Peerstore().GetProtocols(id); err == nil && len(protos) > 0 {
		return 0 // identified: it speaks no chat version
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return 0
	}
	defer sub.Close()
	if v := chatProtocolOn(h, peerID); v != 0 { // identified while subscribing
		return v
	}
	timer := time.NewTimer(identifyWait)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-sub.Out():
			if !ok {
				return chatProtocolOn(h, peerID)
			}
			if done, _ := e.(event.EvtPeerIdentificationCompleted); done.Peer == id {
				return chatProtocolOn(h, peerID)
			}
		case <-timer.C:
			return chatProtocolOn(h, peerID)
		}
	}
}
