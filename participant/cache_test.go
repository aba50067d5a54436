package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// counting raises, in its execute, the counter of the household its
// command names ("count.<household>"), and lowers it in its compensation.
func counting(key func(*messages.Command) string) agent.Handler {
	add := func(tx agent.Tx, cmd *messages.Command, by int) error {
		var n int
		if _, err := tx.Get(key(cmd), &n); err != nil {
			return err
		}
		return tx.Put(key(cmd), n+by)
	}
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			return messages.Context{}, add(tx, cmd, 1)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			return add(tx, cmd, -1)
		},
	}
}

// TestCachedValuesAndSettledListsBounded: a store holds in memory the
// values of at most its bound of keys, and as many lists of settled
// actions, however many keys its clients bring (one per household). A
// value let go is read from the server again: a counter per household,
// raised by one saga, then by another once the first's value was let go,
// and lowered by the second's compensation, ends at 1; an execute
// delivered again is absorbed. So in a copy that checks what it read from
// its cache, and in one that is its role's only writer (a serial copy,
// which trusts it). A key written all along (the ledger) keeps its list:
// its envelope names no action but the last that wrote it.
func TestCachedValuesAndSettledListsBounded(t *testing.T) {
	const bound, households = 8, 40
	participant.SetMaxCached(t, bound)
	_, url := testenv.Server(t)
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			ctx := context.Background()
			role := "homes"
			if serial {
				role = "serialhomes"
			}
			nc := testenv.Connect(t, url)
			s, err := participant.OpenStore(ctx, nc, role, true, 1)
			require.NoError(t, err)
			t.Cleanup(s.Close)
			if serial {
				participant.SetExclusive(s)
			}
			count := counting(func(cmd *messages.Command) string {
				h, _ := cmd.Context.String("household")
				return "count." + h
			})
			tally := counting(func(*messages.Command) string { return "ledger" })
			cmd := func(id, step string, action messages.Action, household int) *messages.Command {
				return &messages.Command{V: messages.Version, SagaID: id, Saga: "homes", Step: step, Action: action,
					Attempt: 1, Seq: 1, Context: messages.Context{}.MustSet("household", fmt.Sprintf("h-%d", household))}
			}
			most := 0
			do := func(c *messages.Command, h agent.Handler, want agent.Verdict) {
				t.Helper()
				reply, verdict, err := s.Do(ctx, c, h)
				require.NoError(t, err)
				require.Equal(t, messages.OK, reply.Outcome, reply.Reason)
				require.Equal(t, want, verdict, c.SagaID)
				values, settled := participant.Cached(s)
				require.LessOrEqual(t, values, bound, "values held")
				require.LessOrEqual(t, settled, bound, "settled lists held")
				most = max(most, values, settled)
			}
			for round := 1; round <= 2; round++ {
				for i := range households {
					do(cmd(fmt.Sprintf("s-%d-%d", round, i), "count", messages.Execute, i), count, agent.Applied)
					do(cmd(fmt.Sprintf("t-%d-%d", round, i), "tally", messages.Execute, i), tally, agent.Applied)
				}
			}
			require.Equal(t, bound, most, "the test fills the store's bound")
			for i := range households {
				do(cmd(fmt.Sprintf("s-2-%d", i), "count", messages.Compensate, i), count, agent.Applied)
			}
			do(cmd("s-1-0", "count", messages.Execute, 0), count, agent.Duplicate)

			for i := range households {
				var n int
				_, err := s.Get(ctx, fmt.Sprintf("count.h-%d", i), &n)
				require.NoError(t, err)
				require.Equal(t, 1, n, "household %d", i)
			}
			var n int
			_, err = s.Get(ctx, "ledger", &n)
			require.NoError(t, err)
			require.Equal(t, 2*households, n)

			js, err := jetstream.New(nc)
			require.NoError(t, err)
			st, err := js.Stream(ctx, messages.StateStream(role))
			require.NoError(t, err)
			m, err := st.GetLastMsgForSubject(ctx, messages.DataSubject(role, "ledger"))
			require.NoError(t, err)
			var env struct{ Ops map[string]json.RawMessage }
			require.NoError(t, json.Unmarshal(m.Data, &env))
			require.Len(t, env.Ops, 1, "the ledger's envelope names only its last writer")
		})
	}
}
