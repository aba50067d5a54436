// Package participant is the agent side of natsaga on JetStream: a runtime
// that pulls a role's commands and answers them ([Agent]), and a store
// ([Store]) that keeps the role's state in the role's state stream and its
// branch barrier records in the role's record stream. The barrier rules
// themselves, and the handler types, live in package agent
// ([agent.Decide], [agent.Conclude]); the store applies them to records it
// reads and writes on JetStream.
//
// Each state value (a budget, a fund, a household) is a message of its own
// in the state stream, and every write of one is guarded by the sequence
// it was read at, so two agent copies updating the same state never lose
// an update: the loser of a race re-reads and runs again (optimistic
// concurrency). The records of the (saga, step) branches are a log
// (internal/kvlog): each message holds the records a copy committed at
// once, every copy reads the log and follows it, and a record is written
// expecting the revision its branch was read at, checked by the copy
// against a log the server guarantees complete. So a record is the same
// compare-and-swap per branch, at a message for many.
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
// undoes its own write with the compensation's handler (the undo of a
// branch, in store.go). An action may change at most one value: one that changes
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
// pinned copy commits a run of the executes it holds together: the
// records of those that only read in one message, the value once, then the
// records of those that wrote in one message (batch.go).
package participant
