package coordinator_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
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
