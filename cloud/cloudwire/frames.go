package cloudwire

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol the client must offer and the
// server selects.
const Subprotocol = "ferry.v1"

// ProtocolVersion is the version of the frames defined here, sent in Welcome.
// Clients gate features on it, never on their self-declared ClientVersion.
//
// History:
//
//	1: walking skeleton. hello/welcome, 1:1 send/ack with client message ids,
//	   delivery and read receipts, per-user inbox events with cursors,
//	   synced, error frames.
const ProtocolVersion = 1

// Size limits. A frame is one WebSocket text message.
const (
	// MaxFrameSize bounds one frame in bytes; larger frames close the
	// connection with CloseTooLarge.
	MaxFrameSize = 64 << 10
	// MaxTextSize bounds Send.Text in bytes.
	MaxTextSize = 16 << 10
	// MaxTokenSize bounds a session token in bytes.
	MaxTokenSize = 4 << 10
	// MaxIDSize bounds user ids, device ids and conversation ids in bytes.
	MaxIDSize = 128
	// MaxMsgIDSize bounds message ids in bytes.
	MaxMsgIDSize = 64
	// MaxRefSize bounds request refs in bytes.
	MaxRefSize = 64
	// MaxCapabilities bounds the number of capabilities in a Hello.
	MaxCapabilities = 32
	// maxShortField bounds platform, client version and each capability.
	maxShortField = 64
)

// Frame types: the value of a frame's "type" member.
const (
	// Client to server.
	TypeHello   = "hello"
	TypeSend    = "send"
	TypeReceipt = "receipt"
	// Server to client.
	TypeWelcome = "welcome"
	TypeAck     = "ack"
	TypeError   = "error"
	TypeEvent   = "event"
	TypeSynced  = "synced"
)

// Receipt statuses.
const (
	StatusDelivered = "delivered"
	StatusRead      = "read"
)

// Event kinds.
const (
	KindMsg     = "msg"
	KindReceipt = "receipt"
)

// Error codes carried by Error frames.
const (
	// CodeBadRequest: the frame was malformed or a field was invalid.
	CodeBadRequest = "bad_request"
	// CodeUnknownType: the frame type is unknown or not one a client sends.
	CodeUnknownType = "unknown_type"
	// CodeTooLarge: a field was over its size limit (an oversized frame
	// closes the connection instead).
	CodeTooLarge = "too_large"
	// CodeForbidden: the session may not do this (act for that user,
	// receipt that message).
	CodeForbidden = "forbidden"
	// CodeNotFound: the message a receipt refers to is unknown.
	CodeNotFound = "not_found"
	// CodeConflict: the message id is already used by another sender.
	CodeConflict = "conflict"
	// CodeInternal: the service failed; the request may be retried as is
	// (sends are idempotent by message id).
	CodeInternal = "internal"
	// CodeUnavailable: the service is shutting down; retry on another
	// connection.
	CodeUnavailable = "unavailable"
)

// WebSocket close codes used by the service. 4xxx codes mirror HTTP statuses.
const (
	CloseNormal = 1000
	// CloseGoingAway: the node is shutting down; the reason carries a
	// CloseReason with RetryMS, the delay before reconnecting.
	CloseGoingAway = 1001
	// CloseTooLarge: a frame was over MaxFrameSize.
	CloseTooLarge = 1009
	// CloseInternal: the service failed while setting up the session.
	CloseInternal = 1011
	// CloseProtocol: the first frame was not a valid hello.
	CloseProtocol = 4400
	// CloseUnauthorized: the token in hello was missing, bad or expired.
	CloseUnauthorized = 4401
	// CloseForbidden: the user or role may not open a session here; the
	// reason says why.
	CloseForbidden = 4403
	// CloseHelloTimeout: no hello arrived in time.
	CloseHelloTimeout = 4408
	// CloseUpgradeRequired is reserved for retiring client versions: the
	// reason will carry the minimum version and an update URL, and the
	// client must stop reconnecting.
	CloseUpgradeRequired = 4426
	// CloseSlowConsumer: the session fell behind and its send queue
	// overflowed; reconnect and resume from the last cursor.
	CloseSlowConsumer = 4429
)

