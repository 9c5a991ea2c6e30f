// Package migrate owns the per-user migration state machine of Ferry: the
// phases a user moves through on the way from the legacy overlay to the cloud
// (legacy, shadow, ready, cloud, finalized, plus held and failed), the table
// of allowed transitions with the pure function that applies one, and State,
// the in-memory indexed view of every user's record on go-memdb that route
// decisions, queries and metric gauges read from.
//
// Where records are kept durably is not this package's business: the
// migratestore sub-package keeps them in a JetStream KV bucket and feeds
// State from a watch.
//
// migrate is pure domain. It must not import, even transitively, any
// transport or engine: no libp2p, no gorilla/websocket, no net/http, no
// prometheus, no NATS. TestDeps enforces this.
package migrate
