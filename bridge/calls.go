package bridge

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/ferrygw/ferry/cloud"
	"github.com/ferrygw/ferry/cloud/cloudwire"
	"github.com/ferrygw/ferry/legacy"
	"github.com/ferrygw/ferry/legacy/legacywire"
)

// Calls ring across the boundary. The bridge carries signalling only
// (media between a legacy device and a cloud device is not bridged yet).
//
//   - cloud caller → legacy-home callee: the cloud rings the callee's one
//     device cloud.BridgeCallDevice, the bridge. The bridge's overlay peer,
//     speaking for the caller as it does for a cloud user's messages,
//     invites every live device of the callee; the first accept answers the
//     cloud call (the callee's other devices get answered-elsewhere), a
//     reject rejects it, and the cloud's cancel, timeout and hang-up reach
//     the devices. A callee whose devices speak chat v1 only, or who has no
//     live device, ends the cloud call as unavailable at once.
//   - legacy caller → cloud-home callee: the route record makes the bridge
//     the callee's one device. It takes the invite and places a cloud call
//     acting for the caller (cloud.BridgeCalls: the cloud rings the
//     callee's most recently active device first), and carries ringing,
//     answer, reject and hang-up back to the caller's device, and the
//     caller's cancel and hang-up into the cloud call.
//
// Calls are live state: the bridge keeps them in memory only (a bridge
// restart ends them, as a device restart does).

// kindCall is the kind label of call signalling in
// gateway_bridge_items_total and gateway_bridge_route_decisions_total.
const kindCall = "call"

// Values of the labels of gateway_bridge_call_setups_total. The campaign
// guardrail on call setup failures (gateway/campaign_guardrail.go) reads
// callee_home and counts ok and failed; unsupported (the callee's devices
// speak chat v1 only) and unavailable (no live device) are the callee's
// state, not the bridge's failure.
const (
	calleeCloud      = "cloud"
	calleeLegacy     = "legacy"
	setupOK          = "ok"
	setupFailed      = "failed"
	setupUnsupported = "unsupported"
	setupUnavailable = "unavailable"
	callStateRinging = "ringing"
	callStateActive  = "active"
	callStateEnded   = "ended"
	maxBridgedCalls  = 4096
	callQueue        = 1024
)

// callSetupResults are the result label values, for series at zero.
var callSetupResults = []string{setupOK, setupFailed, setupUnsupported, setupUnavailable}

// bridgedCall is one call crossing the boundary.
type bridgedCall struct {
	id, media    string
	caller       string // user
	callee       string // user
	toLegacy     bool   // the callee's home is the overlay
	ringMillis   int64
	mu           sync.Mutex
	state        string
	legs         map[peer.ID]bool // toLegacy: devices that took the invite → told the outcome
	inviting     bool             // toLegacy: invites still in flight
	winner       peer.ID          // toLegacy: the device that answered
	callerDevice peer.AddrInfo    // !toLegacy: the legacy caller's device
	rang         bool             // !toLegacy: the caller was told it rings
	endedHere    bool             // the legacy side ended it: tell it nothing
	reason       string           // toLegacy: how the cloud call ended
}

// callRelay carries call signalling across the boundary.
type callRelay struct {
	b     *Bridge
	cloud *cloud.BridgeCalls
	jobs  chan cloudwire.CallState

	wg      sync.WaitGroup // invites and frames in flight (spawn)
	mu      sync.Mutex
	calls   map[string]*bridgedCall
	stopped bool // run returned: spawn starts nothing
}

func newCallRelay(b *Bridge) *callRelay {
	return &callRelay{
		b: b,
		cloud: cloud.NewBridgeCalls(cloud.BridgeCallsConfig{
			JS: b.cfg.JS, RingDelay: b.cfg.RingDelay, RingTimeout: b.cfg.RingTimeout, Now: b.cfg.Now, Logger: b.log,
		}),
		jobs:  make(chan cloudwire.CallState, callQueue),
		calls: make(map[string]*bridgedCall),
	}
}

// run follows every cloud call's states until ctx ends, then ends the
// calls the bridge placed.
func (r *callRelay) run(ctx context.Context) error {
	sub, err := r.cloud.SubscribeCalls(r.fromCloud)
	if err != nil {
		return err
	}
	defer func() {
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		r.wg.Wait()
	}()
	defer r.cloud.Close()
	defer func() {
		if err := sub.Unsubscribe(); err != nil {
			r.b.log.Debug("unsubscribe calls", "err", err)
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case st := <-r.jobs:
			r.cloudState(ctx, st)
		}
	}
}

