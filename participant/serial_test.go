package participant_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// TestSerialRoleAppliesInStreamOrder runs two copies of a serial role whose
// step takes a random while and appends to one shared value: the commands
// take effect in the order they were published, one at a time, and each
// copy reads what the other wrote.
func TestSerialRoleAppliesInStreamOrder(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: messages.CommandStream,
		Subjects: messages.StepCommandSubjects("pay", "spend"), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)

	var mu sync.Mutex
	var applied []string
	spend := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			var log []string
			if _, err := tx.Get("log", &log); err != nil {
				return nil, err
			}
			// Handlers of uneven length: without the serial consumer a
			// later command would overtake an earlier one. The jitter is
			// the load under test, not a wait for an event.
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			mu.Lock()
			applied = append(applied, cmd.SagaID)
			mu.Unlock()
			return nil, tx.Put("log", append(log, cmd.SagaID))
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	var agents []*participant.Agent
	for i := range 2 {
		agents = append(agents, testenv.Agent(t, url, participant.Options{Role: "till", Name: fmt.Sprintf("till-%d", i), Serial: true,
			Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: spend}}}))
	}
	require.Eventually(t, func() bool {
		info, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil && info.CachedInfo().Config.MaxAckPending == 1
	}, 10*time.Second, 10*time.Millisecond, "a serial role's consumer lets one command be unacknowledged at a time")

	var want []string
	for i := range 40 {
		c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%02d", 39-i), Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(i + 1)}
		data, err := wirejson.AppendCommand(nil, &c)
		require.NoError(t, err)
		_, err = js.Publish(ctx, c.Subject(), data)
		require.NoError(t, err)
		want = append(want, c.SagaID)
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(applied) >= len(want)
	}, 30*time.Second, 10*time.Millisecond)
	mu.Lock()
	require.Equal(t, want, applied, "applied in stream order")
	mu.Unlock()

	// The last command's write lands after its handler ran: wait for it.
	require.Eventually(t, func() bool {
		return agents[0].Stats().Handled+agents[1].Stats().Handled == int64(len(want))
	}, 10*time.Second, 10*time.Millisecond)
	var log []string
	_, err = agents[0].Store().Get(ctx, "log", &log)
	require.NoError(t, err)
	require.Equal(t, want, log, "every command read what the one before wrote, whichever copy ran it")
}

func TestSerialRoleCannotHoldCommands(t *testing.T) {
	o := participant.Options{Role: "till", Serial: true, Steps: []agent.Step{{Saga: "pay", Name: "spend",
		Handler:  agent.Handler{Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }, Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }},
		Duration: func(*messages.Command) int64 { return 2 }}}}
	require.ErrorIs(t, o.Validate(), messages.ErrBadRequest)
}
