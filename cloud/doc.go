// Package cloud is the cloud side of Ferry: the WebSocket service cloud
// devices and the bridge connect to (sessions, the conversation log, per-user
// inboxes with multi-device sync, receipts) and a Go client for it. The
// frames themselves live in cloudwire; PROTOCOL.md documents them.
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
//   - stream CLOUD_INBOX, subjects cloud.inbox.<user>: every user's inbox,
//     the synced history. A message is written to the inboxes of its sender
//     and its recipient (so every device of both sees it); a receipt to the
//     inboxes of the message's sender and of the receipt's author.
//     Nats-Msg-Id is "<msg id>:<user>:<kind>", so redoing a write after a
//     crash stores nothing new. An event's cursor is its stream sequence.
//     User ids are mapped to one subject token each: [A-Za-z0-9_-] as is,
//     every other byte as =XX.
//   - key-value bucket cloud_sends: message id to the original ack (conv,
//     seq, time) plus sender and recipient. It is checked before any write,
//     so a resend returns the original ack with Duplicate set, across
//     reconnects and restarts; receipts use it to find the message.
//
// A send is acknowledged to the client only after the log append, both inbox
// writes and the idempotency record are acknowledged by JetStream, in that
// order. A crash between the steps is repaired by the client's resend: the
// idempotency record is missing, so the send runs again; the log append
// finds the message (as the conversation's last message, or by Nats-Msg-Id
// within the 10-minute duplicate window) and returns the original instead of
// appending, and the inbox writes are deduplicated.
//
// Retention is unlimited for now; limits and the receipts "up to N" state
// are later work.
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
// Each session has one writer goroutine and a bounded queue; a session that
// cannot keep up is closed with 4429 and resumes from its cursor.
//
// # Goroutines
//
// Per session: the HTTP handler's goroutine (reader), a writer and a sync
// goroutine, all ended by the connection closing; Shutdown closes every
// session. Per node: the live feed, inside Run. Per client: a reader and a
// writer, ended by Close or the connection.
package cloud
