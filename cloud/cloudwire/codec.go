package cloudwire

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// TimeFormat is how frames carry times: RFC 3339, UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Encode returns the JSON bytes of f with its "type" member first. It fails
// only for a frame that cannot be marshalled or whose encoding exceeds
// MaxFrameSize.
func Encode(f Frame) ([]byte, error) {
	body, err := json.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("cloudwire: encode %s: %w", f.FrameType(), err)
	}
	if len(body) < 2 || body[0] != '{' {
		return nil, fmt.Errorf("cloudwire: encode %s: not a JSON object", f.FrameType())
	}
	typ := f.FrameType()
	out := make([]byte, 0, len(body)+len(typ)+11)
	out = append(out, `{"type":"`...)
	out = append(out, typ...)
	out = append(out, '"')
	if len(body) > 2 {
		out = append(out, ',')
	}
	out = append(out, body[1:]...)
	if len(out) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %s frame of %d bytes", ErrFrameTooLarge, typ, len(out))
	}
	return out, nil
}

// Decode parses one frame and validates it. The result is one of the frame
// types of this package, as a value (Hello, Send, ...). When the frame's type
// could be read, errors come as a *FrameError carrying its type and ref.
func Decode(b []byte) (Frame, error) {
	if len(b) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, len(b), MaxFrameSize)
	}
	if !utf8.Valid(b) {
		return nil, ErrInvalidUTF8
	}
	var head struct {
		Type *string `json:"type"`
		Ref  string  `json:"ref"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if head.Type == nil || *head.Type == "" {
		return nil, fmt.Errorf("%w: missing type", ErrMalformedFrame)
	}
	typ, ref := *head.Type, head.Ref
	if len(ref) > MaxRefSize {
		ref = ""
	}
	switch typ {
	case TypeHello:
		return decodeAs[Hello](b, typ, ref)
	case TypeWelcome:
		return decodeAs[Welcome](b, typ, ref)
	case TypeSend:
		return decodeAs[Send](b, typ, ref)
	case TypeAck:
		return decodeAs[Ack](b, typ, ref)
	case TypeReceipt:
		return decodeAs[Receipt](b, typ, ref)
	case TypeEvent:
		return decodeAs[Event](b, typ, ref)
	case TypeError:
		return decodeAs[Error](b, typ, ref)
	case TypeSynced:
		return decodeAs[Synced](b, typ, ref)
	case TypeHistory:
		return decodeAs[History](b, typ, ref)
	case TypePage:
		return decodeAs[Page](b, typ, ref)
	case TypeGroup:
		return decodeAs[Group](b, typ, ref)
	case TypePresence:
		return decodeAs[Presence](b, typ, ref)
	case TypeTyping:
		return decodeAs[Typing](b, typ, ref)
	case TypePresenceSnapshot:
		return decodeAs[PresenceSnapshot](b, typ, ref)
	case TypeCall:
		return decodeAs[Call](b, typ, ref)
	case TypeCallState:
		return decodeAs[CallState](b, typ, ref)
	case TypeAct:
		return decodeAs[Act](b, typ, ref)
	case TypeActing:
		return decodeAs[Acting](b, typ, ref)
	}
	if len(typ) > 32 {
		typ = typ[:32]
	}
	return nil, &FrameError{Type: typ, Ref: ref, Err: ErrUnknownFrame}
}

func decodeAs[T Frame](b []byte, typ, ref string) (Frame, error) {
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, &FrameError{Type: typ, Ref: ref, Err: fmt.Errorf("%w: %v", ErrMalformedFrame, err)}
	}
	if val, ok := any(v).(interface{ Validate() error }); ok {
		if err := val.Validate(); err != nil {
			return nil, &FrameError{Type: typ, Ref: ref, Err: err}
		}
	}
	return v, nil
}

// FormatTime formats t as frames carry it: UTC, milliseconds.
func FormatTime(t time.Time) string {
	return t.UTC().Format(TimeFormat)
}

// MarshalJSON writes At with millisecond precision.
func (a Ack) MarshalJSON() ([]byte, error) {
	type plain Ack
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(a), FormatTime(a.At)})
}

// MarshalJSON writes At with millisecond precision.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(e), FormatTime(e.At)})
}

// MarshalJSON writes At with millisecond precision.
func (m Message) MarshalJSON() ([]byte, error) {
	type plain Message
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(m), FormatTime(m.At)})
}

// MarshalJSON writes At with millisecond precision, and omits it when zero.
func (p Presence) MarshalJSON() ([]byte, error) {
	type plain Presence
	if p.At.IsZero() {
		return json.Marshal(plain(p))
	}
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(p), FormatTime(p.At)})
}

// MarshalJSON writes At with millisecond precision.
func (c CallState) MarshalJSON() ([]byte, error) {
	type plain CallState
	return json.Marshal(struct {
		plain
		At string `json:"at"`
	}{plain(c), FormatTime(c.At)})
}

// maxCloseReason is the largest close reason a WebSocket close frame holds.
const maxCloseReason = 123

// CloseReason is the JSON carried in the reason of a close frame sent by the
// service, so that clients can act on it (wait RetryMS before reconnecting).
type CloseReason struct {
	Reason  string `json:"reason,omitempty"`
	RetryMS int64  `json:"retry_ms,omitempty"`
}

// String returns the JSON text of c, shortening Reason so that the text fits
// in a close frame (123 bytes).
func (c CloseReason) String() string {
	for {
		b, err := json.Marshal(c)
		if err != nil {
			return ""
		}
		if len(b) <= maxCloseReason {
			return string(b)
		}
		// Drop runes from the end; JSON escapes can make each rune cost
		// up to six bytes, so cut by the excess.
		r := []rune(c.Reason)
		cut := len(b) - maxCloseReason
		if cut > len(r) {
			cut = len(r)
		}
		if cut == 0 {
			return ""
		}
		c.Reason = string(r[:len(r)-cut])
	}
}

// ParseCloseReason parses the reason text of a close frame. ok is false when
// the text is not a CloseReason; Reason then holds the raw text.
func ParseCloseReason(text string) (c CloseReason, ok bool) {
	if err := json.Unmarshal([]byte(text), &c); err != nil || len(text) == 0 || text[0] != '{' {
		return CloseReason{Reason: text}, false
	}
	return c, true
}
