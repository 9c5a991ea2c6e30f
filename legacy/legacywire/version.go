package legacywire

// ProtocolVersion is the revision of the legacy wire format as a whole.
//
// History:
//
//	1: walking skeleton: uvarint+JSON framing, device certificates and route
//	   records (ed25519, "ferry-cert-v1" / "ferry-route-v1" signing bytes),
//	   directory protocol 1.0.0 (register, lookup, route), chat 1.0.0 (text and
//	   a delivery ack).
//	2: identity and chat v2: certificate revocations ("ferry-revoke-v1"
//	   signing bytes; directory ops revoke and revocations, refusal code
//	   revoked); chat 2.0.0 with typed ChatFrame frames (msg, ack, receipt,
//	   typing, presence, subscribe), negotiated against chat 1.0.0 by
//	   multistream-select; capabilities chat1 and chat2. Chat 1.0.0 bytes
//	   are unchanged. Offline store: directory op store, register with
//	   fetch returning held messages, ack status stored, refusal codes
//	   queue_full and unknown_user.
//	3: abuse limits and replication: refusal code rate_limited (directory
//	   and chat); directory op replicate (DirRequest.Record, Route or
//	   Revocation) among supernodes certified with capability supernode,
//	   refusal code not_supernode. Earlier bytes are unchanged.
//	4: chat 3.0.0: chat v2 plus file offers (ChatFrame types file_offer,
//	   file_accept, file_decline, file_chunk; payloads FileOffer,
//	   FileAnswer, FileChunk; bounds MaxFileSize, MaxFileChunk,
//	   MaxFileNameLen), refusal codes file_too_large and unknown_file,
//	   capability chat3. Offline expiry reports: directory op reports
//	   answered by DirResponse.Undeliverable (Undeliverable: message id,
//	   sender, recipient, reason expired or overflow). Earlier bytes are
//	   unchanged.
//	5: call signalling in chat 2.0.0 and 3.0.0: ChatFrame types
//	   call_invite, call_ringing, call_accept, call_reject, call_cancel,
//	   call_answered_elsewhere, call_hangup with payload CallSignal (call
//	   id, from, to, media audio or video, ring_ms, reason cancelled,
//	   rejected or timeout); refusal codes unknown_call,
//	   answered_elsewhere, call_ended. Chat 1.0.0 carries no calls.
//	   Earlier bytes are unchanged.
//	6: shadow mirroring: RouteRecord.Kind (RouteHome, empty, or
//	   RouteMirror), signed only when set so home routes keep their bytes;
//	   DirResponse.Mirror answers a lookup with the user's live mirror
//	   route; mirror 1.0.0 (a ChatHello and one ChatMessage, answered by a
//	   ChatAck: the sender's shadow copy) and history 1.0.0 (a ChatHello
//	   from a CapBridge peer and one HistoryRequest, answered by one
//	   HistoryPage; bound MaxHistoryPage). Earlier bytes are unchanged.
//	7: registration notices: DirResponse.Notice answers an admitted
//	   register that the version policy tells something (warning stage);
//	   the same text is held once per device and stage as a ChatMessage
//	   from NoticesUser. Earlier bytes are unchanged.
const ProtocolVersion = 7

// Protocol IDs, one per protocol and version. A new version of a protocol gets
// a new ID; old IDs keep working until the version is retired.
const (
	// DirectoryProtocolID is the supernode directory: one DirRequest frame and
	// one DirResponse frame per stream.
	DirectoryProtocolID = "/ferry/dir/1.0.0"
	// ChatV1ProtocolID is chat v1: the opener writes a ChatHello, then any
	// number of ChatMessage frames, each answered by a ChatAck.
	ChatV1ProtocolID = "/ferry/chat/1.0.0"
	// ChatV2ProtocolID is chat v2: the opener writes a ChatHello, then any
	// number of ChatFrame frames, each answered by a FrameAck ChatFrame.
	// Openers list it before ChatV1ProtocolID so that multistream-select
	// settles on the highest version both ends speak.
	ChatV2ProtocolID = "/ferry/chat/2.0.0"
	// ChatV3ProtocolID is chat v3: chat v2's frames plus file offers
	// (frames_v3.go). A file_accept frame is answered by its ack and then
	// by the file's chunks. Openers list it first.
	ChatV3ProtocolID = "/ferry/chat/3.0.0"
)

// MaxFrameSize is the largest frame body, in bytes, that WriteFrame writes and
// ReadFrame accepts.
const MaxFrameSize = 64 << 10

// Capabilities a certificate may grant.
const (
	// CapBridge lets the peer speak for users whose authority-signed route
	// record names it: its chat messages may carry a From other than the
	// certificate's User.
	CapBridge = "bridge"
	// CapChat1, CapChat2 and CapChat3 record which chat versions the authority
	// certified the client build for. The version actually spoken is what
	// multistream-select negotiates; these let a directory reader (and the
	// version-retirement policy) see a device's generation without dialing it.
	CapChat1 = "chat1"
	CapChat2 = "chat2"
	CapChat3 = "chat3"
	// CapSupernode marks a supernode's own certificate: only such a peer may
	// push OpReplicate to another supernode.
	CapSupernode = "supernode"
)
