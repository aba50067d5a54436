// Package chaos holds natsaga's chaos test: thousands of flood sagas run by
// a real nats-server, coordinator and agents, each a separate OS process,
// while the test kills them with SIGKILL at seeded random moments and
// restarts them. It then checks that nothing was lost and nothing was
// applied twice. See chaos_test.go, and sim_test.go for the same with
// floodsim's deterministic run; both start, supervise and kill their
// processes through system_test.go.
package chaos
