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
//	2: cumulative receipts: receipt.up_to ("delivered/read up to sequence
//	   N" per conversation, user and device) and the receipt_up_to event
//	   kind; history paging (history request, page answer) to page a
//	   conversation backwards, fill gaps forwards, and let a device added
//	   later fetch history. Event.msg_id, from and to are omitted when
//	   empty (receipt_up_to events have none).
//	3: groups: the group request (create, add, remove members), group
//	   conversations (send with conv and no to), the group event and
//	   message kind carrying op, members and name, in the conversation's
//	   history like any message.
//	4: presence per device (presence frame: active, idle, offline) and
//	   typing (typing frame), fanned out live to the people who share a
//	   conversation; rate_limited error code.
//	5: calls: the call request (invite, answer, reject, cancel, hangup)
//	   and the call_state frame; the callee's most recently active device
//	   rings first, the others after a delay; answered_elsewhere.
//	6: presence_snapshot (sent once per session: the current presence of
//	   the user's other devices and of the people who share a
//	   conversation with the user); event kind placeholder (an inbox
//	   entry the service cannot deliver as it is, so that cursors stay
//	   dense in meaning); handshakes shed with HTTP 503 and Retry-After
//	   when too many are in flight.
//	7: notices and system notes: Welcome.notice (the client-version
//	   policy's text for an admitted client that must be told, in the
//	   warning stage for example); event and message kind system, written
//	   by the service into the history with a sequence of its own: a
//	   notice from the system contact ferry-notices (SystemContact) in
//	   that contact's conversation, once per device and stage, and a note
//	   in every conversation of a user who moved between the classic app
//	   and the new one (From is that user).
//	8: event kind undeliverable: the bridge gave up on a message for a
//	   recipient on the classic app (no device of theirs could be reached
//	   before the bridge's queue expired it); the sender's inbox gets one
//	   event naming the message (Conv, Seq, MsgID, To) with a Reason, in
//	   place of the notice message earlier versions got.
//	9: files: Send and Event (and Message) carry an optional file (File: id,
//	   name, size, mime, sha256) naming an attachment uploaded over HTTP
//	   (PUT /v1/files) and downloaded by conversation members (GET
//	   /v1/files/ID); Text is its caption. Earlier clients show the text.
//	10: bridge link pools and puppet sessions: Hello.no_feed (a bridge
//	   session that carries requests only: no inbox replay, no live
//	   events; Welcome.head is then the hello's cursor), and the act
//	   request (open or close a puppet for the user named in as, answered
//	   by acting or a forbidden error; act.go).
//	11: Send.device: a bridge session acting for a cloud-home user names
//	   the user's legacy device the message came from; the service checks
//	   it (Config.ActForDevice) and records the message as sent by the
//	   user from that device, so it reaches the user's other devices as
//	   their own sent message.
const ProtocolVersion = 11

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
	// MaxHistoryLimit bounds History.Limit; DefaultHistoryLimit is used
	// when it is zero. A page may hold fewer messages so that it fits in
	// MaxFrameSize (Page.More is then set).
	MaxHistoryLimit     = 100
	DefaultHistoryLimit = 50
	// MaxGroupMembers bounds a group's members (and one change's list).
	MaxGroupMembers = 256
	// MaxGroupName bounds a group's name in bytes.
	MaxGroupName = 128
	// MaxSnapshotPresences bounds the entries of a PresenceSnapshot, so
	// that it fits in MaxFrameSize whatever the ids.
	MaxSnapshotPresences = 128
	// maxShortField bounds platform, client version and each capability.
	maxShortField = 64
)