// Token roles.
const (
	RoleUser   = "user"
	RoleBridge = "bridge"
	RoleAdmin  = "admin"
)

// ValidRole reports whether r is a known role.
func ValidRole(r string) bool {
	return r == RoleUser || r == RoleBridge || r == RoleAdmin
}

// Frame is implemented by every frame type; FrameType is its "type" member.
type Frame interface {
	FrameType() string
}

// Hello is the first frame a client sends.
type Hello struct {
	// Token is the session token for clients that cannot set an
	// Authorization header (browsers). Ignored when the header was set.
	Token         string   `json:"token,omitempty"`
	Device        string   `json:"device"`
	Platform      string   `json:"platform,omitempty"`
	ClientVersion string   `json:"client_version,omitempty"`
	Capabilities  []string `json:"capabilities,omitempty"`
	// Cursor is the cursor of the last event the device has; the service
	// replays the inbox after it. Zero replays everything.
	Cursor uint64 `json:"cursor"`
}

// Welcome answers a valid Hello.
type Welcome struct {
	ProtocolVersion int    `json:"protocol_version"`
	User            string `json:"user"`
	Role            string `json:"role"`
	Device          string `json:"device"`
	Session         string `json:"session"`
	// Head is the cursor the initial sync runs up to: the last event of
	// the session's inbox when it was opened.
	Head uint64 `json:"head"`
}

// Send asks the service to write a message. It is answered by an Ack or an
// Error carrying the same Ref.
type Send struct {
	Ref string `json:"ref,omitempty"`
	// As is the user a bridge session acts for; other sessions leave it
	// empty (or set it to their own user).
	As string `json:"as,omitempty"`
	// To is the recipient of a one-to-one message.
	To string `json:"to"`
	// Conv is optional for one-to-one messages; when set it must equal
	// DirectConversationID(sender, To).
	Conv string `json:"conv,omitempty"`
	// MsgID is the client message id, assigned once at the origin (a
	// UUIDv7 or ULID); it is the idempotency key.
	MsgID string `json:"msg_id"`
	Text  string `json:"text"`
}

// Ack answers a Send (or a Receipt) that was stored.
type Ack struct {
	Ref   string    `json:"ref,omitempty"`
	MsgID string    `json:"msg_id"`
	Conv  string    `json:"conv"`
	Seq   uint64    `json:"seq"`
	At    time.Time `json:"at"`
	// Duplicate is set when the MsgID had been stored before; the other
	// fields are those of the original.
	Duplicate bool `json:"duplicate,omitempty"`
}

// Receipt reports that a message was delivered to or read by the session's
// user (or the user a bridge session acts for).
type Receipt struct {
	Ref    string `json:"ref,omitempty"`
	As     string `json:"as,omitempty"`
	Conv   string `json:"conv"`
	MsgID  string `json:"msg_id"`
	Status string `json:"status"`
}

// Event is one entry of a user's inbox, pushed during sync and live.
type Event struct {
	// Cursor is the event's position in the inbox; a device resumes after
	// it. Cursors increase but are not dense for one user.
	Cursor uint64 `json:"cursor"`
	// User is the inbox owner this event was delivered to.
	User string `json:"user"`
	Kind string `json:"kind"`
	Conv string `json:"conv"`
	// Seq is the conversation sequence of the message (for receipts: of
	// the message receipted). It is dense per conversation.
	Seq        uint64 `json:"seq"`
	MsgID      string `json:"msg_id"`
	From       string `json:"from"`
	FromDevice string `json:"from_device,omitempty"`
	To         string `json:"to"`
	Text       string `json:"text,omitempty"`
	// Status is the receipt status (receipts only).
	Status string `json:"status,omitempty"`
	// By is who delivered or read the message (receipts only).
	By string    `json:"by,omitempty"`
	At time.Time `json:"at"`
}

