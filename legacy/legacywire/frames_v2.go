package legacywire

import "time"

// Chat v2 frame types (ChatFrame.Type).
const (
	// FrameMsg carries a ChatMessage; answered by an ack.
	FrameMsg = "msg"
	// FrameAck answers any other frame: its Ack.ID is the answered frame's ID.
	FrameAck = "ack"
	// FrameReceipt carries a Receipt (delivered or read) for an earlier message.
	FrameReceipt = "receipt"
	// FrameTyping carries a Typing indication.
	FrameTyping = "typing"
	// FramePresence publishes a Presence to a subscriber.
	FramePresence = "presence"
	// FrameSubscribe asks the receiving device to publish its user's
	// presence to the opener (or to stop, with Unsubscribe).
	FrameSubscribe = "subscribe"
)

// Receipt statuses (Receipt.Status).
const (
	ReceiptDelivered = "delivered"
	ReceiptRead      = "read"
)

// Presence statuses (Presence.Status).
const (
	PresenceActive  = "active"
	PresenceIdle    = "idle"
	PresenceOffline = "offline"
)

// ChatFrame is every frame of chat v2 and v3 after the ChatHello. Unlike v1 frames
// it carries an explicit Type, and exactly the field that Type names is set.
// Every frame the opener writes has an ID (for a message, the message's ID)
// and is answered by one FrameAck frame with that ID, in order.
type ChatFrame struct {
	Type      string       `json:"type"`
	ID        string       `json:"id,omitempty"`
	Msg       *ChatMessage `json:"msg,omitempty"`
	Ack       *ChatAck     `json:"ack,omitempty"`
	Receipt   *Receipt     `json:"receipt,omitempty"`
	Typing    *Typing      `json:"typing,omitempty"`
	Presence  *Presence    `json:"presence,omitempty"`
	Subscribe *Subscribe   `json:"subscribe,omitempty"`
	// Chat v3 payloads (frames_v3.go).
	FileOffer  *FileOffer  `json:"file_offer,omitempty"`
	FileAnswer *FileAnswer `json:"file_answer,omitempty"`
	FileChunk  *FileChunk  `json:"file_chunk,omitempty"`
	// Call signalling (frames_call.go), chat v2 and v3.
	Call *CallSignal `json:"call,omitempty"`
}

// Valid reports whether the frame carries exactly the payload its Type names
// (and an ID, except for acks, whose ID is inside the ack, and file chunks),
// with file payloads inside the wire's bounds (FileOffer.Valid) and call
// payloads complete (validCallFrame).
func (f ChatFrame) Valid() bool {
	n := 0
	for _, set := range []bool{f.Msg != nil, f.Ack != nil, f.Receipt != nil, f.Typing != nil, f.Presence != nil, f.Subscribe != nil,
		f.FileOffer != nil, f.FileAnswer != nil, f.FileChunk != nil, f.Call != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return false
	}
	switch f.Type {
	case FrameAck:
		return f.Ack != nil
	case FrameMsg:
		return f.Msg != nil && f.ID != "" && f.ID == f.Msg.ID
	case FrameReceipt:
		return f.Receipt != nil && f.ID != ""
	case FrameTyping:
		return f.Typing != nil && f.ID != ""
	case FramePresence:
		return f.Presence != nil && f.ID != ""
	case FrameSubscribe:
		return f.Subscribe != nil && f.ID != ""
	}
	if IsCallFrame(f.Type) {
		return validCallFrame(f)
	}
	return validFileFrame(f)
}

// Receipt tells a message's sender that Reader's device has the message
// (delivered) or showed it (read). Receipts refer to the message by its
// origin ID, which the bridge carries unchanged.
type Receipt struct {
	MsgID  string    `json:"msg_id"`
	Reader string    `json:"reader"`
	Sender string    `json:"sender"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// Typing tells To that From is (Active) or stopped typing to them.
type Typing struct {
	From   string    `json:"from"`
	To     string    `json:"to"`
	Active bool      `json:"active"`
	At     time.Time `json:"at"`
}

// Presence is User's status as one of the Presence* constants.
type Presence struct {
	User   string    `json:"user"`
	Status string    `json:"status"`
	At     time.Time `json:"at"`
}

// Subscribe asks for (or, with Unsubscribe, cancels) the presence of the
// receiving device's user.
type Subscribe struct {
	User        string `json:"user"`
	Unsubscribe bool   `json:"unsubscribe,omitempty"`
}
