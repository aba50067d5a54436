package coordinator_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestAgentsWithoutARecordStreamAreNamed: a role whose consumer takes
// commands while no record stream of the role appears (agents before wire
// version 3, which write none, and made the role's state stream) is named
// in a warning, once; a role with neither, or with a consumer alone (an
// agent of another make that answers with replies), is only waited for. When an agent of the role makes the stream
// at last (the role upgraded), the commands the old agents took are sent
// again, and answered.
func TestAgentsWithoutARecordStreamAreNamed(t *testing.T) {
	defer coordinator.SetOldAgentsAfter(200 * time.Millisecond)()
	_, url := testenv.Server(t)
	logs := newLogSink()
	defs := []saga.Definition{
		{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "old"}}},
		{Name: "t", Subject: "t", Steps: []saga.Step{{Name: "y", Role: "absent"}}},
		{Name: "u", Subject: "u", Steps: []saga.Step{{Name: "z", Role: "foreign"}}},
	}
	runCoordinator(t, url, defs, slog.New(logs))
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// What an agent of version 2 makes: the role's consumer and its
	// state stream, no record stream. It takes the saga's command.
	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.CommandConsumer("old"), FilterSubjects: messages.StepCommandSubjects("s", "x"),
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	_, err = js.CreateStream(ctx, participant.StreamConfig("old", 1))
	require.NoError(t, err)
	// What an agent of another make that answers with replies makes: the
	// role's consumer alone. Its answers reach the coordinator.
	_, err = js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.CommandConsumer("foreign"), FilterSubjects: messages.StepCommandSubjects("u", "z"),
		AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	const warning = "the role's consumer takes commands, but no agent of the role created its record stream: " +
		"agents before wire version 3 write none, and their answers do not reach this coordinator; " +
		"upgrade every copy of the role (docs/protocol.md, Upgrading to version 3)"
	require.Eventually(t, func() bool { return logs.countAttr(slog.LevelWarn, warning, "role", "old") == 1 },
		10*time.Second, 10*time.Millisecond)
	require.Zero(t, logs.countAttr(slog.LevelWarn, warning, "role", "absent"))
	require.Zero(t, logs.countAttr(slog.LevelWarn, warning, "role", "foreign"))
	id := testenv.Start(t, nc, "s", nil)
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	require.NoError(t, err)
	taken := 0
	for m := range batch.Messages() {
		require.NoError(t, m.DoubleAck(ctx))
		taken++
	}
	require.NoError(t, batch.Error())
	require.Equal(t, 1, taken, "the old agent took the command")

	// The role upgraded: its agent makes the record stream.
	testenv.Agent(t, url, participant.Options{Role: "old", Steps: []agent.Step{{Saga: "s", Name: "x", Handler: agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}})
	testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, 1, logs.countAttr(slog.LevelWarn,
		"the role's record stream is there now: its outstanding commands sent again, which its agents answer from their records where they ran",
		"commands", "1"))
	require.Zero(t, logs.countAttr(slog.LevelWarn, warning, "role", "foreign"), "a reply-only agent's role, waited for as long")
}
