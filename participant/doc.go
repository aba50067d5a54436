// Package participant is the agent side of natsaga on JetStream: a runtime
// that pulls a role's commands and answers them ([Agent]), and a store
// ([Store]) that keeps the role's state and branch barrier records in the
// role's state stream. The barrier rules themselves, and the handler types,
// live in package agent ([agent.Decide], [agent.Conclude]); the store
// applies them to records it reads and writes on JetStream.
//
// Each (saga, step) branch of a role has one record in the role's state
// stream, next to the role's own state (a budget, a fund, a household).
// Every write is a single JetStream message guarded by the sequence it was
// read at, so two agent copies updating the same state never lose an
// update: the loser of a race re-reads and runs again (optimistic
// concurrency).
//
// An action that changes no state records its result in one write. An
// action that changes one state value takes three: it claims its branch
// (a "pending" record, which also makes a racing compensation wait), writes
// the value in an envelope that names the action and its output, and
// records the result. A crash between two of them is repaired by the
// redelivered command: it finds its claim, and in the value's envelope
// whether its write happened. An action may change at most one value: one
// that changes more is answered with an error and records nothing.
//
// Handlers therefore must have no effect other than through the [agent.Tx] they
// are given: they may run more than once for one command, and must read the
// same keys each time.
//
// A role whose state is one key that every saga touches (a budget) runs
// serial ([Options].Serial): one copy at a time is pinned to the role's
// commands and applies them one at a time, in the order they were
// published, so that a simulation's commands, released in rank order, take
// effect in rank order (serial.go says how a crash keeps that order). The
// pinned copy commits a run of the executes it holds together, in four
// rounds of writes rather than three writes per command (batch.go).
package participant
