package cloudwire

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// The hot frames of a send (send, ack, event) are decoded by hand when
// they come exactly as Encode writes them: members in Encode's order, each
// at most once, no whitespace, strings without escapes, numbers as plain
// digits. Any other frame, even one that differs only in spacing, takes
// encoding/json. On the frames it reads, the result is what encoding/json
// gives (FuzzDecodeMatchesFull); a frame that fails anywhere here,
// validation included, is decoded again by encoding/json, which makes the
// error.

// plainReader reads the members of such a frame after its type; ok turns
// false at the first byte that is not in that form, and stays false.
type plainReader struct {
	b  []byte
	i  int
	ok bool
}

// member reports whether the next member is name, and if so moves past
// its key.
func (r *plainReader) member(name string) bool {
	n := len(name)
	if !r.ok || r.i+n+4 > len(r.b) || r.b[r.i] != ',' || r.b[r.i+1] != '"' ||
		string(r.b[r.i+2:r.i+2+n]) != name || r.b[r.i+2+n] != '"' || r.b[r.i+3+n] != ':' {
		return false
	}
	r.i += n + 4
	return true
}

// need moves past the key of name, which must come next.
func (r *plainReader) need(name string) {
	if !r.member(name) {
		r.ok = false
	}
}

// reqStr reads the string member name, which must come next.
func (r *plainReader) reqStr(name string) string {
	r.need(name)
	return r.str()
}

// reqUint reads the number member name, which must come next.
func (r *plainReader) reqUint(name string) uint64 {
	r.need(name)
	return r.uint()
}

// reqTime reads the time member name, which must come next.
func (r *plainReader) reqTime(name string) time.Time {
	r.need(name)
	return r.time()
}

// str reads a string with no escape and no control character (the frame
// is valid UTF-8: Decode checked it).
func (r *plainReader) str() string {
	if !r.ok || r.i >= len(r.b) || r.b[r.i] != '"' {
		r.ok = false
		return ""
	}
	n, ok := plainLen(r.b[r.i+1:])
	if !ok {
		r.ok = false
		return ""
	}
	s := string(r.b[r.i+1 : r.i+1+n])
	r.i += n + 2
	return s
}

// plainLen is the length of the string body at the start of b, up to its
// closing quote; false at an escape or a control character, or with no
// closing quote.
func plainLen(b []byte) (int, bool) {
	for j, c := range b {
		switch {
		case c == '"':
			return j, true
		case c == '\\' || c < 0x20:
			return 0, false
		}
	}
	return 0, false
}

// UnquotePlain returns the text of quoted, a JSON string that needs no
// escape (what AppendString writes for such text), and false for any other
// (encoding/json reads those).
func UnquotePlain(quoted []byte) (string, bool) {
	if len(quoted) < 2 || quoted[0] != '"' {
		return "", false
	}
	n, ok := plainLen(quoted[1:])
	if !ok || n != len(quoted)-2 || !utf8.Valid(quoted[1:1+n]) {
		return "", false
	}
	return string(quoted[1 : 1+n]), true
}

// optStr reads the string member name if it comes next.
func (r *plainReader) optStr(name string) string {
	if !r.member(name) {
		return ""
	}
	return r.str()
}

// uint reads a JSON number that is a uint64 in plain digits.
func (r *plainReader) uint() uint64 {
	j := r.i
	for j < len(r.b) && r.b[j] >= '0' && r.b[j] <= '9' {
		j++
	}
	if !r.ok || j == r.i || (r.b[r.i] == '0' && j > r.i+1) {
		r.ok = false
		return 0
	}
	v, err := strconv.ParseUint(string(r.b[r.i:j]), 10, 64)
	if err != nil {
		r.ok = false
		return 0
	}
	r.i = j
	return v
}

// time reads a time as encoding/json does: by time.Time's UnmarshalJSON
// of the quoted string.
func (r *plainReader) time() time.Time {
	start := r.i
	if r.str(); !r.ok {
		return time.Time{}
	}
	var t time.Time
	if err := t.UnmarshalJSON(r.b[start:r.i]); err != nil {
		r.ok = false
	}
	return t
}

// strs reads a non-empty array of strings.
func (r *plainReader) strs() []string {
	if !r.ok || r.i >= len(r.b) || r.b[r.i] != '[' {
		r.ok = false
		return nil
	}
	r.i++
	var out []string
	for r.ok {
		out = append(out, r.str())
		if r.ok && r.i < len(r.b) && r.b[r.i] == ',' {
			r.i++
			continue
		}
		if r.ok && r.i < len(r.b) && r.b[r.i] == ']' {
			r.i++
			return out
		}
		r.ok = false
	}
	return nil
}

// end reports whether the frame ends here, with all read.
func (r *plainReader) end() bool {
	return r.ok && r.i == len(r.b)-1 && r.b[r.i] == '}'
}

// decodePlain decodes b, of type typ, whose members after the type start
// at b[rest]; ok is false when b is not a hot frame in Encode's form or
// does not validate.
func decodePlain(b []byte, typ string, rest int) (Frame, bool) {
	r := &plainReader{b: b, i: rest, ok: true}
	var f Frame
	switch typ {
	case TypeSend:
		var s Send
		s.Ref = r.optStr("ref")
		s.As = r.optStr("as")
		s.To = r.optStr("to")
		s.Conv = r.optStr("conv")
		s.MsgID = r.reqStr("msg_id")
		s.Text = r.reqStr("text")
		s.Device = r.optStr("device")
		f = s
	case TypeAck:
		var a Ack
		a.Ref = r.optStr("ref")
		a.MsgID = r.reqStr("msg_id")
		a.Conv = r.reqStr("conv")
		a.Seq = r.reqUint("seq")
		if r.member("duplicate") { // written only when true
			a.Duplicate = r.i+4 <= len(r.b) && string(r.b[r.i:r.i+4]) == "true"
			r.ok, r.i = a.Duplicate, r.i+4
		}
		a.At = r.reqTime("at")
		f = a
	case TypeEvent:
		var e Event
		e.Cursor = r.reqUint("cursor")
		e.User = r.reqStr("user")
		e.Kind = r.reqStr("kind")
		e.Conv = r.reqStr("conv")
		e.Seq = r.reqUint("seq")
		e.MsgID = r.optStr("msg_id")
		e.From = r.optStr("from")
		e.FromDevice = r.optStr("from_device")
		e.To = r.optStr("to")
		e.Text = r.optStr("text")
		e.Status = r.optStr("status")
		e.By = r.optStr("by")
		if r.member("up_to") {
			e.UpTo = r.uint()
		}
		e.Op = r.optStr("op")
		if r.member("members") {
			e.Members = r.strs()
		}
		e.Name = r.optStr("name")
		e.Reason = r.optStr("reason")
		e.At = r.reqTime("at")
		f = e
	default:
		return nil, false
	}
	if !r.end() {
		return nil, false
	}
	if v, ok := f.(interface{ Validate() error }); ok && v.Validate() != nil {
		return nil, false
	}
	return f, true
}
