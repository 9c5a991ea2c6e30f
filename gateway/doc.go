// Command gateway is Ferry's one binary. `gateway agent` composes the parts
// into a running agent: the NATS JetStream engine, the migration state
// (migrate/), the legacy supernode (legacy/), the cloud service (cloud/), the
// bridge (bridge/), the admin HTTP API with /metrics and /healthz. The other
// subcommands are the admin CLI, which talks to a running agent's admin API
// (FERRY_ADDR, FERRY_TOKEN), and tools such as the legacy client simulator.
//
// Only this package reads flags, environment variables and files; the parts
// take Config structs.
package main
