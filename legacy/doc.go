// Package legacy is the legacy peer-to-peer overlay on go-libp2p: the
// network authority that certifies devices, host construction with explicit
// resource limits, the supernode directory (server and client) with
// certificate revocations and an offline store, chat v1, v2 and v3 (file
// transfer), call signalling (chat v2 and v3) and call media, a legacy
// device (client), and a simulator that runs a population of devices.
//
// It is an adapter: the bytes on the wire are defined in package legacywire,
// and this package converts between them and libp2p (peer IDs, multiaddrs,
// streams). It never imports the cloud side (package cloud and below); the
// bridge joins the two worlds.
//
// # Trust
//
// Every stream checks the certificate of its remote peer against the
// authority key: a certificate names a peer ID, and it must be the peer at the
// other end of the connection (Noise authenticates that ID). So one peer can
// never speak for another user, except a peer whose certificate carries
// legacywire.CapBridge, which may send on behalf of users whose
// authority-signed route record names it.
//
// A user may have several devices, each with its own certificate. The
// authority can revoke one (Authority.Revoke): a supernode learns it through
// the directory's revoke op and from then on refuses the device at
// registration and lookup and hides its record; devices and bridges fetch
// the list (revocations op, Device.SyncRevocations) and their chat handlers
// refuse revoked peers at the hello and at every frame. Every directory op
// but an unknown one checks the sender's certificate, route and revoke
// submissions included (the record's own authority signature is what makes
// it valid; the certificate says who sent it).
//
// The chat handlers and the supernode keep the certificates whose
// signature they have verified (legacywire.CertCache): a device opens
// chat streams and sends its certificate with every directory request,
// and the ed25519 verification was the largest cost of a bridged
// message's set-up at the bridge and at the supernode. Only the signature
// check is remembered; the peer, the expiry and the revocation list are
// checked on every stream and request.
//
// A device (chat_reuse.go) remembers for RouteCacheTTL a lookup that
// resolved to a live route, and keeps a chat v2/v3 stream open for
// ChatStreamIdle after its ack, to send its next message on: a run of
// messages to a user behind the bridge then costs one frame and its ack
// each, not a directory round trip and a fresh stream (protocol
// negotiation, hello) each, which halved the bridge agent's CPU per
// bridged message. This is no change of the wire protocol: every chat
// handler, of every version, has always read a hello and then frames in
// a loop until the stream ends; only a v1 stream still carries one
// message (the old clients' behaviour). A remembered route that answers
// CodeNotHere (the user's route moved) or fails in transport is dropped
// and the message retried once after a fresh lookup; a kept stream that
// fails is dropped and the message resent on a fresh one, under the same
// message ID, which every receiver deduplicates.
//
// # Chat versions
//
// Each chat version is its own protocol ID. Openers list every version they
// speak, highest first (ChatProtocolIDs), and multistream-select settles on
// the highest both ends speak. Chat v2 adds typed frames: read receipts,
// typing, presence subscribe/publish; and a v2 sender fans a message out to
// every device of the recipient. Chat v3 is v2 plus file offers (file.go).
// Degradation towards an older peer (SendChatFrame): a message goes out as
// a v1 frame to a v1 peer; a file offer to a v1 or v2 peer goes out as a
// text message naming the file and its size (FileNoticeFrame), delivered
// like any message and so never an error; any other newer-only frame is
// not sent at all (ErrNotSupported). A peer never receives a frame it
// cannot parse. TestChatInterop runs every ordered pairing of v1, v2 and
// v3 devices.
//
// # File transfer (chat v3)
//
// Device.OfferFile hashes a file (SHA-256), gives it a UUIDv7 file ID and
// sends a file_offer (name, size, hash, chunk size) to every device of the
// recipient; a v3 peer that takes no files (the bridge answers unsupported)
// gets the text notice instead. The offering device keeps serving the file
// for FileOfferTTL. The recipient's device (DeviceConfig.OnFileOffer)
// answers with DeclineFile (a file_decline frame; the offer is forgotten
// on both sides) or AcceptFile: it opens a v3 stream to the offering
// device and sends a file_accept carrying the offset it already holds;
// the offering device acks and writes file_chunk frames from that offset
// to the end (not acked: the stream's flow control paces them). The bytes
// go to PATH.part; a cut transfer leaves them there and the next
// AcceptFile resumes from their end. At the end the whole file is hashed:
// a match renames it to PATH, a mismatch removes the partial file and
// returns ErrFileHash. Bounds: legacywire.MaxFileSize and MaxFileChunk on
// the wire, DeviceConfig.MaxFileSize per device (a bigger offer is refused
// with legacywire.CodeFileTooLarge), MaxFileOffers offers kept per
// direction. Only the offer's recipient user may accept (unknown_file
// otherwise).
//
// # Calls (chat v2 and v3)
//
// Call signalling travels as chat frames (legacywire.FrameCallInvite and
// the rest), so it is negotiated, certificate-checked and rate-limited like
// any chat frame, and a chat v1 device is never offered one. There is no
// server in the call: the caller's device decides (call.go,
// call_signal.go). Device.Call looks the callee up and sends an invite
// (call id, media kind, ring time) to every live device of theirs in
// parallel; each device that takes calls (DeviceConfig.OnCall) rings and
// sends call_ringing back. The first call_accept the caller's device sees
// wins (its ack is delivered); every other invited device is then sent
// call_answered_elsewhere, and a later accept is refused with
// answered_elsewhere. A reject from any device of the callee ends the call
// as rejected, and the caller's hang-up before an answer (cancelled) or
// its ring timeout (DeviceConfig.RingTimeout, default 30 s) ends it with
// the same reason, by a call_cancel to every device that was invited: the
// caller and every device of the callee end in the same state. A device
// whose invite ack comes back after the call moved on is told at once. A
// callee's device that hears nothing more (the caller vanished) ends the
// call as timed out CallRingGrace after the caller's ring time. A callee
// whose devices speak only chat v1, or take no calls (the bridge, for
// now), gives a call that ended as CallUnsupported, never an error; one
// without a live device, CallUnreachable.
//
// Who may say what: the chat handler makes every call frame speak for its
// sender's certified user (CallSignal.From), and the device then checks
// that the frame comes from a device that is part of the call: the
// caller's device for cancel, answered-elsewhere and its hang-up, an
// invited device of the callee for ringing, accept, reject and its
// hang-up (unknown_call otherwise). So a peer cannot ring, accept or end a
// call as another user, nor join a call it was not invited to.
//
// Media: with DeviceConfig.Media set, the device runs a media endpoint
// (media.go); once a call is accepted the caller's device opens the media
// stream to the device that accepted (direct, hole-punched or relayed),
// and that device takes it only from the caller's device of a call it
// answered. Both ends find the stream in Call.Media; the call closes it
// when it ends. Device.CallStats counts calls by final state per device
// (no global state); a simulator or the bridge adds them into its
// metrics.
//
// # Offline store
//
// When no device of the recipient is live (none registered, or every dial
// failed) and no route exists, the sender hands the message to its
// supernode (store op), which holds it in a bounded per-user queue with an
// expiry, and hands it over, oldest first, in the answer to the next
// registration of a device of that user that asks for it (Device.Register
// does). The device's duplicate filter makes the delivery once.
//
// What expires unread (or is dropped when a failed hand-over overflows the
// queue) is reported back to its sender: the supernode's sweep (every
// RecordTTL/4, between 1 s and 1 min) drops expired messages and queues a
// legacywire.Undeliverable (message ID, recipient, reason expired or
// overflow) for the sender, kept for OfflineTTL and bounded like the queue;
// a device of the sender takes them with op reports at its next
// registration (Device.Register, DeviceConfig.OnUndeliverable). The
// supernode counts both (OfflineStats, UndeliverableStats).
// # Directory
//
// Supernodes run a small directory protocol of our own
// (legacywire.DirectoryProtocolID), replicated among them, rather than a
// Kademlia DHT. Why: the supernodes are a handful of operator-run datacenter
// peers, not an open swarm, so every supernode can hold the whole directory
// (a lookup is one round trip to any of them, never an iterative walk);
// our records need semantics a DHT's put/get does not give for free
// (certificate checks at registration, revocations that delete records,
// authority-signed routes that win over device records, the offline
// store); and it adds no module. kad-dht would replicate to the k closest
// peers with a validator and private prefix, but with three supernodes that
// is "everyone" anyway, at the price of a second record format.
//
// Replication (replicate.go): a supernode configured with Peers and a
// certificate carrying legacywire.CapSupernode pushes every change it
// accepts (a device registration, a route record, a revocation) to each
// peer over the same directory protocol (op replicate), one ordered queue
// per peer with bounded retries. The receiver checks the sender's
// certificate (CapSupernode), re-checks the payload's own authority
// signature, and keeps the newer version: the higher Seq for routes, the
// later Expires for device records, any revocation it lacks; a change it
// keeps is pushed on to its own peers, so a change survives the loss of the
// supernode it entered through. Replication is asynchronous: a lookup at
// another supernode right after a registration may miss it for a moment.
// What heals the rest: devices re-register (refresh) well within
// RecordTTL, and the bridge republishes routes. Directory clients take a
// list of supernodes (NewDirectory's fallbacks, DeviceConfig.Fallbacks)
// and fail over on transport errors, sticking to the last one that
// answered. Not replicated yet: the offline store (held messages stay at
// the supernode that took them) and a full-state sync when a supernode
// (re)joins (it relies on refreshes instead).
//
// # Abuse limits
//
// Three layers, each bounded in memory. The resource manager (NewHost)
// has explicit system and transient limits sized from MaxConns, optional
// per-peer stream limits (MaxStreamsPerPeer) and, with LimitLoopback, a
// per-IP connection cap that also applies to 127.0.0.1 (go-libp2p exempts
// loopback by default, which would make abuse tests on loopback
// meaningless). Per-peer token buckets (PeerLimiter, a bounded LRU map)
// guard the directory (SupernodeConfig.Limiter) and chat (ChatConfig.Limiter,
// DeviceConfig.ChatLimiter): a request or frame over the limit is refused
// with legacywire.CodeRateLimited, and after CutAfter refusals in a row
// OnCut runs; Gater.Cut, installed as the host's connection gater
// (HostConfig.Gater), then closes the peer's connections and refuses it
// (on dial and after the handshake) for a while. Other peers keep their
// own buckets, so they are not slowed.
//
// # Deadlines and lifecycle
//
// Every stream gets deadlines (named constants below) and is closed or reset
// on every path. Long-running parts (Supernode) have Run(ctx) and return after
// their goroutines exit; stream handlers are bounded by their deadlines and by
// the host's lifetime.
//
// # Relay access and the simulator
//
// Our relays serve only our own peers. RelayAccess (RelayConfig.Access,
// go-libp2p's relay ACL) lets a peer reserve a slot or open a circuit when
// it is a trusted supernode or bridge (RelayAccess.Trust: the agent trusts
// its bridge and -supernode-peers) or a device with a live registration at
// a supernode of the same process (UseDevices: Supernode.LiveDevice, which
// checks the record's expiry, the certificate's expiry and revocation). A
// circuit needs both ends allowed, so revoking a device also stops circuits
// to it. Refusals are PERMISSION_DENIED, counted under RefusedPermission
// (gateway_legacy_relay_circuits_refused_total, reservations included). A
// nil Access leaves a relay open (tests only). Not yet: a device registered
// only at another agent's supernode cannot use this agent's relays (no
// certificate is presented on the relay protocol itself).
//
// RunSim runs a population of devices in one process: a mix of chat
// versions (V1Percent, V3Percent) and platforms (SimPlatformMix,
// DefaultSimPlatformMix), text at Rate, file offers (FilePercent) and
// audio calls (CallPercent; signalling only, no media stream), churn
// (ChurnRate devices leave per second and come back after ChurnDowntime on
// average, with the same identity: what was held for them is delivered at
// their new registration), progress reports (OnProgress) and latency
// quantiles from a bounded histogram. StartSimNetwork gives it an overlay
// of its own (gateway legacy sim -standalone): replicating supernodes whose
// relays are guarded by RelayAccess.
package legacy