// fromCloud queues a call state for the worker when it concerns a call
// the bridge carries or one that rings the bridge. It runs on NATS's
// goroutine.
func (r *callRelay) fromCloud(st cloudwire.CallState) {
	r.mu.Lock()
	_, known := r.calls[st.CallID]
	r.mu.Unlock()
	if !known && (st.State != cloudwire.CallRinging || !slices.Contains(st.Ringing, cloud.BridgeCallDevice)) {
		return
	}
	select {
	case r.jobs <- st:
	default:
		r.b.countItem(dirCloudToLegacy, kindCall, resultError)
		r.b.log.Warn("call queue full; state dropped", "call", st.CallID, "state", st.State)
	}
}

// spawn runs fn in a goroutine that run waits for, unless run returned.
func (r *callRelay) spawn(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.wg.Go(fn)
}

func (r *callRelay) get(id string) *bridgedCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// add records c unless its id is taken or the table is full.
func (r *callRelay) add(c *bridgedCall) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.calls[c.id]; ok || len(r.calls) >= maxBridgedCalls {
		return false
	}
	r.calls[c.id] = c
	return true
}

func (r *callRelay) forget(id string) {
	r.mu.Lock()
	delete(r.calls, id)
	r.mu.Unlock()
}

// setup counts one call setup.
func (r *callRelay) setup(c *bridgedCall, result string) {
	home := calleeCloud
	if c.toLegacy {
		home = calleeLegacy
	}
	r.b.metrics.callSetups.WithLabelValues(home, result).Inc()
}

// cloudState applies one state of a cloud call to the legacy side.
func (r *callRelay) cloudState(ctx context.Context, st cloudwire.CallState) {
	c := r.get(st.CallID)
	if c == nil {
		r.ringLegacy(ctx, st)
		return
	}
	if c.toLegacy {
		r.toLegacyState(c, st)
	} else {
		r.toCloudState(c, st)
	}
}

// ringLegacy starts ringing a legacy-home callee's devices for a cloud
// call that rings the bridge.
func (r *callRelay) ringLegacy(ctx context.Context, st cloudwire.CallState) {
	c := &bridgedCall{id: st.CallID, media: st.Media, caller: st.From, callee: st.To, toLegacy: true,
		state: callStateRinging, legs: make(map[peer.ID]bool), inviting: true,
		ringMillis: (r.cloud.RingTimeout() + legacy.CallRingGrace).Milliseconds()}
	if c.media != legacywire.CallVideo {
		c.media = legacywire.CallAudio
	}
	if !r.b.live.legacyHome(c.callee) || !r.add(c) {
		return // a stale state after a move, or a repeat
	}
	r.b.decide(kindCall, pathInterop)
	r.spawn(func() { r.inviteLegacy(ctx, c) })
}

// inviteLegacy sends the invite to every live device of the callee, then
// settles the call: unavailable in the cloud when no device took it, or
// cancelled on the devices that did when the cloud call ended meanwhile.
func (r *callRelay) inviteLegacy(ctx context.Context, c *bridgedCall) {
	targets := r.b.legacyTargets(ctx, c.callee)
	c.mu.Lock()
	for _, t := range targets { // a device may answer before its ack is back
		c.legs[t.ID] = false
	}
	c.mu.Unlock()
	sig := legacywire.CallSignal{CallID: c.id, From: c.caller, To: c.callee, Media: c.media, RingMillis: c.ringMillis}
	var mu sync.Mutex
	unsupported := 0
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Go(func() {
			ack, err := r.b.sendCallFrame(ctx, t, legacywire.FrameCallInvite, sig)
			if err == nil && ack.Status == legacywire.StatusDelivered {
				return
			}
			c.mu.Lock()
			delete(c.legs, t.ID)
			c.mu.Unlock()
			if errors.Is(err, legacy.ErrNotSupported) || (err == nil && ack.Code == legacywire.CodeUnsupported) {
				mu.Lock()
				unsupported++
				mu.Unlock()
				return
			}
			r.b.log.Debug("call invite to legacy device", "call", c.id, "code", ack.Code, "err", err)
		})
	}
	wg.Wait()
	c.mu.Lock()
	c.inviting = false
	rung, state, reason := len(c.legs), c.state, c.reason
	c.mu.Unlock()
	switch {
	case rung > 0:
		r.setup(c, setupOK)
		r.b.countItem(dirCloudToLegacy, kindCall, resultOK)
		if state == callStateEnded {
			// Ended while the invites were in flight, maybe after a
			// device answered: that device is hung up, not cancelled.
			r.tellEnd(c, reason)
		}
		return
	case unsupported > 0:
		r.setup(c, setupUnsupported)
		r.b.countItem(dirCloudToLegacy, kindCall, resultUnsupported)
	case len(targets) == 0:
		r.setup(c, setupUnavailable)
		r.b.countItem(dirCloudToLegacy, kindCall, resultError)
	default:
		r.setup(c, setupFailed)
		r.b.countItem(dirCloudToLegacy, kindCall, resultError)
	}
	r.markEndedHere(c)
	rctx, cancel := context.WithTimeout(ctx, r.b.cfg.DeliveryTimeout)
	defer cancel()
	if err := r.cloud.Request(rctx, c.id, cloudwire.CallReject, c.callee, cloud.BridgeCallDevice, cloudwire.ReasonUnavailable); err != nil {
		r.b.log.Debug("end cloud call as unavailable", "call", c.id, "err", err)
	}
}

