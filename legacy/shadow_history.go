package legacy

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/ferrygw/ferry/legacy/legacywire"
)

// DefaultHistoryCapacity is NewHistory's capacity when zero.
const DefaultHistoryCapacity = 1000

// historyPageBytes keeps a page's body under legacywire.MaxFrameSize with
// room for the envelope.
const historyPageBytes = legacywire.MaxFrameSize - 1024

// History is a device's memory of its user's recent messages, sent and
// received, that it serves to the bridge's backfill (ServeHistory). It
// keeps the capacity messages with the highest IDs (message IDs are
// time-ordered), each ID once. Safe for concurrent use.
type History struct {
	mu       sync.Mutex
	capacity int
	msgs     []legacywire.ChatMessage // ascending ID
}

// NewHistory returns an empty history holding at most capacity messages
// (DefaultHistoryCapacity when zero or less).
func NewHistory(capacity int) *History {
	if capacity <= 0 {
		capacity = DefaultHistoryCapacity
	}
	return &History{capacity: capacity}
}

// Add remembers msg; a message whose ID is already held replaces it.
func (h *History) Add(msg legacywire.ChatMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, found := slices.BinarySearchFunc(h.msgs, msg.ID, func(m legacywire.ChatMessage, id string) int {
		return strings.Compare(m.ID, id)
	})
	if found {
		h.msgs[i] = msg
		return
	}
	h.msgs = slices.Insert(h.msgs, i, msg)
	if len(h.msgs) > h.capacity {
		h.msgs = slices.Delete(h.msgs, 0, len(h.msgs)-h.capacity)
	}
}

// Len returns how many messages are held.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.msgs)
}

// Page answers req (checked Valid by the caller): the messages after
// req.After sent no earlier than req.Since, at most req.Limit and at most
// what fits one frame, with More set when any are left.
func (h *History) Page(req legacywire.HistoryRequest) legacywire.HistoryPage {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, _ := slices.BinarySearchFunc(h.msgs, req.After, func(m legacywire.ChatMessage, id string) int {
		return strings.Compare(m.ID, id)
	})
	page := legacywire.HistoryPage{OK: true}
	size := 0
	for ; i < len(h.msgs); i++ {
		m := h.msgs[i]
		if m.ID <= req.After || m.SentAt.Before(req.Since) {
			continue
		}
		b, _ := json.Marshal(m)
		if len(page.Msgs) == req.Limit || size+len(b)+1 > historyPageBytes {
			page.More = true
			break
		}
		size += len(b) + 1
		page.Msgs = append(page.Msgs, m)
	}
	return page
}
