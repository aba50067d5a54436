package coordinator_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// TestNoDefinitionsLeavesNoStraySubject: a coordinator started with no
// definitions creates the command stream with no subject, which the
// server then gives the stream's name; once a definition is registered,
// the stream's subjects are the steps' command subjects alone, as
// docs/protocol.md says, and a publish on the stream's name is kept
// nowhere.
func TestNoDefinitionsLeavesNoStraySubject(t *testing.T) {
	_, url := testenv.Server(t)
	startCoordinator(t, url, nil)
	nc := testenv.Connect(t, url)
	require.Nil(t, register(t, nc, jobV1).Error)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	s, err := js.Stream(t.Context(), messages.CommandStream)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"saga.job.open", "saga.job.open.compensate", "saga.job.file", "saga.job.file.compensate"},
		s.CachedInfo().Config.Subjects)
	_, err = js.Publish(t.Context(), messages.CommandStream, []byte("not a command"))
	require.ErrorIs(t, err, jetstream.ErrNoStreamResponse)
}
