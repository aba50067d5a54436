// Package perms tests natsaga's per-role NATS permissions, the users in
// deploy/nats/auth.conf, on an embedded nats-server: each role may publish
// and subscribe only what it needs, and the real coordinator and agents run
// sagas to completion under them. It has no code of its own.
package perms
