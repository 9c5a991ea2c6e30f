package legacywire

import "time"

// Directory operations (DirRequest.Op).
const (
	// OpRegister stores the sender's device record. Cert must name the
	// sender.
	OpRegister = "register"
	// OpLookup returns User's live device records and live route. Cert must
	// name the sender.
	OpLookup = "lookup"
	// OpRoute stores an authority-signed route record. Anyone may submit one:
	// the signature is what counts.
	OpRoute = "route"
	// OpRevoke stores an authority-signed Revocation and drops the revoked
	// device's record. Cert must name the sender.
	OpRevoke = "revoke"
	// OpRevocations returns every revocation still needed (its certificate
	// not yet expired). Cert must name the sender.
	OpRevocations = "revocations"
	// OpStore holds Message at the supernode for a recipient with no live
	// device, until a device of the recipient registers with Fetch set (or
	// the message expires). Cert must name the sender, and Message.From must
	// be the certificate's user unless the certificate carries CapBridge.
	OpStore = "store"
	// OpReplicate is a supernode pushing one accepted change to its peer
	// supernodes: Record (a device registration), Route or Revocation. Cert
	// must name the sender and carry CapSupernode; the payload's own
	// authority signatures are checked again by the receiver, and Seq
	// (routes) or Expires (device records) decides between two versions.
	OpReplicate = "replicate"
	// OpReports returns, oldest first, and forgets the undeliverable
	// reports held for the certificate's user: one per message that user
	// sent which the offline store dropped unread (DirResponse.Undeliverable).
	// Cert must name the sender. Devices ask at every registration.
	OpReports = "reports"
)

// DeviceRecord is what the directory knows about one device of a user.
type DeviceRecord struct {
	Cert    Certificate `json:"cert"`
	Addrs   []string    `json:"addrs"`
	Expires time.Time   `json:"expires"`
}

// DirRequest is the one frame a client writes on a directory stream.
type DirRequest struct {
	Op    string       `json:"op"`
	Cert  *Certificate `json:"cert,omitempty"`
	Addrs []string     `json:"addrs,omitempty"`
	User  string       `json:"user,omitempty"`
	Route *RouteRecord `json:"route,omitempty"`
	// Revocation is OpRevoke's payload.
	Revocation *Revocation `json:"revocation,omitempty"`
	// Message is OpStore's payload.
	Message *ChatMessage `json:"message,omitempty"`
	// Fetch, on OpRegister, asks for the messages held for the user: they
	// come back in DirResponse.Messages, oldest first, and leave the store.
	Fetch bool `json:"fetch,omitempty"`
	// Record is OpReplicate's device registration.
	Record *DeviceRecord `json:"record,omitempty"`
}

// DirResponse is the one frame a supernode writes back. When OK is false,
// Code is one of the refusal codes and Error explains it to a human.
type DirResponse struct {
	OK      bool           `json:"ok"`
	Code    string         `json:"code,omitempty"`
	Error   string         `json:"error,omitempty"`
	Devices []DeviceRecord `json:"devices,omitempty"`
	Route   *RouteRecord   `json:"route,omitempty"`
	// Mirror is the user's live shadow route (Kind RouteMirror), answering
	// OpLookup next to Devices and Route.
	Mirror *RouteRecord `json:"mirror,omitempty"`
	// Revocations answers OpRevocations.
	Revocations []Revocation `json:"revocations,omitempty"`
	// Messages are the messages held offline for a registering device's
	// user (OpRegister with Fetch), oldest first.
	Messages []ChatMessage `json:"messages,omitempty"`
	// Undeliverable answers OpReports.
	Undeliverable []Undeliverable `json:"undeliverable,omitempty"`
	// Notice answers an admitted OpRegister that the client-version policy
	// tells something (the warning stage, for example): a human-readable
	// text to show; the device keeps working. The same text is held once
	// per device and stage as a message from NoticesUser.
	Notice string `json:"notice,omitempty"`
}

// Undeliverable reasons (Undeliverable.Reason).
const (
	// ReasonExpired: the message waited in the offline store for its whole
	// expiry and no device of the recipient registered to take it.
	ReasonExpired = "expired"
	// ReasonOverflow: the recipient's offline queue overflowed (a failed
	// hand-over put messages back beyond its bound) and the message, the
	// oldest, was dropped.
	ReasonOverflow = "overflow"
)

// Undeliverable tells a message's sender that the message never reached
// its recipient: the supernode that held it dropped it unread.
type Undeliverable struct {
	MsgID  string    `json:"msg_id"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// ChatHello is the first frame the opener writes on a chat stream: the
// certificate of the opening device, checked against the stream's remote peer.
type ChatHello struct {
	Cert Certificate `json:"cert"`
}

// ChatMessage is one chat v1 message. ID is a UUIDv7 assigned once at the
// origin and carried unchanged, through the bridge too; it is the
// idempotency key of every duplicate filter.
type ChatMessage struct {
	ID     string    `json:"id"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Text   string    `json:"text"`
	SentAt time.Time `json:"sent_at"`
}

// Ack statuses (ChatAck.Status).
const (
	StatusDelivered = "delivered"
	StatusRefused   = "refused"
	// StatusStored: no device of the recipient was live; the message is
	// held at a supernode until one registers (OpStore).
	StatusStored = "stored"
)

// ChatAck answers one ChatMessage. A refusal carries a Code and a human
// readable Error. An ack with an empty ID refuses the whole stream (for
// example a bad hello) and is followed by a reset.
type ChatAck struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Code   string `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Delivered reports whether the ack confirms delivery.
func (a ChatAck) Delivered() bool { return a.Status == StatusDelivered }
