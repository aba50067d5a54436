// Package fuzz sends hostile input to a live natsaga system: the real
// coordinator and the four flood agents on an embedded nats-server, each
// connected as its own user of deploy/nats/auth.conf. Its tests show that
// a role cannot forge another role's answer, and its wire fuzzer publishes
// seeded arbitrary and adversarial payloads on every subject a client or an
// agent may publish to, checking after each batch that every process is
// alive, the invariants that hold while sagas are in flight hold (the
// ledgers against the payments the sagas hold, every completed step's
// output its role's own record) and refused input changed nothing (the
// clock, the ledgers, the sagas it aimed at, the definitions registered:
// a definitions file that breaks a rule is refused). It has no code of its
// own.
//
// The fuzzer runs for NATSAGA_FUZZ_DURATION (a Go duration; a few seconds
// when unset, 60s in CI) from the seed NATSAGA_FUZZ_SEED (the time when
// unset; the seed is logged so a failure can be replayed).
package fuzz
