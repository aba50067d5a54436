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
package saga
