// Package agent is the pure core of a natsaga agent: what a step's handler
// is, and the branch barrier rules that make each step's effect happen once
// under at-least-once delivery. It does no I/O and imports no transport;
// package participant runs it on JetStream, and [Memory] runs it in memory
// for tests.
//
// A handler ([Handler]) runs one step's execute or compensate against a
// [Tx], a transaction over the role's state values. It returns [Reject] for
// a business rejection; any other error is transient and retried.
//
// The barrier keeps one record per branch (one step of one saga at one
// role), the wire type [messages.Record]. Given that record and a command,
// [Decide] says what to do:
//
//   - an action whose result is recorded is answered from the record and
//     not run again ([Answer]);
//   - an execute that arrives after its compensation is refused ([Refuse]);
//   - a compensation whose execute never took effect succeeds as a no-op,
//     and is recorded, so that the late execute is refused
//     ([NothingToUndo]);
//   - a compensation whose execute is still being written waits ([Wait]);
//   - otherwise the handler runs ([Run]), and [Conclude] says what its
//     return makes of the record.
package agent
