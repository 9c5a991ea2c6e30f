package legacywire

// ProtocolVersion is the revision of the legacy wire format as a whole.
//
// History:
//
//	1: walking skeleton: uvarint+JSON framing, device certificates and route
//	   records (ed25519, "ferry-cert-v1" / "ferry-route-v1" signing bytes),
//	   directory protocol 1.0.0 (register, lookup, route), chat 1.0.0 (text and
//	   a delivery ack).
const ProtocolVersion = 1

// Protocol IDs, one per protocol and version. A new version of a protocol gets
// a new ID; old IDs keep working until the version is retired.
const (
	// DirectoryProtocolID is the supernode directory: one DirRequest frame and
	// one DirResponse frame per stream.
	DirectoryProtocolID = "/ferry/dir/1.0.0"
	// ChatV1ProtocolID is chat v1: the opener writes a ChatHello, then any
	// number of ChatMessage frames, each answered by a ChatAck.
	ChatV1ProtocolID = "/ferry/chat/1.0.0"
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
)