// Frame types: the value of a frame's "type" member.
const (
	// Client to server.
	TypeHello   = "hello"
	TypeSend    = "send"
	TypeReceipt = "receipt"
	TypeHistory = "history"
	TypeGroup   = "group"
	// Both directions: a client reports its own state, the service
	// forwards others' with User and Device set.
	TypePresence = "presence"
	TypeTyping   = "typing"
	// Server to client, once per session: the presence of everyone the
	// session's user shares a conversation with.
	TypePresenceSnapshot = "presence_snapshot"
	// Client to server: a call request; server to client: a call's state.
	TypeCall      = "call"
	TypeCallState = "call_state"
	// Server to client.
	TypeWelcome = "welcome"
	TypeAck     = "ack"
	TypeError   = "error"
	TypeEvent   = "event"
	TypeSynced  = "synced"
	TypePage    = "page"
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
	// KindReceiptUpTo: a cumulative receipt, "By (on FromDevice) has
	// delivered or read every message of Conv up to sequence UpTo".
	KindReceiptUpTo = "receipt_up_to"
	// KindGroup: a group was created or its members changed; Op says how.
	KindGroup = "group"
	// KindPlaceholder: an inbox entry the service could not deliver as it
	// is (a corrupt or oversized record). It carries the cursor, and Conv,
	// Seq and MsgID when they could be read, so that the device's cursor
	// moves past it; fetch the message with History if it matters.
	KindPlaceholder = "placeholder"
	// KindSystem: a note the service wrote, not a user: a notice from
	// SystemContact (in the conversation of SystemContact and the user),
	// or a note that From moved between the classic and the new app (in
	// each of From's conversations). Text is for display; clients do not
	// answer or receipt it.
	KindSystem = "system"
	// KindUndeliverable (v8): the message MsgID (Conv, Seq) that From
	// sent to To was given up on, for Reason (Undeliverable* constants),
	// at At. Only the sender's inbox gets it, once per message and
	// recipient; clients mark the message as not delivered.
	KindUndeliverable = "undeliverable"
)

// Reasons of a KindUndeliverable event.
const (
	// UndeliverableExpired: no device of the recipient could be reached
	// before the message expired in the bridge's queue.
	UndeliverableExpired = "expired"
)

// SystemContact is the user id notices come from. It is reserved: no
// person has it.
const SystemContact = "ferry-notices"

// Presence states of a device. Clients send active or idle; the service
// reports offline when a device's last session ends.
const (
	PresenceActive  = "active"
	PresenceIdle    = "idle"
	PresenceOffline = "offline"
)

// Call operations (Call.Op).
const (
	CallInvite = "invite"
	CallAnswer = "answer"
	CallReject = "reject"
	CallCancel = "cancel"
	CallHangup = "hangup"
)

// Call states (CallState.State) and the reasons that come with them.
const (
	CallRinging = "ringing"
	CallActive  = "active"
	CallEnded   = "ended"

	ReasonAnswered          = "answered"
	ReasonAnsweredElsewhere = "answered_elsewhere"
	ReasonRejected          = "rejected"
	ReasonCancelled         = "cancelled"
	ReasonHangup            = "hangup"
	ReasonTimeout           = "timeout"
	ReasonUnavailable       = "unavailable"
)

// Group operations (Group.Op, and Op of group events and messages).
const (
	GroupCreate = "create"
	GroupAdd    = "add"
	GroupRemove = "remove"
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
	// CodeNotFound: the message or conversation a request refers to is
	// unknown.
	CodeNotFound = "not_found"
	// CodeConflict: the message id is already used by another sender.
	CodeConflict = "conflict"
	// CodeRateLimited: the session sent presence or typing frames faster
	// than allowed; the frame was dropped.
	CodeRateLimited = "rate_limited"
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
	// CloseUpgradeRequired: the client version policy refuses this client;
	// the reason is an UpgradeRequired (minimum version, update URL,
	// deadline, notice) and the client must stop reconnecting.
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
	// NoFeed (v10, bridge sessions only) asks for a request-only session:
	// the service neither replays nor streams inbox events to it. A
	// bridge keeps one feed session and may add request-only ones.
	NoFeed bool `json:"no_feed,omitempty"`
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
	// Notice, when set, is what the client-version policy tells this
	// admitted client (show it; the client keeps working). The same text
	// arrives once per device and stage as a KindSystem event from
	// SystemContact.
	Notice string `json:"notice,omitempty"`
}

