// Package messages is natsaga's wire protocol: the JSON payloads that travel
// between the coordinator, the agents and the simulation driver, and the NATS
// subjects they travel on.
//
// Every subject is built in this package and nowhere else (see subjects.go),
// and every payload carries the protocol version [Version] in its "v" field.
// docs/protocol.md describes the same protocol for authors of agents written
// in other languages.
//
// The package depends on nothing but the standard library, so agents, the
// engine and tools can all import it.
package messages
