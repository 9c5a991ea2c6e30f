// Package migratestore keeps Ferry's per-user migration records in a NATS
// JetStream KV bucket, the one durable copy shared by every agent, and feeds
// each agent's in-memory migrate.State from a watch of that bucket.
//
// Every change is a compare-and-set on the key's revision: Transition reads a
// record, applies migrate.Apply and writes it back only if nobody wrote in
// between, retrying a bounded number of times. The key is the user id and the
// value the JSON of migrate.User; the Revision field is the KV revision and
// is filled in on read.
//
// TransitionMany is the same compare-and-set for many users at once: it reads
// from the State, publishes every write asynchronously to the key's subject
// ($KV.<bucket>.<key>) with the expected last subject sequence, keeping a
// bounded number in flight (pipelined, no round trip per window), puts the
// acknowledged records into the State in transactions of at most 500, and
// sends a user whose compare-and-set lost back through Transition. The watch
// recognises those records by key and revision and skips them, instead of
// decoding and applying each a second time. The campaign driver moves a
// tick's users with it.
//
// TransitionManyAudited, what the campaign driver calls, is TransitionMany
// with an audit event per op, written to the audit stream as an intent
// before the op's compare-and-set is sent (pipelined the same way): the
// intents of up to 256 moves go in one batch intent message, the records
// then carry its stream sequence (migrate.User.Audit) and the batch, per
// user, the Audit of the record it replaces. TransitionAudited does the
// same for one change with an intent of its own (the admin API's manual
// changes). A transition can
// therefore never commit without its event, and Audit.Query tells the
// intents that landed from those that did not (a lost compare-and-set, a
// writer killed in between) by following that chain from the user's
// current record; see Audit for why this design and not a reconciliation
// after the fact. TestAuditSurvivesKill SIGKILLs a writer several times and
// compares the log with every revision the bucket kept. Changes stored on
// other records are audited first the same way, each on a chain of its own
// (the hdrChain header): a campaign's and the freeze's in the campaign
// bucket (Campaigns.ModifyAudited, SetFreezeAudited), a platform's version
// policy in the policy bucket (Policies.ModifyAudited) and a legacy
// device's revocation in the revocation bucket (Revocations.RevokeAudited);
// each record keeps its intent's sequence (Audit) and operation id
// (LastOp), so a change repeated with the same op id writes nothing.
//
// A record the watch cannot decode is not skipped silently: the State shows
// the user held with reason ReasonCorruptRecord (the last good phase kept as
// Prior, so the inbound home does not change) until a valid record replaces
// it, and CorruptRecords counts them for the agent's metric.
//
// Durability is the engine's: with the embedded engine an acknowledged write
// is in the store's files before the ack and survives kill -9 of the agent
// (see gateway/engine). The bucket keeps one revision per key.
//
// migratestore may import the migrate domain and the NATS client; it must not
// import libp2p, gorilla/websocket, net/http or prometheus itself, nor any of
// Ferry's bridge, legacy, cloud or gateway packages. (The NATS client brings
// net/http in for its WebSocket option; that is the client's business.)
// TestDeps enforces this.
package migratestore
