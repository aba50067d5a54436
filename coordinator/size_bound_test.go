package coordinator_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestDefinitionsWhoseSagasMightNotBeStoredRefused: on a server with a
// 64 KiB payload limit, a definition of 62 steps with names of 64
// characters (their names, twice over, 8,308 bytes: past an eighth of the
// limit) is refused at start, at registration and when found stored. One
// of 61 (8,174 bytes) runs: a saga of it, started with a context near its
// bound and rejected at its last step, rolls back through its 60 other
// steps and is stored, where without the bound such a saga could take
// more than the server's payload limit and stop the coordinator.
func TestDefinitionsWhoseSagasMightNotBeStoredRefused(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536\n")
	nc := testenv.Connect(t, url)
	fits, over := wideDefs("F_", 1, 61)[0], wideDefs("O_", 1, 62)[0]
	const says = "more than an eighth of the server's payload limit, 8192"

	// At start: the coordinator stops, saying why, whether it would be
	// active or, as here beside another, stand by.
	stop := startCoordinator(t, url, parseDefs(t, jobV1))
	_, err := runRefused(t, url, coordinator.Options{Definitions: []saga.Definition{over}}, "a coordinator given a definition whose sagas might not be stored")
	require.ErrorIs(t, err, coordinator.ErrDefinitionTooLarge)
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.ErrorContains(t, err, "the names of its 62 steps take 8308 bytes")
	require.ErrorContains(t, err, says)

	// At registration: refused, nothing stored.
	log := newLogSink()
	resp := registerWithin(t, nc, wideFile(t, []saga.Definition{over}))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	require.Contains(t, resp.Error.Message, says)
	_, kv := sagaBucket(t, nc)
	require.Equal(t, []string{messages.DefinitionKey("job", 1)}, definitionKeys(t, kv), "nothing stored")
	resp = registerWithin(t, nc, wideFile(t, []saga.Definition{fits}))
	require.Nil(t, resp.Error)

	// Found stored (by a release before the bound): skipped, naming it.
	stop()
	_, err = kv.Create(t.Context(), messages.DefinitionKey(over.Name, 1), []byte(fileOf(t, []saga.Definition{over})))
	require.NoError(t, err)
	runCoordinator(t, url, parseDefs(t, jobV1), slog.New(log))
	require.Equal(t, 2, testenv.Summary(t, nc).Registered)
	require.Equal(t, 1, log.countAttr(slog.LevelError, "stored definition skipped", "key", messages.DefinitionKey(over.Name, 1)))
	require.Equal(t, 1, log.count(slog.LevelError, "stored definition skipped", says))

	// The one that fits, at its worst.
	last := fits.Steps[len(fits.Steps)-1].Name
	var steps []agent.Step
	for _, st := range fits.Steps {
		steps = append(steps, agent.Step{Saga: fits.Subject, Name: st.Name, Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				if cmd.Step == last {
					return nil, agent.Reject("the last step refuses")
				}
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}})
	}
	testenv.Agent(t, url, participant.Options{Role: "ghost", Steps: steps})
	big := messages.Context{}.MustSet("pad", strings.Repeat("p", 65536/4-512))
	id := testenv.Start(t, nc, fits.Subject, big)
	x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Len(t, x.Completed, 60)
	require.Len(t, x.Compensated, 60)
	require.Zero(t, log.count(slog.LevelError, "coordinator term ended", ""))
}