func (r *callRelay) markEndedHere(c *bridgedCall) {
	c.mu.Lock()
	c.endedHere = true
	c.mu.Unlock()
}

// toLegacyState carries the cloud caller's side of a call to a legacy
// callee: its end, to the callee's devices.
func (r *callRelay) toLegacyState(c *bridgedCall, st cloudwire.CallState) {
	if st.State != cloudwire.CallEnded {
		return
	}
	r.forget(c.id)
	reason := legacywire.CallReasonCancelled
	switch st.Reason {
	case cloudwire.ReasonRejected:
		reason = legacywire.CallReasonRejected
	case cloudwire.ReasonTimeout:
		reason = legacywire.CallReasonTimeout
	}
	c.mu.Lock()
	inviting := c.inviting
	c.state, c.reason = callStateEnded, reason
	c.mu.Unlock()
	if !inviting { // else inviteLegacy tells the devices once their invites are settled
		r.tellEnd(c, reason)
	}
}

// tellEnd tells the callee's devices that the cloud call ended: the one
// that answered gets a hang-up (unless the end came from it), or, when
// none answered, every device not yet told gets a cancel (a reject on one
// device rejects the call on the others, as between legacy devices).
func (r *callRelay) tellEnd(c *bridgedCall, reason string) {
	c.mu.Lock()
	winner, here := c.winner, c.endedHere
	c.mu.Unlock()
	if winner == "" {
		r.tellLegs(c, legacywire.FrameCallCancel, reason)
	} else if !here {
		r.goCallFrame(addrOf(r.b, winner), legacywire.FrameCallHangUp, c.signal(""))
	}
}

func addrOf(b *Bridge, p peer.ID) peer.AddrInfo {
	return peer.AddrInfo{ID: p, Addrs: b.cfg.Host.Peerstore().Addrs(p)}
}

// tellLegs sends typ to every device of the callee not yet told how the
// call went for it.
func (r *callRelay) tellLegs(c *bridgedCall, typ, reason string) {
	c.mu.Lock()
	var to []peer.ID
	for p, told := range c.legs {
		if !told {
			c.legs[p] = true
			to = append(to, p)
		}
	}
	c.mu.Unlock()
	for _, p := range to {
		r.goCallFrame(addrOf(r.b, p), typ, c.signal(reason))
	}
}

// signal is a call frame's payload from the caller's side.
func (c *bridgedCall) signal(reason string) legacywire.CallSignal {
	return legacywire.CallSignal{CallID: c.id, From: c.caller, To: c.callee, Reason: reason}
}

// answerSignal is a call frame's payload from the callee's side.
func (c *bridgedCall) answerSignal() legacywire.CallSignal {
	return legacywire.CallSignal{CallID: c.id, From: c.callee, To: c.caller}
}

