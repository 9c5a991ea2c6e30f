// Package legacy is the legacy peer-to-peer overlay on go-libp2p: the
// network authority that certifies devices, host construction with explicit
// resource limits, the supernode directory (server and client) with
// certificate revocations and an offline store, chat v1 and v2, a legacy
// device (client), and a simulator that runs a population of devices.
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
// A user may have several devices, each with its own certificate. The
// authority can revoke one (Authority.Revoke): a supernode learns it through
// the directory's revoke op and from then on refuses the device at
// registration and lookup and hides its record; devices and bridges fetch
// the list (revocations op, Device.SyncRevocations) and their chat handlers
// refuse revoked peers at the hello and at every frame. Every directory op
// but an unknown one checks the sender's certificate, route and revoke
// submissions included (the record's own authority signature is what makes
// it valid; the certificate says who sent it).
//
// # Chat versions
//
// Each chat version is its own protocol ID. Openers list every version they
// speak, highest first (ChatProtocolIDs), and multistream-select settles on
// the highest both ends speak. Chat v2 adds typed frames: read receipts,
// typing, presence subscribe/publish; and a v2 sender fans a message out to
// every device of the recipient. Degradation towards a v1 peer: a message
// goes out as a v1 frame, any v2-only signal is not sent at all
// (ErrNotSupported), so a v1 peer never receives a frame it cannot parse.
//
// # Offline store
//
// When no device of the recipient is live (none registered, or every dial
// failed) and no route exists, the sender hands the message to its
// supernode (store op), which holds it in a bounded per-user queue with an
// expiry, and hands it over, oldest first, in the answer to the next
// registration of a device of that user that asks for it (Device.Register
// does). The device's duplicate filter makes the delivery once.
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
