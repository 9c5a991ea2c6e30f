// Package legacy is the legacy peer-to-peer overlay on go-libp2p: the
// network authority that certifies devices, host construction with explicit
// resource limits, the supernode directory (server and client), chat v1, a
// legacy device (client), and a simulator that runs a population of devices.
//
// It is an adapter: the bytes on the wire are defined in package legacywire,
// and this package converts between them and libp2p (peer IDs, multiaddrs,
// streams). It never imports the cloud side (package cloud and below); the
// bridge joins the two worlds.
//
// # Trust
//
// Every stream checks the certificate of its remote peer against the
// authority key: a certificate names a peer ID, and it must be the peer at the
// other end of the connection (Noise authenticates that ID). So one peer can
// never speak for another user, except a peer whose certificate carries
// legacywire.CapBridge, which may send on behalf of users whose
// authority-signed route record names it.
//
// # Directory
//
// Supernodes run a small directory protocol of our own
// (legacywire.DirectoryProtocolID) rather than a Kademlia DHT: the walking
// skeleton has one supernode, registrations are certificate-checked and
// expire unless refreshed, and authority-signed route records (ordered by a
// sequence number) send a user's traffic to the bridge. Replication among
// supernodes, or a DHT with a private protocol prefix, comes later behind the
// same Directory client.
//
// # Deadlines and lifecycle
//
// Every stream gets deadlines (named constants below) and is closed or reset
// on every path. Long-running parts (Supernode) have Run(ctx) and return after
// their goroutines exit; stream handlers are bounded by their deadlines and by
// the host's lifetime.
package legacy
