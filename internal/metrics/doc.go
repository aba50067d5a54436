// Package metrics exposes what natsaga's programs do as Prometheus metrics:
// the coordinator's sagas, steps and step latencies (through
// coordinator.Observer), each agent's counters and the ledger balances of
// the flood roles that hold money. [Server] serves them over HTTP on
// /metrics, with the program's liveness on /livez and readiness on
// /readyz. Only cmd/ packages and tests use it.
//
// docs/observe.md lists every metric and gives a scrape configuration.
package metrics
