package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/saga"
)

// TestRestartLeavesTheStreamsAlone: a coordinator that starts where its
// streams and bucket are already as it asks does not update them (an
// update races, in nats-server, with agents creating their consumers on
// the same streams: internal/streams).
func TestRestartLeavesTheStreamsAlone(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	opts := coordinator.Options{Definitions: flood.Definitions()}
	runUntilStopped(t, url, opts)()
	sub, err := nc.SubscribeSync("$JS.API.STREAM.UPDATE.>")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	runUntilStopped(t, url, opts)()
	require.NoError(t, nc.Flush())
	m, err := sub.NextMsg(100 * time.Millisecond)
	if err == nil {
		t.Fatalf("a restart updated a stream: %s %s", m.Subject, m.Data)
	}
	require.ErrorIs(t, err, nats.ErrTimeout)
}

// TestReplicasOnASingleServerStopRun asks for three copies of natsaga's
// streams on one server: Run returns the server's refusal, saying so, and
// is never ready, instead of starting term after term while its health
// says ready.
func TestReplicasOnASingleServerStopRun(t *testing.T) {
	_, url := testenv.Server(t)
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: []saga.Definition{twoSteps}, Replicas: 3})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = c.Run(ctx)
	require.ErrorContains(t, err, "replicas > 1 not supported in non-clustered mode")
	require.NoError(t, ctx.Err(), "Run returned at once, not when the wait ran out")
	require.ErrorIs(t, c.Health(), coordinator.ErrNotReady)
}
