// Package coordinator runs natsaga's engine (package saga) on NATS
// JetStream: it is the edge where the pure engine meets the transport.
//
// One goroutine owns the engine. Inputs (agent replies pulled from the
// durable reply consumer, agents' barrier records pulled from each role's
// record stream, and start, tick, query and retry requests) are queued to
// it; it applies a batch of them, then commits the batch in this order:
//
//  1. every saga whose change must be stored is written: an active one to
//     the saga log [messages.SagaLogStream], with the others the batch
//     stores, many a message (sagalog.go); one that ended to the KV
//     bucket [messages.SagaBucket], guarded by its last revision; the
//     clock to the bucket when it moved; meanwhile the
//     commands of sagas that only moved on to their next step on an
//     agent's barrier record, which are not stored, are published
//     (durability.go says which changes are stored, and why);
//  2. the other commands the batch produced are published, those of ranked
//     sagas last and in the order the engine released them (rank order);
//  3. events are published; inputs are acknowledged and requests answered.
//
// A crash at any point loses nothing: an input is acknowledged only after
// its effects are stored or can be replayed. A restarted coordinator
// reloads every saga from the log and the bucket, brings each executing saga up to the
// step in flight from its agents' barrier records (the steps it advanced
// without storing them), and only then sends each active saga's
// outstanding command again; an agent's barrier (package participant)
// answers a command it has already applied with the recorded result. For
// ranked sagas it sends again only the round in progress, in rank order.
// An answer that comes before its time (its round is not released, or its
// working command's declared tick has not come) is negatively acknowledged
// with a short delay and applied when it is offered again.
//
// Only one coordinator drives the sagas of a bucket: it holds a lease
// (a key with a TTL, renewed every third of it). Another coordinator on the
// same bucket stands by until the lease is released or expires. A
// coordinator that loses its lease, or whose write fails (a server
// restarting), ends that term, stands by and recovers again, as a
// restarted process would; it never exits for one bad message. Finished
// sagas stay in the bucket for Options.Retention, then expire; active and
// failed ones never do.
//
// Requests that the engine cannot answer from memory (a start with a
// client-chosen id, the status or retry of a saga no longer held, a list of
// finished sagas) read the bucket on goroutines that the coordinator owns
// (reads.go): at most [MaxBucketReads] at once, a request beyond answered
// busy, and each term cancels its reads and waits for them as it ends.
//
// Definitions registered at run time (register.go, the natsaga.register
// request) are checked, stored in the bucket one version a key, and then
// registered with the engine, on the engine's goroutine; a coordinator
// that recovers the bucket registers them again before it restores the
// sagas that run by them.
package coordinator
