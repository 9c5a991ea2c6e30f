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
// headless-browser test and for debugging.
//
// It imports nothing of Ferry: cloud imports it, not the other way round.
package cloudweb
