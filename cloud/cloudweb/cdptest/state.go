//go:build linux

package cdptest

import (
	"slices"
	"testing"
)

// State is what the page's window.ferry.state() returns.
type State struct {
	Status      string `json:"status"`
	User        string `json:"user"`
	Device      string `json:"device"`
	Cursor      uint64 `json:"cursor"`
	HelloCursor uint64 `json:"helloCursor"`
	Replayed    int    `json:"replayed"`
	Sessions    int    `json:"sessions"`
	CloseCode   int    `json:"closeCode"`
	LastError   string `json:"lastError"`
	Outbox      int    `json:"outbox"`
	Selected    string `json:"selected"`
	// Me is the presence this device last published (active or idle).
	Me string `json:"me"`
	// Presence lists the other devices the page knows to be online (its
	// user's other devices and its contacts'), from presence and
	// presence_snapshot frames.
	Presence []Presence `json:"presence"`
	// Typing lists, per conversation, who is typing now.
	Typing map[string][]string `json:"typing"`
	// TypingSent counts the typing frames this page sent.
	TypingSent int `json:"typingSent"`
	// Call is the call the page knows of, nil when none.
	Call  *Call  `json:"call"`
	Convs []Conv `json:"convs"`
}

// Presence is one device's presence as the page keeps it.
type Presence struct {
	User   string `json:"user"`
	Device string `json:"device"`
	State  string `json:"state"`
}

// Call is the page's view of a call.
type Call struct {
	ID       string `json:"id"`
	From     string `json:"from"`
	To       string `json:"to"`
	State    string `json:"state"`  // ringing, active, ended
	Reason   string `json:"reason"` // as in call_state
	Device   string `json:"device"` // the answering device
	Incoming bool   `json:"incoming"`
	// RingingHere is set while this device rings.
	RingingHere bool `json:"ringingHere"`
	// Rang is every ringing list the page got for the call, in order.
	Rang [][]string `json:"rang"`
}

// Conv is one conversation on the page.
type Conv struct {
	ID     string `json:"id"`
	Peer   string `json:"peer"`
	Name   string `json:"name"`
	Group  bool   `json:"group"`
	Unread int    `json:"unread"`
	Msgs   []Msg  `json:"msgs"`
}

// Msg is one entry of a conversation on the page.
type Msg struct {
	Seq        uint64 `json:"seq"`
	Kind       string `json:"kind"`
	MsgID      string `json:"msg_id"`
	From       string `json:"from"`
	FromDevice string `json:"from_device"`
	Text       string `json:"text"`
	// Receipt is how far the others got with one of the page user's own
	// messages: sent, delivered or read.
	Receipt string `json:"receipt"`
	// Read is set on the others' messages once the page's user has read
	// them, on any of their devices.
	Read bool `json:"read"`
}

// Texts lists the messages of conv as "from: text".
func (s State) Texts(conv string) []string {
	var out []string
	for _, c := range s.Convs {
		if c.ID != conv {
			continue
		}
		for _, m := range c.Msgs {
			if m.Kind == "msg" {
				out = append(out, m.From+": "+m.Text)
			}
		}
	}
	return out
}

// Conv returns the conversation id, or false.
func (s State) Conv(id string) (Conv, bool) {
	for _, c := range s.Convs {
		if c.ID == id {
			return c, true
		}
	}
	return Conv{}, false
}

// Msg returns the message msgID of any conversation, or false.
func (s State) Msg(msgID string) (Msg, bool) {
	for _, c := range s.Convs {
		for _, m := range c.Msgs {
			if m.MsgID == msgID {
				return m, true
			}
		}
	}
	return Msg{}, false
}

// PresenceOf returns user's summed presence (active beats idle beats
// offline) over the devices the page knows, and "offline" when none is
// known.
func (s State) PresenceOf(user string) string {
	best := "offline"
	for _, p := range s.Presence {
		if p.User != user {
			continue
		}
		if p.State == "active" || (p.State == "idle" && best == "offline") {
			best = p.State
		}
	}
	return best
}

// IsTyping reports whether the page shows user typing in conv.
func (s State) IsTyping(conv, user string) bool {
	return slices.Contains(s.Typing[conv], user)
}

// WaitState polls the page's window.ferry.state() until ok holds.
func (p *Page) WaitState(tb testing.TB, what string, ok func(State) bool) State {
	tb.Helper()
	return Wait(tb, p, "window.ferry ? window.ferry.state() : null", what, ok)
}

// State returns the page's window.ferry.state() now.
func (p *Page) State(tb testing.TB) State {
	tb.Helper()
	var s State
	p.Eval(tb, "window.ferry.state()", &s)
	return s
}
