package legacywire

import "time"

// Route kinds (RouteRecord.Kind).
const (
	// RouteHome is a route that wins over the user's own devices: the
	// user's inbound home is the cloud, reached through the bridge.
	RouteHome = ""
	// RouteMirror is a shadow route: the user's home is still the overlay
	// (phase shadow or ready) and the bridge named by the record mirrors
	// what the user receives into the cloud. A lookup returns it in
	// DirResponse.Mirror, next to the user's devices; a chat v2+ sender
	// sends a shadow copy of each message there over MirrorProtocolID
	// after its own fan-out, and the copy never counts as delivery.
	RouteMirror = "mirror"
)

// Shadow protocol IDs.
const (
	// MirrorProtocolID carries shadow copies: the opener writes a ChatHello
	// and one ChatMessage it sent (From must be the certificate's user),
	// and reads one ChatAck. Delivered means the mirror took the copy; it
	// never means the recipient has the message.
	MirrorProtocolID = "/ferry/mirror/1.0.0"
	// HistoryProtocolID is backfill: a peer certified with CapBridge writes
	// a ChatHello and one HistoryRequest; the device answers with one
	// HistoryPage. Devices of chat v2 and later serve it.
	HistoryProtocolID = "/ferry/history/1.0.0"
)

// Bounds of the history protocol.
const (
	// MaxHistoryPage is the most messages a HistoryRequest may ask for; a
	// device may answer with fewer (to keep the page under MaxFrameSize)
	// and sets More.
	MaxHistoryPage = 100
)

// HistoryRequest asks a device for its user's recent messages, sent and
// received, oldest first: those with an ID above After (message IDs are
// time-ordered UUIDv7) and SentAt not before Since, at most Limit.
type HistoryRequest struct {
	User  string    `json:"user"`
	After string    `json:"after,omitempty"`
	Since time.Time `json:"since"`
	Limit int       `json:"limit"`
}

// Valid reports whether the request is within the protocol's bounds.
func (r HistoryRequest) Valid() bool {
	return r.User != "" && r.Limit >= 1 && r.Limit <= MaxHistoryPage && len(r.After) <= 64
}

// HistoryPage answers a HistoryRequest. When OK is false, Code is a refusal
// code and Error explains it. Msgs are in ascending ID order; More is set
// when the device holds further messages after the last one.
type HistoryPage struct {
	OK    bool          `json:"ok"`
	Code  string        `json:"code,omitempty"`
	Error string        `json:"error,omitempty"`
	Msgs  []ChatMessage `json:"msgs,omitempty"`
	More  bool          `json:"more,omitempty"`
}
