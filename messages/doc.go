// Package messages is natsaga's wire protocol: the JSON payloads that travel
// between the coordinator, the agents and the simulation driver, and the NATS
// subjects they travel on.
//
// Every subject is built in this package and nowhere else (see subjects.go),
// and every payload carries its version in its "v" field: [Version] (1), or
// [BatchVersion] (2) for the batches of commands and events, each of whose
// items is a version-1 payload.
// docs/protocol.md describes the same protocol for authors of agents written
// in other languages.
//
// The package depends on nothing but the standard library, so agents, the
// engine and tools can all import it.
package messages
