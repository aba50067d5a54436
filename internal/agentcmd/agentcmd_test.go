package agentcmd_test

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/internal/testenv"
)

// TestHealthServedWhileConnecting runs an agent program against an
// address where no NATS server answers: while it waits to connect, /livez
// answers 200 and /readyz 503, saying so.
func TestHealthServedWhileConnecting(t *testing.T) {
	getenv := func(string) string { return "" }
	c, err := agentcmd.ParseFlags(flood.Contractor, []string{"-nats", "nats://127.0.0.1:1", "-connect-wait", "1m",
		"-metrics-addr", "127.0.0.1:0", "-log-format", "json"}, getenv, io.Discard)
	require.NoError(t, err)
	var logs testenv.SyncBuffer
	log, err := cli.NewLogger(&logs, "info", c.Observe.LogFormat)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agentcmd.Run(ctx, c, log) }()
	defer func() {
		cancel()
		<-done
	}()
	testenv.RequireConnecting(t, testenv.ServedAddr(t, &logs))
}
