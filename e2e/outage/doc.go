// Package outage runs natsaga's programs as separate processes through a
// nats-server outage: the server stops for ten seconds and starts again on
// the same port and store, and every process must carry on and every saga
// finish, with the ledgers exact. It has no code of its own.
package outage
