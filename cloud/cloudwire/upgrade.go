package cloudwire

import (
	"encoding/json"
	"time"
)

// UpgradeRequired is the JSON reason of a close with CloseUpgradeRequired
// (4426): the client version policy refuses this client. The client shows
// Notice (or its own text built from the other fields) and stops
// reconnecting until the user updates: reconnecting with the same version
// is refused the same way.
//
// A close reason holds at most 123 bytes, so String drops Notice when it
// does not fit whole; Minimum, UpdateURL and Deadline are kept, which bounds
// an update URL to about 60 bytes (a longer one is dropped, and Notice,
// when it fits, still names it).
type UpgradeRequired struct {
	// Minimum is the oldest version the policy admits, "" for an
	// emergency block of one exact version.
	Minimum string `json:"minimum,omitempty"`
	// UpdateURL is where to get a newer version.
	UpdateURL string `json:"update_url,omitempty"`
	// Deadline is when the block took (or takes) effect for this device.
	Deadline time.Time `json:"deadline,omitzero"`
	// Notice is the human-readable text the operator's policy gives.
	Notice string `json:"notice,omitempty"`
}

// String returns the JSON text of u, fitted into a close frame's reason.
func (u UpgradeRequired) String() string {
	if !u.Deadline.IsZero() {
		u.Deadline = u.Deadline.UTC().Truncate(time.Second)
	}
	for _, drop := range []func(*UpgradeRequired){nil, func(v *UpgradeRequired) { v.UpdateURL = "" }} {
		if drop != nil {
			drop(&u)
		}
		if s, ok := u.fit(); ok {
			return s
		}
	}
	u.Notice, u.Minimum = "", ""
	s, _ := u.fit()
	return s
}

// fit returns u's JSON and whether it fits in a close reason, dropping
// Notice (whole: a cut sentence would mislead) when only that is too long.
func (u UpgradeRequired) fit() (string, bool) {
	for _, n := range []string{u.Notice, ""} {
		u.Notice = n
		if b, err := json.Marshal(u); err == nil && len(b) <= maxCloseReason {
			return string(b), true
		}
	}
	return "", false
}

// ParseUpgradeRequired parses the reason of a 4426 close. ok is false when
// the text is not such JSON; Notice then holds the raw text.
func ParseUpgradeRequired(text string) (u UpgradeRequired, ok bool) {
	if len(text) == 0 || text[0] != '{' || json.Unmarshal([]byte(text), &u) != nil {
		return UpgradeRequired{Notice: text}, false
	}
	return u, true
}
