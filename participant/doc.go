// Package participant is the agent side of natsaga: a runtime that pulls a
// role's commands from JetStream and answers them ([Agent]), and a branch
// barrier with durable state ([Store]) that makes every step's effect
// exactly-once under at-least-once delivery.
//
// The barrier is dtm's idea without SQL. Each (saga, step) branch of a role
// has one record in the role's state stream, next to the role's own state
// (a budget, a fund, a household). Every write is a single JetStream
// message guarded by the sequence it was read at, so:
//
//   - a redelivered execute or compensate is answered from the record and
//     not applied twice;
//   - a compensation whose execute never took effect succeeds as a no-op,
//     and is recorded, so
//   - an execute that arrives after its compensation is refused;
//   - two agent copies updating the same state never lose an update: the
//     loser of a race re-reads and runs again (optimistic concurrency).
//
// An action that changes no state records its result in one write. An
// action that changes one state value takes three: it claims its branch
// (a "pending" record, which also makes a racing compensation wait), writes
// the value in an envelope that names the action and its output, and
// records the result. A crash between two of them is repaired by the
// redelivered command: it finds its claim, and in the value's envelope
// whether its write happened. An action that changes several values writes
// them and its record in one atomic batch instead.
//
// Handlers therefore must have no effect other than through the [Tx] they
// are given: they may run more than once for one command, and must read the
// same keys each time.
package participant