// Error answers a request that failed (Ref set) or reports a frame the
// service could not attribute to a request (Ref empty).
type Error struct {
	Ref     string `json:"ref,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Synced marks the end of the initial sync: every inbox event up to Cursor
// has been sent, and what follows is live.
type Synced struct {
	Cursor uint64 `json:"cursor"`
}

// FrameType implements Frame.
func (Hello) FrameType() string { return TypeHello }

// FrameType implements Frame.
func (Welcome) FrameType() string { return TypeWelcome }

// FrameType implements Frame.
func (Send) FrameType() string { return TypeSend }

// FrameType implements Frame.
func (Ack) FrameType() string { return TypeAck }

// FrameType implements Frame.
func (Receipt) FrameType() string { return TypeReceipt }

// FrameType implements Frame.
func (Event) FrameType() string { return TypeEvent }

// FrameType implements Frame.
func (Error) FrameType() string { return TypeError }

// FrameType implements Frame.
func (Synced) FrameType() string { return TypeSynced }

// Validate checks a Hello's fields against their limits.
func (h Hello) Validate() error {
	if len(h.Token) > MaxTokenSize {
		return invalid("token", "too long")
	}
	if !ValidID(h.Device) {
		return invalid("device", "must be 1-128 printable bytes")
	}
	if !validShort(h.Platform) {
		return invalid("platform", "too long or not printable")
	}
	if !validShort(h.ClientVersion) {
		return invalid("client_version", "too long or not printable")
	}
	if len(h.Capabilities) > MaxCapabilities {
		return invalid("capabilities", "too many")
	}
	for _, c := range h.Capabilities {
		if c == "" || !validShort(c) {
			return invalid("capabilities", "entry empty, too long or not printable")
		}
	}
	return nil
}

// Validate checks a Send's fields.
func (s Send) Validate() error {
	if err := validRef(s.Ref); err != nil {
		return err
	}
	if s.As != "" && !ValidID(s.As) {
		return invalid("as", "is not a valid user id")
	}
	if !ValidID(s.To) {
		return invalid("to", "is not a valid user id")
	}
	if s.Conv != "" && !ValidID(s.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	if !ValidMsgID(s.MsgID) {
		return invalid("msg_id", "must be 1-64 of [A-Za-z0-9_-]")
	}
	if s.Text == "" {
		return invalid("text", "is empty")
	}
	if len(s.Text) > MaxTextSize {
		return ErrTextTooLong
	}
	return nil
}

// Validate checks a Receipt's fields.
func (r Receipt) Validate() error {
	if err := validRef(r.Ref); err != nil {
		return err
	}
	if r.As != "" && !ValidID(r.As) {
		return invalid("as", "is not a valid user id")
	}
	if !ValidID(r.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	if !ValidMsgID(r.MsgID) {
		return invalid("msg_id", "must be 1-64 of [A-Za-z0-9_-]")
	}
	if r.Status != StatusDelivered && r.Status != StatusRead {
		return invalid("status", "must be delivered or read")
	}
	return nil
}

func validRef(ref string) error {
	if len(ref) > MaxRefSize {
		return invalid("ref", "too long")
	}
	return nil
}

// ValidID reports whether s can be a user, device or conversation id: 1 to
// MaxIDSize bytes of valid UTF-8 without control characters or spaces at the
// ends.
func ValidID(s string) bool {
	if s == "" || len(s) > MaxIDSize || !printable(s) {
		return false
	}
	return strings.TrimSpace(s) == s
}

// ValidMsgID reports whether s can be a message id: 1 to MaxMsgIDSize bytes
// of [A-Za-z0-9_-], which covers UUIDs and ULIDs and is safe in storage keys.
func ValidMsgID(s string) bool {
	if s == "" || len(s) > MaxMsgIDSize {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

func validShort(s string) bool {
	return len(s) <= maxShortField && printable(s)
}

// printable reports valid UTF-8 without C0/C1 control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || (r >= 0x7f && r < 0xa0) {
			return false
		}
	}
	return true
}
