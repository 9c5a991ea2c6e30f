package legacywire

import "errors"

var (
	// ErrFrameTooLarge is returned by WriteFrame and ReadFrame when a frame
	// body exceeds MaxFrameSize. ReadFrame returns it before reading the body.
	ErrFrameTooLarge = errors.New("legacywire: frame too large")

	// ErrMalformedFrame is returned by ReadFrame when the length prefix is not
	// a valid uvarint, the stream ends inside a frame, or the body is not valid
	// JSON for the target type.
	ErrMalformedFrame = errors.New("legacywire: malformed frame")

	// ErrBadSignature is returned by Certificate.Verify and RouteRecord.Verify
	// when the signature does not verify against the authority key (including
	// a tampered field, a missing signature, or a malformed key).
	ErrBadSignature = errors.New("legacywire: bad signature")

	// ErrExpired is returned by Certificate.Verify and RouteRecord.Verify when
	// the record's NotAfter has passed.
	ErrExpired = errors.New("legacywire: expired")

	// ErrPeerMismatch is returned by Certificate.Verify when the certificate
	// names a peer other than the one presenting it.
	ErrPeerMismatch = errors.New("legacywire: certificate names another peer")
)

// Refusal codes carried in DirResponse.Code and ChatAck.Code. They are stable
// strings: legacy clients branch on them.
const (
	// CodeNoCertificate: the request needed a certificate and carried none.
	CodeNoCertificate = "no_certificate"
	// CodeBadCertificate: the certificate's signature does not verify.
	CodeBadCertificate = "bad_certificate"
	// CodeExpired: the certificate or record has expired.
	CodeExpired = "expired"
	// CodePeerMismatch: the certificate names a peer other than the sender.
	CodePeerMismatch = "peer_mismatch"
	// CodeNotYourUser: a chat message's From is not the certificate's user
	// and the certificate lacks CapBridge.
	CodeNotYourUser = "not_your_user"
	// CodeWrongRecipient: the message is addressed to a user this device does
	// not serve.
	CodeWrongRecipient = "wrong_recipient"
	// CodeBadMessage: a chat message lacks an ID or a recipient.
	CodeBadMessage = "bad_message"
	// CodeTooLarge: a frame exceeded MaxFrameSize.
	CodeTooLarge = "too_large"
	// CodeBadFrame: a frame was not valid framing or JSON.
	CodeBadFrame = "bad_frame"
	// CodeUnknownOp: a directory request named an unknown operation.
	CodeUnknownOp = "unknown_op"
	// CodeBadRequest: a directory request lacked a required field or carried
	// unusable addresses.
	CodeBadRequest = "bad_request"
	// CodeBadRoute: a route record's signature does not verify.
	CodeBadRoute = "bad_route"
	// CodeStaleRoute: a route record's Seq is not higher than the stored one.
	CodeStaleRoute = "stale_route"
	// CodeUnavailable: the receiver cannot take the message right now.
	CodeUnavailable = "unavailable"
	// CodeQueueFull: the recipient's offline queue at the supernode is full.
	CodeQueueFull = "queue_full"
	// CodeUnknownUser: the supernode has never seen a device of the
	// recipient register, so it holds nothing for them.
	CodeUnknownUser = "unknown_user"
	// CodeRevoked: the certificate was revoked by the authority.
	CodeRevoked = "revoked"
	// CodeBadRevocation: a revocation's signature does not verify.
	CodeBadRevocation = "bad_revocation"
	// CodeUnsupported: a chat v2 frame of a type the receiver does not
	// serve (for example presence at a bridge).
	CodeUnsupported = "unsupported"
	// CodeNotYourFrame: a v2 frame speaks for a user (receipt reader,
	// typist, presence owner) other than the certificate's user.
	CodeNotYourFrame = "not_your_frame"
	// CodeRateLimited: the sender exceeded its per-peer rate on this
	// protocol; it may retry later. A peer that keeps going is cut off
	// (its connections closed and refused for a while).
	CodeRateLimited = "rate_limited"
	// CodeNotSupernode: an OpReplicate came from a peer whose certificate
	// lacks CapSupernode.
	CodeNotSupernode = "not_supernode"
	// CodeUpgradeRequired: the client version policy refuses this device
	// (hard block, or soft block of a device not yet linked). Error carries
	// the notice for the user (minimum version, where to update, by when).
	// A client must show it and stop registering: retrying changes nothing
	// until the user updates.
	CodeUpgradeRequired = "upgrade_required"
	// CodeFileTooLarge: a file offer's size exceeds what the receiving
	// device accepts (at most MaxFileSize). Error says both sizes.
	CodeFileTooLarge = "file_too_large"
	// CodeUnknownFile: a file_accept or file_decline names a file the
	// offering device does not offer (never offered, forgotten, or offered
	// to another user), or asks for an offset beyond its end.
	CodeUnknownFile = "unknown_file"
	// CodeUnknownCall: a call frame names a call the receiving device does
	// not hold, or comes from a device that is not part of it (not the
	// caller's device, not an invited device of the callee).
	CodeUnknownCall = "unknown_call"
	// CodeAnsweredElsewhere: a call_accept lost: another device of the
	// callee accepted the call first.
	CodeAnsweredElsewhere = "answered_elsewhere"
	// CodeCallEnded: a call frame arrived after the call ended (cancelled,
	// rejected, timed out or hung up).
	CodeCallEnded = "call_ended"
)

// NoticesUser is the official system contact: chat messages From this user
// are notices from the operator (for example "your version will stop
// working on ..."), sent by a bridge-capable peer of the gateway.
const NoticesUser = "ferry-notices"

// CertCode maps an error from Certificate.Verify or RouteRecord.Verify to the
// refusal code sent on the wire. Unknown errors map to CodeBadCertificate.
func CertCode(err error) string {
	switch {
	case errors.Is(err, ErrExpired):
		return CodeExpired
	case errors.Is(err, ErrPeerMismatch):
		return CodePeerMismatch
	default:
		return CodeBadCertificate
	}
}
