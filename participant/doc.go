// Package participant is the agent side of natsaga: a runtime that pulls a
// role's commands from JetStream and answers them ([Agent]), and a branch
// barrier with durable state ([Store]) that makes every step's effect
// exactly-once under at-least-once delivery.
//
// The barrier is dtm's idea without SQL. Each (saga, step) branch of a role
// has one record in the role's state stream, next to the role's own state
// (a budget, a fund). A step's effect and its barrier record are written in
// one atomic JetStream batch, each message guarded by the sequence it was
// read at, so:
//
//   - a redelivered execute or compensate is answered from the record and
//     not applied twice;
//   - a compensation whose execute never took effect succeeds as a no-op,
//     and is recorded, so
//   - an execute that arrives after its compensation is refused;
//   - two agent copies updating the same state never lose an update: the
//     loser of a race re-reads and runs again (optimistic concurrency).
//
// Handlers therefore must have no effect other than through the [Tx] they
// are given: they may run more than once for one command.
package participant
