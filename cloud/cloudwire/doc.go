// Package cloudwire defines the bytes spoken on the cloud WebSocket protocol
// ferry.v1: the JSON frames exchanged between a cloud device (or the bridge)
// and the cloud service, the signed session tokens, the close codes and the
// derivation of one-to-one conversation ids.
//
// It is the contract between the cloud service, the Go client, the browser
// client and the bridge, so it is pure: it imports no transport (no net/http,
// no WebSocket, no NATS, no Prometheus, no libp2p) and nothing else from
// Ferry. Its golden files in testdata pin every frame's bytes; changing them
// is a protocol change and needs a ProtocolVersion bump and a history entry.
//
// Frames are JSON objects whose "type" member names the frame; Encode writes
// it first and Decode dispatches on it. Decode rejects frames that are larger
// than MaxFrameSize, are not valid UTF-8 (the WebSocket library does not check
// this), are not JSON objects, have an unknown type, or fail their frame's
// Validate. Unknown members are ignored so that newer peers may add fields.
// The frames of every send (send, ack, event) are encoded by hand, and
// decoded by hand when they come in Encode's form, for the CPU of the send
// path; their bytes and results are encoding/json's, which fuzz targets
// check against the reflection paths (append.go, plaindecode.go).
//
// Times are UTC and carry RFC 3339 with exactly three fractional digits.
package cloudwire
