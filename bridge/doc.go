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
// Deliveries to different legacy users are independent (feed.go): the
// feed's events go to one ordered worker per inbox owner, at most 4,096
// events in flight, so a device that reads slowly (up to the 5 s delivery
// timeout per message) delays only its own user; once more than 32 of its
// user's events wait behind the current one, the rest go to the outbox,
// whose retries drain up to 16 recipients at once. The cursor moves past
// an event only when it and every event before it are handled.
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
// Links and puppets (pool.go, puppets.go). The bridge keeps a pool of
// Config.Links WebSocket bridge sessions to the cloud (-bridge-links,
// default 2): link 0 carries the inbox feed (cursor, events) and requests;
// the others are request-only (hello no_feed, PROTOCOL.md v10), so no
// event reaches the bridge twice. A legacy user's requests always go to
// one link, the FNV-1a hash of the user id modulo the pool size, so the
// cloud's per-user order is the order the bridge sent them in. A user is
// never moved to another link: while their link is down their requests
// fail at once, as with one link (the legacy device retries unavailable,
// the outbox and the flip hold retry with backoff), so nothing of theirs
// overtakes another on a second link. Requests that act for nobody (the
// flip probe) use link 0.
//
// Each link has a state (stopped, connecting, connected, reconnecting,
// bad_credentials when the cloud refuses the bridge's token with 401 or
// close 4401) with since-when and the last error: Bridge.Status, the admin
// API's GET /v1/admin/bridge and gateway_bridge_link_state{link,state}.
// Each link redials on its own, with full jitter and a doubling cap that
// starts over after a link that came up, so after a cloud restart the
// links (of one bridge or many) do not come back in step; a refused token
// waits the longest, since retrying faster cannot fix it.
//
// Every legacy-home user the bridge acts for has a puppet on their link:
// the bridge opens it (act open, PROTOCOL.md v10) before the user's first
// request and reuses it for the rest, so one act serves any number of
// requests. Its state is opening, open, reconnecting, refused (the cloud's
// act-for rule said no: the user's home is the cloud as the cloud sees
// it) or closed, with since, last use and last error (Bridge.Puppets, GET
// /v1/admin/bridge?puppets=N&state=S, gateway_bridge_puppets{state},
// gateway_bridge_puppet_opens_total{result}). A puppet idle for
// Config.PuppetIdle (10 min) is closed with act close and reopened on
// demand; one unused for six idle periods is forgotten. When a link drops
// its puppets turn reconnecting and are reopened lazily, at their user's
// next request on the new session: reopens follow traffic, so a cloud
// restart brings no reopen storm. A refused puppet is asked again at each
// use (a rollback makes the user legacy-home again); its request fails
// with the refusal, and a legacy sender gets the unavailable refusal the
// cloud's refusal always gave. The cloud checks every request against its
// act-for rule as well, so an open puppet never outlives a phase change;
// the puppet is the per-user session's state and the cloud's count, not a
// cached permission. Users whose home is the cloud get no puppet: what the
// bridge sends for them comes from one of their own legacy devices, which
// the cloud checks per request.
//
// # The flip (ready → cloud) and reverse mirroring
//
// The bridge watches memdb. When a user's inbound home becomes the cloud,
// the route publisher's listener marks the user "flipping" before it queues
// the route record, so no route can be out before the mark (flip.go).
// While a user is flipping, a legacy message the bridge gets for them is
// not refused: it goes to the user's queue in the flip hold (a JetStream
// stream, one FIFO per recipient, like the outbox) and the sender is
// acknowledged once it is durable there. Once the route record is
// published and the cloud has answered a request sent after that (one
// probe on the link covers every flip routed before it), the hold drains
// in order; the flip ends when the hold is empty. Until then newer legacy
// messages for the user queue behind what is held, so none overtakes
// another. A rollback ends the flip, and what was held drains to the
// user's legacy devices instead.
//
// Legacy senders whose lookup predates the route still reach the user's
// legacy devices directly; legacy devices look the recipient up before
// every send, so the window is one lookup long. Of the two remedies, the
// device forwarding or the sender retrying on not_here, the bridge
// implements the second where it answers: for a recipient whose home is
// not the cloud (a rollback under a stale route) it answers not_here and
// the sender looks up again and reaches the devices. A user's own legacy
// device that accepts a message after the flip can neither forward it (a
// device may only send as its own user; there is no forward frame) nor
// answer not_here (it does not know its user's phase): that message is on
// the device, in order, and reaches the cloud only through shadow
// dual-write (the copy a shadow or ready user's v2 senders make). Closing
// the window for every sender needs a legacy-side change (legacy/).
//
// In phase cloud, every message the user receives is mirrored back to
// their legacy devices (mirror.go) through the same outbox queue their
// legacy deliveries used before the flip, so the copies follow whatever
// was still waiting there, in the cloud inbox's order. A copy keeps the
// message's id, sender and time: a device that already had the message
// drops it as a repeat, and no receipt goes back to the cloud. A device
// that is offline gets its copies when it is reachable again, so a
// rollback to shadow loses nothing the user received. A file message is
// mirrored the way files reach legacy-home users (files.go): an offer the
// chat v3 device fetches from the bridge, a notice with the download link
// on older ones. Messages the user sends from a cloud device are not
// mirrored: a legacy device takes only messages addressed to its own
// user, and the wire has no "sent from another device" or "mirrored" mark
// yet (legacywire).
//
// # A cloud user's own legacy devices
//
// In phase cloud a user's legacy device is one more device of theirs in
// the cloud (devices.go). What it sends to a cloud-home user reaches the
// bridge (the recipient's route) and is written into the cloud as the
// user, from that device (cloudwire.Send.Device, protocol v11): the cloud
// asks the gateway (cloud.Config.ActForDevice, which applies
// CheckOwnDevice: home in the cloud but not for good, a legacy device on
// the user's record), and the message reaches the recipient and, as the
// user's own sent message, their other devices. The device is
// acknowledged once the cloud stored it, idempotent by message id; a
// finalized user's device is refused with upgrade_required, a device not
// (yet) on record with unavailable, both counted. A chat v2+ device's
// receipt for a message mirrored to it (see above) reaches the bridge
// through the sender's route when the sender's home is the cloud, and is
// written as the user's receipt from that device (cloudwire.Receipt.Device,
// v11): the cloud takes it once per message, and receipts are never
// mirrored to a cloud-home user's legacy devices, so it is not echoed
// back. What it sends to a legacy-home user goes device to device. When
// the recipient is in shadow or ready, the device's shadow copy to the
// recipient's mirror is written at once as the user's from that device,
// marked so the feed does not carry the cloud's copy to the recipient
// again, and compared like any mirror copy (the recipient's summary). For
// other legacy-home recipients the bridge reads it back from the device's
// history at each probe and writes it into the cloud the same way (up to
// a probe period late, at the end of its conversation); the recipient's
// devices drop the cloud's copy as a repeat. Closing that delay needs the
// sender to mirror to its own user's mirror route, a legacy/ change. A
// receipt the device gives a legacy-home sender goes device to device and
// does not reach the cloud (the same legacy/ change would carry it). The device shows in the cloud's presence (device record
// platform legacy, its client version; live presence and snapshots) while
// the bridge reaches it, checked on its sends, on mirror copies it takes,
// on registrations and phase changes, when its connection closes and every
// 30 s; the records name the bridge's own node lease, so the cloud marks
// them offline if the bridge dies. The looks (a directory lookup,
// connection checks and a history read per device) run apart from the
// lease heartbeat, on 4 workers, in random order, each after a random
// wait of up to 100 ms (probeAll): a start with thousands of such users
// (at most 4,096 queued) never opens thousands of lookups at once, and
// bridges started together do not look in step. A legacy text waits for the file offers
// its sender made before it (their transfers are asynchronous), so a
// file then a text reach the cloud in that order.
//
// What one of these queues drops unread after OutboxTTL is reported to
// the sender on their own side (mirror_report.go) and counted in
// gateway_bridge_undeliverable_reports_total: a cloud sender gets an
// undeliverable event in their synced history (PROTOCOL.md v8), a legacy
// sender a notice message. Mirror copies expire without a report, their
// original having reached the user's home.
//
// System notes (notes.go): the note the cloud writes into each
// conversation of a user who moves between the apps reaches the legacy
// members' devices as a chat message from ferry-notices, through their
// outbox queue, once per conversation and move (a mark in the id map).
//
// Shadow (shadow*.go). Legacy-to-legacy traffic never passes the bridge,
// so for users in shadow and ready the bridge publishes a shadow route
// (legacywire.RouteMirror, signed by the authority like a home route,
// withdrawn when the user leaves both phases) naming itself as an
// additional mirror target. A lookup returns the user's devices plus the
// mirror; a chat v2+ sender, after its own fan-out, sends a shadow copy of
// each message to the mirror on its own protocol (legacy.MirrorMessage,
// /ferry/mirror/1.0.0): the copy never counts as delivery and a failure to
// reach the mirror never fails the send. The bridge writes each copy into
// the cloud conversation acting for the sender, idempotent by message id
// (the cloud returns the original for an id it holds, so a copy and a
// later real delivery never double), and delivers it nowhere: a mark
// written before the cloud write makes its own feed skip the event.
// Known gaps: chat v1 senders know nothing of mirrors, and a v2 sender
// fans out to the recipient's devices only, never to its own user's other
// devices, so what a shadow user sends to a user who is not mirrored is
// not seen live. Both reach the cloud by backfill and are counted there
// as missing.
//
// Backfill: when a user enters shadow or ready (and at start for those
// not done), the bridge asks one of the user's legacy devices that serves
// the history protocol (/ferry/history/1.0.0, chat v2+ devices; only a
// CapBridge peer may read, only the device's own user) for its recent
// history, oldest first, paged, at most BackfillMaxMessages of at most
// BackfillMaxAge, writes what the cloud lacks and marks the user's
// backfill complete; a run that cannot finish is retried after 30 s.
//
// Final delta: mirror copies are best effort (a copy fails while the
// cloud is unreachable, and the device does not retry it), so as a user
// enters ready, and again as they flip to the cloud, the bridge reads
// their device's history from a little before the last backfill and
// writes each message no source has written yet (the compare marks, by
// message id; the cloud takes a message once by id). The flip's hold
// waits for the flip's run, for at most flipDeltaWait (5 s), so that its
// copies land before the held messages; a copy the run reaches only after
// the hold has drained is left out (result "late"): a hole rather than a
// message out of order. It can write a message to the flipped user
// (acting for its legacy sender) but not one they sent, since the bridge
// no longer acts for them (what they sent to legacy users from a
// minute before the flip on is read back from their device as one of
// their own devices, see above), and a hole in the middle of a
// conversation is filled at its end, where the cloud's sequence puts it.
//
// Compare: every mirrored or backfilled copy is compared with the cloud
// copy (read back at the sequence the cloud answered: sender, recipient,
// text; a group message as its chat v1/v2 rendering): match, mismatch, or
// missing (the cloud had none), counted in
// gateway_bridge_shadow_compare_total and, once per message and source, in
// the user's bounded summary (ShadowStats: samples, mismatches, missing,
// backfill complete, the last mismatched ids), kept in memory for the
// campaign gates and written to the ferry_bridge_shadow KV bucket, whose
// entries expire after 30 days without a write (a user whose summary
// expired is backfilled again).
//
// bridge is the only package that imports both legacy/ and cloud/.
package bridge