// Send asks the service to write a message. It is answered by an Ack or an
// Error carrying the same Ref.
type Send struct {
	Ref string `json:"ref,omitempty"`
	// As is the user a bridge session acts for; other sessions leave it
	// empty (or set it to their own user).
	As string `json:"as,omitempty"`
	// To is the recipient of a one-to-one message; empty for a group.
	To string `json:"to,omitempty"`
	// Conv is optional for one-to-one messages; when set it must equal
	// DirectConversationID(sender, To). For a group message it is the
	// group's id, and To is empty.
	Conv string `json:"conv,omitempty"`
	// MsgID is the client message id, assigned once at the origin (a
	// UUIDv7 or ULID); it is the idempotency key.
	MsgID string `json:"msg_id"`
	Text  string `json:"text"`
	// File (v9) attaches a file uploaded to this conversation by the
	// sender; the service checks it and stores its own copy of the fields.
	File *File `json:"file,omitempty"`
	// Device (v11), on a bridge session only, names the device of As the
	// message came from: one of a cloud-home user's legacy devices (its
	// overlay peer id), which the bridge carries as one more device of
	// the user. Empty otherwise.
	Device string `json:"device,omitempty"`
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
//
// It takes one of two forms. With MsgID, it receipts that one message (the
// form the bridge uses for legacy devices, which acknowledge messages one
// by one); only the message's recipient may send it. With UpTo (and no
// MsgID), it is cumulative: the user has delivered or read every message of
// Conv up to sequence UpTo on this device; any member of the conversation
// may send it, and it only ever moves forward.
type Receipt struct {
	Ref    string `json:"ref,omitempty"`
	As     string `json:"as,omitempty"`
	Conv   string `json:"conv"`
	MsgID  string `json:"msg_id,omitempty"`
	UpTo   uint64 `json:"up_to,omitempty"`
	Status string `json:"status"`
	// Device (v11), on a bridge session only, names the device of As the
	// receipt came from: one of a cloud-home user's legacy devices, as in
	// Send.Device. Empty otherwise.
	Device string `json:"device,omitempty"`
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
	MsgID      string `json:"msg_id,omitempty"`
	From       string `json:"from,omitempty"`
	FromDevice string `json:"from_device,omitempty"`
	To         string `json:"to,omitempty"`
	Text       string `json:"text,omitempty"`
	// Status is the receipt status (receipts only).
	Status string `json:"status,omitempty"`
	// By is who delivered or read the message (receipts only).
	By string `json:"by,omitempty"`
	// UpTo is the sequence a cumulative receipt covers (KindReceiptUpTo
	// only; Seq carries the same value). FromDevice is the device that
	// gave it.
	UpTo uint64 `json:"up_to,omitempty"`
	// Op, Members and Name describe a group change (KindGroup only):
	// From created the group with Members, or added or removed Members.
	Op      string   `json:"op,omitempty"`
	Members []string `json:"members,omitempty"`
	Name    string   `json:"name,omitempty"`
	// Reason says why a message is undeliverable (KindUndeliverable
	// only).
	Reason string `json:"reason,omitempty"`
	// File is the message's attachment (v9, KindMsg only).
	File *File     `json:"file,omitempty"`
	At   time.Time `json:"at"`
}

// Group creates a group conversation or changes its members. It is
// answered by an Ack whose Conv is the group and Seq the change's place in
// the conversation: the change is part of the history, and every member
// (including those removed by it) gets it as a KindGroup event. MsgID is
// the idempotency key, as for Send.
type Group struct {
	Ref string `json:"ref,omitempty"`
	As  string `json:"as,omitempty"`
	Op  string `json:"op"`
	// Conv is the group (add, remove); empty for create.
	Conv  string `json:"conv,omitempty"`
	MsgID string `json:"msg_id"`
	// Name is the group's name (create only).
	Name string `json:"name,omitempty"`
	// Members are the users to start with (besides the creator), to add,
	// or to remove.
	Members []string `json:"members"`
}

// Presence is a device's presence. A client sends it with State only (its
// own device); the service forwards it to the people who share a
// conversation with User, and to User's other devices (not back to the
// sending one), with User, Device and At set. It is live only: not stored, not replayed.
type Presence struct {
	User   string    `json:"user,omitempty"`
	Device string    `json:"device,omitempty"`
	State  string    `json:"state"`
	At     time.Time `json:"at,omitzero"`
}

// PresenceSnapshot is sent once per user session, after Welcome, unless
// it would be empty: the
// current presence (active or idle) of the user's other online devices and
// of the online devices of the people who share a conversation with the
// user, at most MaxSnapshotPresences of them. A device not listed is
// offline (or beyond the limit). Each entry's At is when its state was
// set: a client keeps, per device, the presence with the latest At, since
// a live Presence may overtake the snapshot.
type PresenceSnapshot struct {
	Presences []Presence `json:"presences"`
}

// Typing says that a user is (or stopped) typing in a conversation. A
// client sends Conv and Typing; the service forwards it to the
// conversation's members with User and Device set. Live only.
type Typing struct {
	Conv   string `json:"conv"`
	User   string `json:"user,omitempty"`
	Device string `json:"device,omitempty"`
	Typing bool   `json:"typing"`
}

// Call asks the service to start a call (invite, with To) or to act on one
// (answer, reject, cancel, hangup, with CallID). It is answered by an Ack
// whose MsgID is the call id; what follows comes as CallState frames to
// every session of the caller and the callee.
type Call struct {
	Ref string `json:"ref,omitempty"`
	Op  string `json:"op"`
	// CallID is chosen by the caller at invite (a UUIDv7, like a message
	// id) and names the call in every later request and state.
	CallID string `json:"call_id"`
	// To is the callee (invite only).
	To string `json:"to,omitempty"`
	// Media is informative ("audio", "video"); invite only.
	Media string `json:"media,omitempty"`
}

// CallState is a call's state, sent to every session of the caller and
// the callee on each change, so that all their devices agree on it.
type CallState struct {
	CallID     string `json:"call_id"`
	From       string `json:"from"`
	FromDevice string `json:"from_device,omitempty"`
	To         string `json:"to"`
	Media      string `json:"media,omitempty"`
	State      string `json:"state"`
	// Ringing lists the callee's devices that ring now (state ringing):
	// first the most recently active one, then, after the ring delay, every
	// online one. A callee device rings if and only if it is listed.
	Ringing []string `json:"ringing,omitempty"`
	// Device is the callee device that answered (active, and ended after
	// active).
	Device string `json:"device,omitempty"`
	// Reason says why the state changed (Reason* constants).
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// History asks for a page of a conversation's log, answered by a Page (or
// an Error) with the same Ref. With neither Before nor After it returns the
// latest messages; with Before, the messages just before that sequence
// (paging backwards); with After, those just after it (filling a gap
// forwards). Only members of the conversation may ask.
type History struct {
	Ref    string `json:"ref,omitempty"`
	As     string `json:"as,omitempty"`
	Conv   string `json:"conv"`
	Before uint64 `json:"before,omitempty"`
	After  uint64 `json:"after,omitempty"`
	// Limit is the most messages wanted, 1 to MaxHistoryLimit; 0 means
	// DefaultHistoryLimit.
	Limit int `json:"limit,omitempty"`
}

// Page answers a History request.
type Page struct {
	Ref  string `json:"ref,omitempty"`
	Conv string `json:"conv"`
	// Head is the conversation's last sequence when the page was read: a
	// device that has seen fewer has a gap to fill.
	Head uint64 `json:"head"`
	// Msgs are in ascending sequence order and contiguous.
	Msgs []Message `json:"msgs"`
	// More is set when messages exist beyond the page in the direction
	// asked (older for Before or latest, newer for After).
	More bool `json:"more,omitempty"`
	// Receipts is every member's cumulative receipt state in the
	// conversation (members who never sent one are left out), so that a
	// device that pages instead of replaying the inbox knows what was
	// delivered and read.
	Receipts []ReceiptState `json:"receipts,omitempty"`
}

// Message is one entry of a conversation's log, as carried by a Page.
type Message struct {
	Seq        uint64 `json:"seq"`
	Kind       string `json:"kind"`
	MsgID      string `json:"msg_id"`
	From       string `json:"from"`
	FromDevice string `json:"from_device,omitempty"`
	To         string `json:"to,omitempty"`
	Text       string `json:"text,omitempty"`
	// Op, Members and Name describe a group change (KindGroup).
	Op      string   `json:"op,omitempty"`
	Members []string `json:"members,omitempty"`
	Name    string   `json:"name,omitempty"`
	// File is the message's attachment (v9).
	File *File     `json:"file,omitempty"`
	At   time.Time `json:"at"`
}

// ReceiptState is one user's cumulative receipts in a conversation: every
// message up to Delivered was delivered to, and up to Read read by, at
// least one of the user's devices. Read implies delivered.
type ReceiptState struct {
	User      string `json:"user"`
	Delivered uint64 `json:"delivered"`
	Read      uint64 `json:"read"`
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

// FrameType implements Frame.
func (History) FrameType() string { return TypeHistory }

// FrameType implements Frame.
func (Page) FrameType() string { return TypePage }

// FrameType implements Frame.
func (Group) FrameType() string { return TypeGroup }

// FrameType implements Frame.
func (Presence) FrameType() string { return TypePresence }

// FrameType implements Frame.
func (Call) FrameType() string { return TypeCall }

// FrameType implements Frame.
func (CallState) FrameType() string { return TypeCallState }

// FrameType implements Frame.
func (Typing) FrameType() string { return TypeTyping }

// FrameType implements Frame.
func (PresenceSnapshot) FrameType() string { return TypePresenceSnapshot }

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
	if s.Device != "" && (s.As == "" || !ValidID(s.Device)) {
		return invalid("device", "must be a valid device id, with as")
	}
	if s.Conv != "" && !ValidID(s.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	switch {
	case IsGroupID(s.Conv):
		if s.To != "" {
			return invalid("to", "must be empty for a group message")
		}
	case !ValidID(s.To):
		return invalid("to", "is not a valid user id")
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
	if s.File != nil {
		return s.File.Validate()
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
	if r.Device != "" && (r.As == "" || !ValidID(r.Device)) {
		return invalid("device", "must be a valid device id, with as")
	}
	if !ValidID(r.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	switch {
	case r.UpTo > 0 && r.MsgID != "":
		return invalid("msg_id", "and up_to are exclusive")
	case r.UpTo == 0 && !ValidMsgID(r.MsgID):
		return invalid("msg_id", "must be 1-64 of [A-Za-z0-9_-] (or give up_to)")
	}
	if r.Status != StatusDelivered && r.Status != StatusRead {
		return invalid("status", "must be delivered or read")
	}
	return nil
}

// Validate checks a Group's fields.
func (g Group) Validate() error {
	if err := validRef(g.Ref); err != nil {
		return err
	}
	if g.As != "" && !ValidID(g.As) {
		return invalid("as", "is not a valid user id")
	}
	if !ValidMsgID(g.MsgID) {
		return invalid("msg_id", "must be 1-64 of [A-Za-z0-9_-]")
	}
	switch g.Op {
	case GroupCreate:
		if g.Conv != "" {
			return invalid("conv", "must be empty for create")
		}
		if len(g.Name) > MaxGroupName || !printable(g.Name) {
			return invalid("name", "too long or not printable")
		}
	case GroupAdd, GroupRemove:
		if !IsGroupID(g.Conv) {
			return invalid("conv", "is not a group id")
		}
		if g.Name != "" {
			return invalid("name", "is for create only")
		}
		if len(g.Members) == 0 {
			return invalid("members", "is empty")
		}
	default:
		return invalid("op", "must be create, add or remove")
	}
	if len(g.Members) > MaxGroupMembers {
		return invalid("members", "too many")
	}
	for _, m := range g.Members {
		if !ValidID(m) {
			return invalid("members", "entry is not a valid user id")
		}
	}
	return nil
}

// Validate checks a Presence's fields.
func (p Presence) Validate() error {
	switch p.State {
	case PresenceActive, PresenceIdle, PresenceOffline:
	default:
		return invalid("state", "must be active, idle or offline")
	}
	if p.User != "" && !ValidID(p.User) {
		return invalid("user", "is not a valid user id")
	}
	if p.Device != "" && !ValidID(p.Device) {
		return invalid("device", "is not a valid device id")
	}
	return nil
}

// Validate checks a PresenceSnapshot: at most MaxSnapshotPresences
// entries, each naming a user and a device.
func (p PresenceSnapshot) Validate() error {
	if len(p.Presences) > MaxSnapshotPresences {
		return invalid("presences", "too many")
	}
	for _, e := range p.Presences {
		if e.User == "" || e.Device == "" {
			return invalid("presences", "entry without user or device")
		}
		if err := e.Validate(); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks a Call's fields.
func (c Call) Validate() error {
	if err := validRef(c.Ref); err != nil {
		return err
	}
	if !ValidMsgID(c.CallID) {
		return invalid("call_id", "must be 1-64 of [A-Za-z0-9_-]")
	}
	switch c.Op {
	case CallInvite:
		if !ValidID(c.To) {
			return invalid("to", "is not a valid user id")
		}
		if !validShort(c.Media) {
			return invalid("media", "too long or not printable")
		}
	case CallAnswer, CallReject, CallCancel, CallHangup:
		if c.To != "" || c.Media != "" {
			return invalid("to", "and media are for invite only")
		}
	default:
		return invalid("op", "must be invite, answer, reject, cancel or hangup")
	}
	return nil
}

// Validate checks a Typing's fields.
func (t Typing) Validate() error {
	if !ValidID(t.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	if t.User != "" && !ValidID(t.User) {
		return invalid("user", "is not a valid user id")
	}
	if t.Device != "" && !ValidID(t.Device) {
		return invalid("device", "is not a valid device id")
	}
	return nil
}

// Validate checks a History's fields.
func (h History) Validate() error {
	if err := validRef(h.Ref); err != nil {
		return err
	}
	if h.As != "" && !ValidID(h.As) {
		return invalid("as", "is not a valid user id")
	}
	if !ValidID(h.Conv) {
		return invalid("conv", "is not a valid conversation id")
	}
	if h.Before > 0 && h.After > 0 {
		return invalid("before", "and after are exclusive")
	}
	if h.Limit < 0 || h.Limit > MaxHistoryLimit {
		return invalid("limit", "must be 0-100")
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
