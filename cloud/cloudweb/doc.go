// Package cloudweb is the reference browser client of the cloud service: a
// plain HTML and JavaScript page (no build step) embedded in the binary and
// served by the cloud listener at "/" (cloud.Service.Handler mounts Handler).
//
// The page speaks ferry.v1 exactly as PROTOCOL.md describes it for browsers:
// it connects to /v1/ws with the subprotocol ferry.v1 and, since browsers
// cannot set headers, puts the token in the hello frame. It shows the
// conversations and messages of the inbox, sends with a client message id
// (a UUIDv7 made in the page, kept in an outbox and resent with the same id
// after a reconnect until acknowledged), sends cumulative delivered and read
// receipts, shows what the others have read, and resumes from its cursor
// after a reload: the cursor, the conversations and the outbox are kept in
// localStorage per user and device, the token in sessionStorage (this tab
// only). It reconnects with jittered backoff, honours retry_ms of a 1001
// close and stops on 4401, 4403 and 4426.
//
// It shows presence (per device, from presence_snapshot and presence
// frames) and typing of the people it talks to, publishes its own presence
// (idle when hidden or without input for a while, active again on focus
// and input) and typing (rate-limited well inside the service's limit),
// and handles calls: a device rings only when the service lists it in
// call_state.ringing, shows "answered elsewhere" when another device of
// the user answered, and the call's state until it ends.
//
// A token comes from the admin API (POST /v1/admin/cloud/tokens). It can be
// typed into the sign-in form or given in the URL fragment,
// "/#token=...&device=...", which the page removes from the address bar at
// once; a fragment never reaches the server or a Referer.
//
// The page is served from the cloud listener's own origin, so that origin
// must be in the service's AllowedOrigins (cloud.Config) or the WebSocket
// upgrade is refused with 403.
//
// The page exposes window.ferry.state() (a JSON-ready snapshot) for the
// headless-browser tests and for debugging; cdptest drives it and decodes
// that snapshot.
//
// It imports nothing of Ferry: cloud imports it, not the other way round.
package cloudweb