// toCloudState carries a cloud callee's side of a legacy caller's call
// to the caller's device: ringing, answered, and its end.
func (r *callRelay) toCloudState(c *bridgedCall, st cloudwire.CallState) {
	c.mu.Lock()
	typ := ""
	switch {
	case c.state == callStateEnded:
	case st.State == cloudwire.CallRinging && !c.rang:
		c.rang, typ = true, legacywire.FrameCallRinging
	case st.State == cloudwire.CallActive && c.state == callStateRinging:
		c.state, typ = callStateActive, legacywire.FrameCallAccept
	case st.State == cloudwire.CallEnded:
		was := c.state
		c.state = callStateEnded
		switch {
		case c.endedHere:
		case was == callStateActive:
			typ = legacywire.FrameCallHangUp
		default:
			typ = legacywire.FrameCallReject
		}
	}
	to := c.callerDevice
	c.mu.Unlock()
	if st.State == cloudwire.CallEnded {
		r.forget(c.id)
		if !c.rang && st.Reason == cloudwire.ReasonUnavailable {
			r.setup(c, setupUnavailable)
		}
	}
	if st.State == cloudwire.CallRinging && typ != "" {
		r.setup(c, setupOK)
	}
	if typ != "" {
		r.goCallFrame(to, typ, c.answerSignal())
	}
}

// fromLegacy takes a call frame from a legacy device: an invite to a
// cloud-home user, or a step of a call the bridge carries.
func (r *callRelay) fromLegacy(ctx context.Context, from legacywire.Certificate, f legacywire.ChatFrame) legacywire.ChatAck {
	ok := legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusDelivered}
	refuse := func(code, text string) legacywire.ChatAck {
		r.b.countItem(dirLegacyToCloud, kindCall, resultRefused)
		return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: code, Error: text}
	}
	pid, err := peer.Decode(from.PeerID)
	if err != nil {
		return refuse(legacywire.CodeBadCertificate, "certificate peer id does not parse")
	}
	sig := *f.Call
	if f.Type == legacywire.FrameCallInvite {
		return r.inviteCloud(ctx, pid, sig, f.ID, refuse)
	}
	c := r.get(sig.CallID)
	if c == nil {
		return refuse(legacywire.CodeUnknownCall, "no call "+sig.CallID+" at the bridge")
	}
	op := ""
	c.mu.Lock()
	switch {
	case !c.toLegacy && (pid != c.callerDevice.ID || sig.From != c.caller):
		c.mu.Unlock()
		return refuse(legacywire.CodeUnknownCall, "this device did not place call "+c.id)
	case c.toLegacy && (sig.From != c.callee || !hasLeg(c, pid)):
		c.mu.Unlock()
		return refuse(legacywire.CodeUnknownCall, "this device was not invited to call "+c.id)
	case c.state == callStateEnded:
		c.mu.Unlock()
		return refuse(legacywire.CodeCallEnded, "the call is over")
	}
	switch f.Type {
	case legacywire.FrameCallRinging:
	case legacywire.FrameCallCancel:
		if !c.toLegacy {
			op = cloudwire.CallCancel
		}
	case legacywire.FrameCallHangUp:
		if !c.toLegacy || pid == c.winner {
			op = cloudwire.CallHangup
		}
	case legacywire.FrameCallAccept, legacywire.FrameCallReject:
		switch {
		case !c.toLegacy:
			c.mu.Unlock()
			return refuse(legacywire.CodeUnknownCall, f.Type+" comes from the callee, not the caller")
		case c.winner == pid && f.Type == legacywire.FrameCallAccept:
			// a repeat
		case c.state != callStateRinging:
			c.mu.Unlock()
			return refuse(legacywire.CodeAnsweredElsewhere, "another device of "+c.callee+" accepted the call")
		case f.Type == legacywire.FrameCallAccept:
			c.winner, c.state, c.legs[pid], op = pid, callStateActive, true, cloudwire.CallAnswer
		default:
			c.legs[pid], op = true, cloudwire.CallReject
		}
	default:
		c.mu.Unlock()
		return refuse(legacywire.CodeUnknownCall, f.Type+" is not taken by the bridge")
	}
	if op != "" && op != cloudwire.CallAnswer {
		c.endedHere = true
	}
	c.mu.Unlock()
	if op == "" {
		return ok
	}
	user := c.caller
	if c.toLegacy {
		user = c.callee
	}
	rctx, cancel := context.WithTimeout(ctx, r.b.cfg.DeliveryTimeout)
	defer cancel()
	reason := ""
	if op == cloudwire.CallCancel && sig.Reason == legacywire.CallReasonTimeout {
		reason = cloudwire.ReasonTimeout // the caller's device stopped ringing
	}
	if err := r.cloud.Request(rctx, c.id, op, user, legacyDevice(from), reason); err != nil {
		r.b.log.Debug("call request to cloud", "call", c.id, "op", op, "err", err)
		if op == cloudwire.CallAnswer {
			r.b.countItem(dirLegacyToCloud, kindCall, resultError)
			return legacywire.ChatAck{ID: f.ID, Status: legacywire.StatusRefused, Code: legacywire.CodeCallEnded, Error: "the call is over in the cloud"}
		}
	}
	if op == cloudwire.CallAnswer {
		r.tellLegs(c, legacywire.FrameCallAnsweredElsewhere, "")
	}
	r.b.countItem(dirLegacyToCloud, kindCall, resultOK)
	return ok
}

