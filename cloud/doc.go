// Package cloud is the cloud side of Ferry: the WebSocket service cloud
// devices and the bridge connect to (sessions, the conversation log, per-user
// inboxes with multi-device sync, receipts) and a Go client for it: Client
// is one connection, Link a session that reconnects, resumes from its
// cursor and resends what was not acknowledged. The frames themselves
// live in cloudwire; PROTOCOL.md documents them.
//
// It must not import legacy/ (the overlay) or bridge/: the bridge joins the
// two worlds, not this package. It speaks cloudwire types at its edges.
//
// # Storage
//
// Everything that must survive a restart is in JetStream (file storage,
// Config.Replicas replicas; durability follows the engine's sync policy: an
// acknowledged write has reached the store's files before the ack and
// survives kill -9 of the agent):
//
//   - stream CLOUD_CONV, subjects cloud.conv.<conv>: the conversation log.
//     Each message carries a dense per-conversation sequence (1, 2, 3...),
//     assigned under a per-conversation lock on this node and guarded across
//     nodes by Nats-Expected-Last-Subject-Sequence (a conflict rereads the
//     head and retries). Nats-Msg-Id is the client message id.
//
//   - stream CLOUD_INBOX, subjects cloud.inbox.<user>: every user's inbox,
//     the synced history. A message is written to the inboxes of its sender
//     and its recipient (so every device of both sees it); a receipt to the
//     inboxes of the message's sender and of the receipt's author.
//     Nats-Msg-Id is "<msg id>:<user>:<kind>", so redoing a write after a
//     crash stores nothing new. An event's cursor is its stream sequence.
//     User ids are mapped to one subject token each: [A-Za-z0-9_-] as is,
//     every other byte as =XX.
//
//   - key-value bucket cloud_sends: message id to the original ack (conv,
//     seq, time) plus sender and recipient. It is checked before any write,
//     so a resend returns the original ack with Duplicate set, across
//     reconnects and restarts; receipts use it to find the message.
//
//   - key-value bucket cloud_receipts: cumulative receipts, key
//     "<conv token>.<user token>", value how far delivered and read reach
//     for the user and for each of its devices. A cumulative receipt first
//     writes its receipt_up_to event to every member's inbox (Nats-Msg-Id
//     derived from conversation, user, device, status and sequence), then
//     raises the state by compare-and-set; a resend at the same watermark
//     repeats the (deduplicated) event write, which repairs a crash in
//     between.
//
//   - key-value bucket cloud_groups: every group's name and members as of
//     its last change (and that change's sequence). A change is appended to
//     the group's log under the conversation's lock (with the member list
//     after it), written to the inboxes of the members before and after it,
//     then the state is raised by compare-and-set to it, then the
//     idempotency record is stored; a resend after a crash redoes the
//     missing steps. Group messages go to the members read under the same
//     lock, so on one node no message is fanned out with a stale member
//     list.
//
//   - key-value bucket cloud_member: key "<user token>.<conv token>" for
//     every member of every conversation, written when a node first appends
//     to a one-to-one conversation and on group changes. A presence change
//     lists its user's keys to find the people to tell. Keys are listed
//     from the bucket stream's subjects (one stream info request), not
//     with a consumer per listing as ListKeysFiltered does: under a
//     reconnect storm those ran into the server's consumer limit.
//
// Presence and typing are live only: frames published on core NATS
// subjects cloud.live.<user token> (encoded once, one publish per
// recipient), which every node subscribes to in Run and hands to its
// sessions of that user without blocking.
//
//   - key-value bucket cloud_devices: key "<user token>.<device token>",
//     a device's last activity (session opened, presence active, a send at
//     most every 10 s), whether it is online and its presence state and
//     since when, so that a call rings the device in use first and a
//     session opening gets everyone's current presence (presence_snapshot).
//     It also names the node that wrote it.
//
//   - key-value bucket cloud_nodes (in memory, entries expire after
//     Config.NodeLease): one key per live node, renewed every third of
//     the lease. An online device whose node has no key is offline; the
//     surviving nodes mark such devices offline by compare-and-set and
//     send their offline presence (presence.go, runLease).
//
// Calls are in memory on the node whose session sent the invite: it runs
// the call's timers (ring delay, ring timeout) and answers the other
// requests on the core NATS subject cloud.call.<call id>, from sessions on
// any node. Call states go out like presence. A call does not survive the
// restart of its node (Shutdown ends them with "unavailable"); each state
// is also recorded in the key-value bucket cloud_calls (key the call id,
// value the state and the owner's node id; deleted when the call ends), so
// that a call id starts one call across nodes (created by compare-and-set)
// and, when the owner dies without Shutdown, the nodes that outlive its
// lease end its calls as "unavailable" for both parties (runLease). The
// calls the bridge places (BridgeCalls) are not recorded.
//
// History pages read the conversation log directly (JetStream direct get,
// next message by subject): a conversation's sequences grow with log
// positions, so the position of sequence N is found by binary search in
// O(log n) reads, without an index, and a page is read forwards from it.
// A one-to-one conversation's members are its last message's sender and
// recipient.
//
// A send is acknowledged to the client only after the log append, both inbox
// writes and the idempotency record are acknowledged by JetStream. It waits
// for two round trips: the idempotency lookup runs alongside the log
// append (a copy appended for a message id already recorded is deleted
// before any inbox write), and the record is written alongside the inbox
// writes. A crash between the steps is repaired by the client's resend:
// when the record is missing, or younger than 5 minutes, the send runs
// again; the log append finds the message (as the conversation's last
// message, or by Nats-Msg-Id within the 10-minute duplicate window) and
// returns the original instead of appending, and the inbox writes are
// deduplicated (store.send).
//
// Retention: Config.Retention bounds the log (CLOUD_CONV: max age, max
// bytes) and the inboxes (CLOUD_INBOX), oldest first; DefaultRetention
// keeps 1 GiB of log whatever its age and 30 days or 1 GiB of inboxes. A
// device whose cursor is older than its inbox's first event syncs what
// remains and finds the gaps by sequence; the log's is the history
// that paging can reach. Ages below the 10-minute duplicate window are
// refused, so that redoing an interrupted write stays idempotent. The
// idempotency records (cloud_sends) expire after Retention.SendsMaxAge (30
// days by default): a resend of an older message id is a new message.
// The other key-value buckets hold one entry per conversation, member or
// device and are not bounded.
//
// # Delivery
//
// Each node runs one ordered consumer over cloud.inbox.> (Run), starting at
// the inbox position reached when New returned, and a hub dispatches every
// event to the node's sessions: user sessions get their user's inbox,
// bridge sessions every inbox (they carry the legacy users' traffic).
//
// A new session registers with the hub first (live events are buffered),
// then reads its head (the last event of its inbox), sends welcome, replays
// the inbox from hello.cursor+1 up to the head, sends synced with the cursor
// reached, and flushes the buffered events after that cursor. Every event
// after the head reaches the hub after the registration, so the replay and
// the live path meet without a gap or a duplicate.
//
// Admission: a session holds one of Config.MaxHandshakes slots from the
// upgrade to the end of its initial sync (hello, admission checks, head,
// replay: what costs the engine in a reconnect storm). With every slot
// taken, or Config.MaxSessions sessions on the node, a handshake waits
// in a bounded line for the next free slot, or for a session to end
// (admission.go); beyond the
// line, or after its wait, it is answered 503 before the upgrade with a
// Retry-After sized by how fast slots free up, and counted
// (gateway_cloud_handshakes_total{result="shed"}); open sessions are
// never dropped to make room.
//
// An inbox record that cannot be read or encoded goes out as a
// placeholder event at its cursor (counted in
// gateway_cloud_events_placeholder_total), so the device's cursor and
// history stay consistent instead of silently skipping it.
//
// Each session has a bounded queue, drained by a writer goroutine that
// exists only while frames are waiting; a session that cannot keep up is
// closed with 4429 and resumes from its cursor. An idle session holds no
// queue buffer and no write buffer (gorilla's WriteBufferPool), reads
// through a 1 KiB buffer, and keeps nothing of the HTTP server's request
// state: the handler returns once the session's goroutine is started.
//
// # Goroutines
//
// Per session: a reader (runSession, started by the HTTP handler, which
// then returns), the only one an idle session has; a writer while frames are queued; a sync goroutine until
// the initial sync is done; a ping timer (its function runs only when it
// fires); and, once closing starts, a closer that flushes, sends the close
// frame and waits for the peer's. All end with the connection; Shutdown
// closes every session. Per node: the live feed, inside Run, and the NATS subscription of
// live frames (presence, typing, call states) that Run holds; per call
// owned: a NATS subscription and its two timers, ended with the call. Per
// client: a reader and a writer, ended by Close or the connection. Per
// Link: Run's goroutine, the current client's two, and one forwarding its
// live frames while connected.
package cloud
