// Package legacywire defines the bytes that travel on the legacy overlay:
// libp2p protocol IDs, the length-prefixed JSON framing, device certificates,
// authority-signed route records, and the frames of the directory and chat
// protocols.
//
// It owns the wire format and the signing bytes, nothing else. It imports no
// transport: no libp2p (peer IDs are plain strings here), no net/http, no
// prometheus, so that the bridge, the migration logic and tests can speak
// these types without pulling in a network stack. The adapter in package
// legacy converts between these types and libp2p at its edges.
//
// # Framing
//
// Every protocol on the overlay exchanges frames: an unsigned varint length
// followed by that many bytes of JSON (see [WriteFrame] and [ReadFrame]).
// Frames larger than [MaxFrameSize] are refused before their body is read.
//
// # Versioning
//
// Each protocol carries its version in its libp2p protocol ID
// ([ChatV1ProtocolID], [ChatV2ProtocolID], [ChatV3ProtocolID],
// [DirectoryProtocolID]). Chat v1 frames are positional (a [ChatHello],
// then [ChatMessage] and [ChatAck] pairs); chat v2 frames ([ChatFrame])
// carry an explicit type; chat v3 adds the file frame types
// ([FrameFileOffer], [FrameFileAccept], [FrameFileDecline],
// [FrameFileChunk]; bounds [MaxFileSize], [MaxFileChunk]) to the same
// ChatFrame, and a v2 stream refuses them ([V3Only]). Call signalling
// ([FrameCallInvite] ... [FrameCallHangUp], payload [CallSignal]) is part
// of chat v2 and v3 alike. Shadow mirroring has its own protocols
// ([MirrorProtocolID], [HistoryProtocolID]; shadow.go) and route kind
// ([RouteMirror]). Older versions stay
// supported until they are retired. Fields are only ever added, never renamed or reused,
// and decoders ignore fields they do not know. [ProtocolVersion] sums up the
// overall wire revision.
//
// Times are UTC. The signing functions truncate them to milliseconds so that
// the JSON carries RFC 3339 with at most millisecond precision.
package legacywire