func hasLeg(c *bridgedCall, p peer.ID) bool {
	_, ok := c.legs[p]
	return ok
}

// inviteCloud takes a legacy device's invite to a cloud-home user and
// places the cloud call acting for the caller.
func (r *callRelay) inviteCloud(ctx context.Context, pid peer.ID, sig legacywire.CallSignal, frameID string,
	refuse func(code, text string) legacywire.ChatAck) legacywire.ChatAck {
	if prev := r.get(sig.CallID); prev != nil {
		if !prev.toLegacy && prev.callerDevice.ID == pid && prev.caller == sig.From {
			return legacywire.ChatAck{ID: frameID, Status: legacywire.StatusDelivered} // a repeat
		}
		return refuse(legacywire.CodeUnknownCall, "call id "+sig.CallID+" is taken")
	}
	if !r.b.live.cloudHome(sig.To) {
		r.b.decide(kindCall, pathEscalation)
		return refuse(CodeNotHere, sig.To+" is not served by the bridge; look the user up again")
	}
	if r.b.live.cloudHome(sig.From) {
		return refuse(legacywire.CodeUnsupported, sig.From+"'s calls are placed in the cloud")
	}
	c := &bridgedCall{id: sig.CallID, media: sig.Media, caller: sig.From, callee: sig.To, state: callStateRinging,
		callerDevice: peer.AddrInfo{ID: pid, Addrs: r.b.cfg.Host.Peerstore().Addrs(pid)}}
	if !r.add(c) {
		return refuse(CodeUnavailable, "too many calls at the bridge")
	}
	r.b.decide(kindCall, pathInterop)
	ictx, cancel := context.WithTimeout(ctx, r.b.cfg.DeliveryTimeout)
	defer cancel()
	device := legacyDevice(legacywire.Certificate{PeerID: pid.String()})
	if err := r.cloud.Invite(ictx, c.id, c.caller, device, c.callee, c.media); err != nil {
		r.forget(c.id)
		r.setup(c, setupFailed)
		r.b.countItem(dirLegacyToCloud, kindCall, resultError)
		r.b.log.Warn("legacy call to cloud", "call", c.id, "err", err)
		return legacywire.ChatAck{ID: frameID, Status: legacywire.StatusRefused, Code: CodeUnavailable, Error: "the cloud did not take the call"}
	}
	r.b.countItem(dirLegacyToCloud, kindCall, resultOK)
	return legacywire.ChatAck{ID: frameID, Status: legacywire.StatusDelivered}
}

// sendCallFrame sends one call frame, speaking for sig.From, to a legacy
// device.
func (b *Bridge) sendCallFrame(ctx context.Context, to peer.AddrInfo, typ string, sig legacywire.CallSignal) (legacywire.ChatAck, error) {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.DeliveryTimeout)
	defer cancel()
	sig.At = b.now().UTC().Truncate(1e6)
	ack, _, err := legacy.SendChatFrame(ctx, b.cfg.Host, b.cert, to, legacy.LatestChatVersion,
		legacywire.ChatFrame{Type: typ, ID: newFrameID(), Call: &sig})
	return ack, err
}

// goCallFrame sends one call frame in the background; a device that does
// not take it ends the call on its own ring guard.
func (r *callRelay) goCallFrame(to peer.AddrInfo, typ string, sig legacywire.CallSignal) {
	b := r.b
	r.spawn(func() {
		ack, err := b.sendCallFrame(context.Background(), to, typ, sig)
		if err == nil && ack.Status != legacywire.StatusDelivered && ack.Code != legacywire.CodeCallEnded {
			b.log.Debug("call frame not taken", "type", typ, "call", sig.CallID, "code", ack.Code)
		} else if err != nil {
			b.log.Debug("call frame not sent", "type", typ, "call", sig.CallID, "err", err)
		}
	})
}
