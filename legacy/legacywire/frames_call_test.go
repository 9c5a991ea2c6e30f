package legacywire

import (
	"strings"
	"testing"
)

// TestCallFramesValid: every golden call frame is valid, call frames are
// not chat v3 only, and a call payload missing what its type needs is not
// valid.
func TestCallFramesValid(t *testing.T) {
	frames := goldenFrames(t)
	n := 0
	for name, v := range frames {
		f, ok := v.(ChatFrame)
		if !ok || !strings.HasPrefix(name, "chat2_call_") {
			continue
		}
		n++
		if !f.Valid() || !IsCallFrame(f.Type) || V3Only(f.Type) {
			t.Errorf("golden %s: Valid %v, IsCallFrame %v, V3Only %v", name, f.Valid(), IsCallFrame(f.Type), V3Only(f.Type))
		}
	}
	if n != 7 {
		t.Errorf("%d golden call frames, want one per call frame type (7)", n)
	}

	invite := frames["chat2_call_invite"].(ChatFrame)
	cancel := frames["chat2_call_cancel"].(ChatFrame)
	for _, tt := range []struct {
		name   string
		base   ChatFrame
		change func(f *ChatFrame, c *CallSignal)
	}{
		{"no frame id", invite, func(f *ChatFrame, _ *CallSignal) { f.ID = "" }},
		{"no call id", invite, func(_ *ChatFrame, c *CallSignal) { c.CallID = "" }},
		{"no caller", invite, func(_ *ChatFrame, c *CallSignal) { c.From = "" }},
		{"no callee", invite, func(_ *ChatFrame, c *CallSignal) { c.To = "" }},
		{"unknown media", invite, func(_ *ChatFrame, c *CallSignal) { c.Media = "hologram" }},
		{"no ring time", invite, func(_ *ChatFrame, c *CallSignal) { c.RingMillis = 0 }},
		{"ring too long", invite, func(_ *ChatFrame, c *CallSignal) { c.RingMillis = MaxCallRing.Milliseconds() + 1 }},
		{"cancel without reason", cancel, func(_ *ChatFrame, c *CallSignal) { c.Reason = "" }},
		{"cancel with unknown reason", cancel, func(_ *ChatFrame, c *CallSignal) { c.Reason = "bored" }},
		{"unknown call type", invite, func(f *ChatFrame, _ *CallSignal) { f.Type = "call_transfer" }},
		{"second payload", invite, func(f *ChatFrame, _ *CallSignal) { f.Typing = &Typing{From: "alice", To: "bob"} }},
		{"no payload", invite, func(f *ChatFrame, _ *CallSignal) { f.Call = nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.base
			c := *f.Call
			f.Call = &c
			tt.change(&f, &c)
			if f.Valid() {
				t.Errorf("Valid() = true for %+v (%+v)", f, f.Call)
			}
		})
	}
}
