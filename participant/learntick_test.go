package participant_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestSummaryDeniedIsAskedOnce: an agent whose NATS user may not publish
// natsaga.summary (permissions written before agents asked it) asks once,
// says so, and does not ask again: each request is a permissions violation
// the server and the agent's error handler log.
func TestSummaryDeniedIsAskedOnce(t *testing.T) {
	ns, _ := testenv.ServerWith(t, `jetstream: enabled
authorization { users = [
  {user: admin, password: a}
  {user: agent, password: b, permissions: {publish: {deny: ["natsaga.summary"]}}}
]}
`)
	as := func(user string) string { return strings.Replace(ns.ClientURL(), "nats://", "nats://"+user+"@", 1) }
	testenv.Coordinator(t, as("admin:a"), []saga.Definition{{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	var violations atomic.Int32
	nc, err := nats.Connect(as("agent:b"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { violations.Add(1) }))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	var logs testenv.SyncBuffer
	a, err := participant.New(nc, participant.Options{Role: "r", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Steps: []agent.Step{{Saga: "s", Name: "x", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "the clock is not learnt from natsaga.summary") },
		15*time.Second, 10*time.Millisecond, "the agent never gives up asking the summary")
	require.EqualValues(t, 1, violations.Load())
	cancel()
	require.NoError(t, <-done)
}
