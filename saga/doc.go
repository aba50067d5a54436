// Package saga is natsaga's engine: a pure state machine that drives sagas.
//
// A saga is an ordered list of steps, each run by an agent playing a role and
// each with a compensation that undoes it. The [Engine] is fed inputs (a saga
// start, an agent's reply, a simulation tick, a wall-clock wake-up) and
// answers each with an [Outbox]: the commands to send, the events to publish
// and the sagas whose state changed, for a durable runtime to store. It does
// no I/O, starts no goroutines and reads no clock, so its tests are tables
// and the NATS runtime around it (package coordinator) stays thin.
//
// The engine assumes at-least-once delivery: every command carries the saga
// id, step, action, attempt and a per-saga sequence number, a reply is
// matched against the one command its saga has outstanding, and a duplicate,
// late or stale reply is reported with [ErrStale] and changes nothing.
//
// Time is simulation time. Ticks advance the clock and are the only thing
// that times a saga out; a tick that expires nothing costs O(1), and one that
// expires E sagas costs O(E). Wall-clock time appears only in the backoff
// between retries of a transient error.
//
// A simulation run ranks its sagas ([StartOptions]): the commands of ranked
// sagas are released in rounds, each round whole and in rank order once
// every command of the round before it is answered, so that steps of
// different sagas that contend for one agent's state take effect in the
// same order whatever the timing (docs/simulation.md). A working command
// declares the tick of its final answer, and [messages.Summary].Due counts
// what is due by the current tick, so a driver knows when a tick is quiet.
//
// Definitions are data: [ParseFile] reads a JSON definitions file
// (docs/protocol.md, "Definitions files") and refuses a bad one with a
// [*FieldError] naming the definition and the field. Every definition has a
// version; [Engine.Update] registers a new one while sagas run, and a saga
// runs to its end by the version it started with ([Execution].Version).
package saga
