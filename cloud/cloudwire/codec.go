package cloudwire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"
	"unicode/utf8"
)

// TimeFormat is how frames carry times: RFC 3339, UTC, milliseconds.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Encode returns the JSON bytes of f with its "type" member first. It fails
// only for a frame that cannot be marshalled or whose encoding exceeds
// MaxFrameSize.
func Encode(f Frame) ([]byte, error) {
	var out []byte
	switch v := f.(type) { // the hot frames, by hand (append.go)
	case Ack:
		out = appendAck(make([]byte, 0, 160+len(v.Ref)), v)
	case Event:
		if v.File == nil {
			out = appendEvent(make([]byte, 0, 224+len(v.Text)), v)
		}
	case Send:
		if v.File == nil {
			out = appendSend(make([]byte, 0, 128+len(v.Text)), v)
		}
	}
	if out == nil {
		return encodeReflect(f)
	}
	if len(out) > MaxFrameSize {
		return nil, fmt.Errorf("%w: %s frame of %d bytes", ErrFrameTooLarge, f.FrameType(), len(out))
	}
	return out, nil
}

// encodeReflect is Encode by encoding/json, for every frame.
func encodeReflect(f Frame) ([]byte, error) {
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
	if typ, rest, ok := plainHead(b); ok {
		if f, ok := decodePlain(b, typ, rest); ok {
			return f, nil
		}
		if f, err := decodeType(b, typ, ""); err == nil {
			return f, nil
		}
		// Errors come from the full path, with the frame's ref.
	}
	return decodeFull(b)
}

// decodeFull is Decode past its size and UTF-8 checks, reading the type
// and ref of any frame first.
func decodeFull(b []byte) (Frame, error) {
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
	return decodeType(b, typ, ref)
}

// decoders decode each frame type; hasRef says whether the type has the
// top-level string member "ref" itself.
var decoders = map[string]struct {
	decode func(b []byte, typ, ref string) (Frame, error)
	hasRef bool
}{
	TypeHello:            {decodeAs[Hello], hasRef[Hello]()},
	TypeWelcome:          {decodeAs[Welcome], hasRef[Welcome]()},
	TypeSend:             {decodeAs[Send], hasRef[Send]()},
	TypeAck:              {decodeAs[Ack], hasRef[Ack]()},
	TypeReceipt:          {decodeAs[Receipt], hasRef[Receipt]()},
	TypeEvent:            {decodeAs[Event], hasRef[Event]()},
	TypeError:            {decodeAs[Error], hasRef[Error]()},
	TypeSynced:           {decodeAs[Synced], hasRef[Synced]()},
	TypeHistory:          {decodeAs[History], hasRef[History]()},
	TypePage:             {decodeAs[Page], hasRef[Page]()},
	TypeGroup:            {decodeAs[Group], hasRef[Group]()},
	TypePresence:         {decodeAs[Presence], hasRef[Presence]()},
	TypeTyping:           {decodeAs[Typing], hasRef[Typing]()},
	TypePresenceSnapshot: {decodeAs[PresenceSnapshot], hasRef[PresenceSnapshot]()},
	TypeCall:             {decodeAs[Call], hasRef[Call]()},
	TypeCallState:        {decodeAs[CallState], hasRef[CallState]()},
	TypeAct:              {decodeAs[Act], hasRef[Act]()},
	TypeActing:           {decodeAs[Acting], hasRef[Acting]()},
}

func decodeType(b []byte, typ, ref string) (Frame, error) {
	if d, ok := decoders[typ]; ok {
		return d.decode(b, typ, ref)
	}
	if len(typ) > 32 {
		typ = typ[:32]
	}
	return nil, &FrameError{Type: typ, Ref: ref, Err: ErrUnknownFrame}
}

// hasRef reports whether T has a string field that encoding/json fills
// from the top-level member "ref".
func hasRef[T Frame]() bool {
	f, ok := reflect.TypeFor[T]().FieldByName("Ref")
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return ok && len(f.Index) == 1 && name == "ref" && f.Type.Kind() == reflect.String
}

// plainHead returns the type of a frame that starts as Encode writes it,
// {"type":"<letters and _>", and where the members after it start, when that is the type the full path would
// read and decoding the frame as that type alone fails exactly when the
// full path's head fails: no other member can be named "type" (nor "ref"
// for a type without a ref of its own, whose decoding would not check it).
// encoding/json matches member names case-insensitively (Unicode simple
// folding, which maps no other rune to the letters of either name) and
// unescaped, so it is enough that no `"type"` or `"ref"` appears in any
// case and that there is no \u escape at all. Frames this misses, the
// full path decodes.
func plainHead(b []byte) (typ string, rest int, ok bool) {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(b, []byte(prefix)) {
		return "", 0, false
	}
	end := len(prefix)
	for end < len(b) && (b[end] >= 'a' && b[end] <= 'z' || b[end] == '_') {
		end++
	}
	if end == len(prefix) || end+1 >= len(b) || b[end] != '"' || (b[end+1] != ',' && b[end+1] != '}') {
		return "", 0, false
	}
	d, ok := decoders[string(b[len(prefix):end])]
	if !ok {
		return "", 0, false
	}
	for rest, i := b[end+1:], 0; i < len(rest); i++ {
		switch rest[i] {
		case '\\':
			if i+1 < len(rest) && rest[i+1] == 'u' {
				return "", 0, false
			}
			i++
		case '"':
			if foldedIs(rest[i+1:], `type"`) || (!d.hasRef && foldedIs(rest[i+1:], `ref"`)) {
				return "", 0, false
			}
		}
	}
	return string(b[len(prefix):end]), end + 1, true
}

// foldedIs reports whether b starts with name in any ASCII case (name is
// lower case letters and a closing quote).
func foldedIs(b []byte, name string) bool {
	if len(b) < len(name) {
		return false
	}
	for i := range len(name) {
		if b[i]|0x20 != name[i]|0x20 {
			return false
		}
	}
	return true
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
