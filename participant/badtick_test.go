package participant_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
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

// servingAgent runs a coordinator of saga s (one step, x, of role r) and
// an agent of r whose handlers do nothing, logging to logs, and returns
// them once it serves, with a connection.
func servingAgent(t *testing.T) (*participant.Agent, *testenv.SyncBuffer, *nats.Conn) {
	t.Helper()
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	logs := &testenv.SyncBuffer{}
	a := testenv.Agent(t, url, participant.Options{Role: "r", Logger: slog.New(slog.NewTextHandler(logs, nil)),
		Steps: []agent.Step{{Saga: "s", Name: "x", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent serving") }, 10*time.Second, 5*time.Millisecond)
	return a, logs, testenv.Connect(t, url)
}

// TestBadTicksSaidOnce floods natsaga.tick, which anyone allowed may
// publish on, with ticks that do not decode and ticks too far ahead: the
// agent says the first of each kind, and stays quiet about the others for
// a minute, and a good tick after them still moves its clock.
func TestBadTicksSaidOnce(t *testing.T) {
	a, logs, nc := servingAgent(t)
	for i := range 50 {
		data := []byte("not a tick")
		if i%2 == 1 {
			data = []byte(`{"v":1,"tick":999999999999}`)
		}
		require.NoError(t, nc.Publish(messages.TickSubject, data))
	}
	require.NoError(t, nc.Publish(messages.TickSubject, []byte(`{"v":1,"tick":5}`)))
	require.Eventually(t, func() bool { return a.Tick() == 5 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, strings.Count(logs.String(), `msg="bad tick"`), logs.String())
	require.Equal(t, 1, strings.Count(logs.String(), `msg="tick ignored"`), logs.String())
}

// TestCommandTicksBounded: a command's tick moves the agent's clock, as the
// coordinator's reached it, but one too far ahead does not (it is said
// once), and a command with a negative tick is malformed.
func TestCommandTicksBounded(t *testing.T) {
	a, logs, nc := servingAgent(t)
	command := func(id string, tick int64) []byte {
		return []byte(fmt.Sprintf(`{"v":1,"saga_id":%q,"saga":"s","step":"x","action":"execute","attempt":1,"seq":1,"tick":%d,"context":{}}`, id, tick))
	}
	for i := range 3 {
		require.NoError(t, nc.Publish(messages.CommandSubject("s", "x", messages.Execute), command(fmt.Sprintf("far-%d", i), 1<<40)))
	}
	require.NoError(t, nc.Publish(messages.CommandSubject("s", "x", messages.Execute), command("negative", -3)))
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "dropping malformed command") &&
			strings.Contains(logs.String(), `msg="command tick ignored"`)
	}, 10*time.Second, 5*time.Millisecond, "%s", logs)
	require.NoError(t, nc.Publish(messages.CommandSubject("s", "x", messages.Execute), command("near", 7)))
	require.Eventually(t, func() bool { return a.Tick() == 7 }, 10*time.Second, 5*time.Millisecond, "a command's tick moves the clock")
	require.Equal(t, 1, strings.Count(logs.String(), `msg="command tick ignored"`), "%s", logs)
	require.Contains(t, logs.String(), "command tick -3 is negative")
}

// TestTickDeliveredByAConsumerIgnored: a user allowed a consumer on any
// stream may have it deliver a tick it stored to natsaga.tick; such a
// message carries a delivery's reply subject ($JS.ACK.…), and no agent
// moves its clock by it.
func TestTickDeliveredByAConsumerIgnored(t *testing.T) {
	a, logs, nc := servingAgent(t)
	testenv.DeliverFromStream(t, nc, messages.TickSubject, []byte(`{"v":1,"tick":9}`))
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `msg="tick not from a driver ignored"`) }, 10*time.Second, 5*time.Millisecond)
	require.NoError(t, nc.Publish(messages.TickSubject, []byte(`{"v":1,"tick":5}`)))
	require.Eventually(t, func() bool { return a.Tick() == 5 }, 10*time.Second, 5*time.Millisecond, "at the driver's tick, not 9")
}
