// Package bridge is the interop core of Ferry: a peer of the legacy overlay
// that speaks there for users whose inbound home is the cloud, and a
// privileged client of the cloud service that carries legacy users' traffic.
//
// Routing follows the recipient's phase (migrate.User.CloudHome): a legacy
// device that messages a cloud-home user is pointed at the bridge by an
// authority-signed route record, and the bridge writes the message into the
// cloud conversation acting for the legacy sender; a cloud message to a
// legacy-home user reaches the bridge through its cloud link, is delivered to
// the user's legacy devices, and the device's delivery ack becomes a
// delivery receipt in the cloud history.
//
// The bridge acknowledges a legacy sender only after the cloud has made the
// message durable, and it resumes its cloud feed from a cursor kept in
// JetStream, so a restart neither loses nor replays what users see (legacy
// devices drop repeated message ids).
//
// Chat v1 and v2 have no groups: a cloud group message reaches a legacy-home
// member's devices with its id and sender unchanged and the group's name
// before the text, and the bridge remembers its conversation in a persistent
// id map so the device's receipt finds the group again. Receipts degrade by
// chat version: a v2 device's read receipt becomes a cloud read receipt for
// the legacy user; a v1 device only ever yields "delivered" (its ack); cloud
// receipts, per message or cumulative, reach a legacy sender's v2 devices as
// per-message receipts and are not sent to v1 devices. Typing and presence
// cross live only, published by the side that is authoritative for the user
// and converted for watchers on the other side (live.go); the cloud takes
// neither on bridge sessions (PROTOCOL.md, v4), so they travel on its live
// subjects through cloud.BridgeLive. Every route decision is counted by
// kind and path (native, interop, escalation).
//
// The cloud link has a state (stopped, connecting, connected, reconnecting,
// bad_credentials when the cloud refuses the bridge's token with 401 or
// close 4401) with since-when and the last error: Bridge.Status, the admin
// API's GET /v1/admin/bridge and gateway_bridge_link_state. Redials use full
// jitter with a doubling cap that starts over after a link that came up; a
// refused token waits the longest, since retrying faster cannot fix it.
//
// bridge is the only package that imports both legacy/ and cloud/.
package bridge
