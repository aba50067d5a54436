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
// action that changes one state value takes two: the value, in an envelope
// that names the action and its output, then the record. Between reading
// the value and writing it, the action reads its branch: a run of the same
// action recorded before is found there, even once a later write has
// dropped it from the envelope. A crash between the two writes is repaired
// by the redelivered command, which finds itself in the envelope and
// records the output named there. A compensation that finds no record,
// and so nothing to undo, may be recorded between an execute's two writes:
// that execute then finds the compensation where its record should go, and
// undoes its own write with the compensation's handler (store.go,
// [branch.undo]). An action may change at most one value: one that changes
// more is answered with an error and records nothing.
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
// pinned copy commits a run of the executes it holds together: a record
// for each and the value once, in three rounds of writes (batch.go).
package participant
