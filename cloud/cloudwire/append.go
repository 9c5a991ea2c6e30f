package cloudwire

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// The hot frames of a send (the send, its ack, its events) are encoded by
// hand:
// encoding/json reflects over them and, through their MarshalJSON, marshals
// each twice and compacts the result, a third of the service's own CPU per
// send. The bytes are those of the reflection path, encodeReflect, for
// every value (TestHotFramesMatchReflect, FuzzHotFramesMatchReflect); a
// frame this file does not cover (an Event with a File) takes that path.

// appendAck appends the encoding of a as Encode writes it.
func appendAck(dst []byte, a Ack) []byte {
	dst = append(dst, `{"type":"ack"`...)
	dst = appendOmitEmpty(dst, `,"ref":`, a.Ref)
	dst = appendMember(dst, `,"msg_id":`, a.MsgID)
	dst = appendMember(dst, `,"conv":`, a.Conv)
	dst = appendUint(dst, `,"seq":`, a.Seq)
	if a.Duplicate {
		dst = append(dst, `,"duplicate":true`...)
	}
	return appendAt(dst, a.At)
}

// appendSend appends the encoding of s as Encode writes it; s.File must be
// nil.
func appendSend(dst []byte, s Send) []byte {
	dst = append(dst, `{"type":"send"`...)
	dst = appendOmitEmpty(dst, `,"ref":`, s.Ref)
	dst = appendOmitEmpty(dst, `,"as":`, s.As)
	dst = appendOmitEmpty(dst, `,"to":`, s.To)
	dst = appendOmitEmpty(dst, `,"conv":`, s.Conv)
	dst = appendMember(dst, `,"msg_id":`, s.MsgID)
	dst = appendMember(dst, `,"text":`, s.Text)
	dst = appendOmitEmpty(dst, `,"device":`, s.Device)
	return append(dst, '}')
}

// appendEvent appends the encoding of e as Encode writes it; e.File must
// be nil.
func appendEvent(dst []byte, e Event) []byte {
	dst = append(dst, `{"type":"event","cursor":`...)
	dst = strconv.AppendUint(dst, e.Cursor, 10)
	dst = appendMember(dst, `,"user":`, e.User)
	dst = appendMember(dst, `,"kind":`, e.Kind)
	dst = appendMember(dst, `,"conv":`, e.Conv)
	dst = appendUint(dst, `,"seq":`, e.Seq)
	dst = appendOmitEmpty(dst, `,"msg_id":`, e.MsgID)
	dst = appendOmitEmpty(dst, `,"from":`, e.From)
	dst = appendOmitEmpty(dst, `,"from_device":`, e.FromDevice)
	dst = appendOmitEmpty(dst, `,"to":`, e.To)
	dst = appendOmitEmpty(dst, `,"text":`, e.Text)
	dst = appendOmitEmpty(dst, `,"status":`, e.Status)
	dst = appendOmitEmpty(dst, `,"by":`, e.By)
	if e.UpTo != 0 {
		dst = appendUint(dst, `,"up_to":`, e.UpTo)
	}
	dst = appendOmitEmpty(dst, `,"op":`, e.Op)
	if len(e.Members) > 0 {
		dst = append(dst, `,"members":[`...)
		for i, m := range e.Members {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendString(dst, m)
		}
		dst = append(dst, ']')
	}
	dst = appendOmitEmpty(dst, `,"name":`, e.Name)
	dst = appendOmitEmpty(dst, `,"reason":`, e.Reason)
	return appendAt(dst, e.At)
}

// appendAt closes a frame with its "at" member, as the frames' MarshalJSON
// write it (last, FormatTime).
func appendAt(dst []byte, at time.Time) []byte {
	dst = append(dst, `,"at":"`...)
	dst = at.UTC().AppendFormat(dst, TimeFormat)
	return append(dst, `"}`...)
}

func appendUint(dst []byte, key string, v uint64) []byte {
	return strconv.AppendUint(append(dst, key...), v, 10)
}

func appendMember(dst []byte, key, s string) []byte {
	return AppendString(append(dst, key...), s)
}

func appendOmitEmpty(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return appendMember(dst, key, s)
}

// AppendString appends s as a JSON string, byte for byte as json.Marshal
// writes it: with HTML escaping (<, > and & as \u escapes), U+2028 and
// U+2029 escaped, and each invalid UTF-8 byte as \ufffd.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
