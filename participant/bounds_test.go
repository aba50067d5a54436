package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestAnswersWithinWhatTheCoordinatorTakes: what a handler returns that
// no record or reply the coordinator takes could hold (an eighth of the
// server's payload limit) never leaves a saga waiting. An output over
// its bound (as a record writes it, escaped), or not JSON in UTF-8, fails
// the step as a transient error, and the saga rolls back (its
// compensations' records fit); a long reason is cut to what the saga
// keeps; a value over half the payload limit is the handler's error.
// Under a server limit of 64 KiB, an output's bound is 7 KiB.
func TestAnswersWithinWhatTheCoordinatorTakes(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536")
	nc := testenv.Connect(t, url)
	require.Equal(t, 7168, messages.MaxOutputFor(nc.MaxPayload()))
	once := saga.RetryPolicy{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
	def := saga.Definition{Name: "big", Subject: "big", Steps: []saga.Step{
		{Name: "first", Role: "r", TimeoutTicks: 100},
		{Name: "second", Role: "r", TimeoutTicks: 100, Retry: once},
	}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	noUndo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	testenv.Agent(t, url, participant.Options{Role: "r", Steps: []agent.Step{
		{Saga: "big", Name: "first", Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				// The most the bound takes: recorded, and its
				// compensation's record beside it fits too.
				return messages.Context{"first": json.RawMessage(`"` + strings.Repeat("x", 7168-12) + `"`)}, nil
			},
			Compensate: noUndo,
		}},
		{Saga: "big", Name: "second", Handler: agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
				how, _ := cmd.Context.String("how")
				switch how {
				case "large":
					return messages.Context{"blob": json.RawMessage(`"` + strings.Repeat("x", 8000) + `"`)}, nil
				case "escaped":
					// 2,000 bytes as the handler wrote them, 12,000 as
					// a record writes them (\u003c each).
					return messages.Context{"blob": json.RawMessage(`"` + strings.Repeat("<", 2000) + `"`)}, nil
				case "not json":
					return messages.Context{"blob": json.RawMessage(`{`)}, nil
				case "not utf-8":
					return messages.Context{"blob": json.RawMessage("\"\xff\xfe\"")}, nil
				case "long reason":
					return nil, agent.Reject("%s", strings.Repeat("no ", 40_000))
				case "large value":
					if _, err := tx.Get("v", new(string)); err != nil {
						return nil, err
					}
					return nil, tx.Put("v", strings.Repeat("x", 40_000))
				}
				return nil, nil
			},
			Compensate: noUndo,
		}},
	}})

	// A step that erred is compensated first (nothing to undo there); a
	// rejected one is not.
	erred, rejected := []string{"second", "first"}, []string{"first"}
	for _, tc := range []struct {
		how, says   string
		compensated []string
	}{
		{"large", "execute second: output of 8011 bytes as JSON, more than 7168", erred},
		{"escaped", "execute second: output of 12011 bytes as JSON, more than 7168", erred},
		{"not json", `execute second: output "blob": not JSON in UTF-8`, erred},
		{"not utf-8", `execute second: output "blob": not JSON in UTF-8`, erred},
		{"long reason", "no no no", rejected},
		{"large value", "put v: a value of 40002 bytes as JSON, more than 32768 (half the server's payload limit)", erred},
	} {
		t.Run(tc.how, func(t *testing.T) {
			id := testenv.Start(t, nc, "big", messages.Context{}.MustSet("how", tc.how))
			x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
			require.Contains(t, x.Error, tc.says)
			require.LessOrEqual(t, len(x.Error), messages.MaxReason+100, "the reason cut: %d bytes", len(x.Error))
			require.Equal(t, tc.compensated, x.Compensated, "the step before it undone")
		})
	}
}

// TestRecordsOfABatchWithinThePayloadLimit: a serial copy records a
// batch's results in messages of its role's record log within the
// server's payload limit: 200 results of 1 KiB each, under a limit of
// 64 KiB, are recorded in one batch (a message of 256 KiB, the log's own
// bound, was refused by the server, and each command then ran again
// alone).
func TestRecordsOfABatchWithinThePayloadLimit(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536")
	js, _ := payStreamOn(t, url, "spend")
	var runs atomic.Int64
	spend := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			runs.Add(1)
			return messages.Context{"receipt": json.RawMessage(`"` + strings.Repeat("r", 1<<10) + `"`)}, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a := serialTill(t, url, js, spend)
	var cmds []messages.Command
	for i := range 200 {
		cmds = append(cmds, messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%03d", i), Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(i + 1)})
	}
	publishCommands(t, js, cmds...)
	require.Eventually(t, func() bool { return a.Stats().Handled == int64(len(cmds)) }, 20*time.Second, 10*time.Millisecond)
	st := a.Stats()
	require.Equal(t, int64(1), st.Batches, "one batch for the message")
	require.Equal(t, int64(len(cmds)-1), st.Batched)
	require.Equal(t, int64(len(cmds)), runs.Load(), "each run once")
}

// TestDurationThatPanics: a step's Duration, the model's code, that
// panics does not stop the agent: the execute is answered with the panic,
// naming where, as a transient error; its saga rolls back, and the next
// saga runs.
func TestDurationThatPanics(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	def := saga.Definition{Name: "bake", Subject: "bake", Steps: []saga.Step{{Name: "proof", Role: "baker", TimeoutTicks: 100,
		Retry: saga.RetryPolicy{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	testenv.Agent(t, url, participant.Options{Role: "baker", Steps: []agent.Step{{
		Saga: "bake", Name: "proof",
		Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		},
		Duration: func(cmd *messages.Command) int64 {
			if _, err := cmd.Context.String("boom"); err == nil {
				var ticks []int64
				return ticks[3] // index out of range
			}
			return 0
		},
	}}})
	id := testenv.Start(t, nc, "bake", messages.Context{}.MustSet("boom", "yes"))
	x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Contains(t, x.Error, "execute proof: duration panicked at bounds_test.go:")
	require.Contains(t, x.Error, "index out of range")
	testenv.WaitStatus(t, nc, testenv.Start(t, nc, "bake", nil), saga.Completed)
}

// TestSmallPayloadLimitSaid: an agent on a server whose payload limit is
// under 64 KiB says, as it starts serving, how little room that leaves a
// step's output.
func TestSmallPayloadLimitSaid(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 32768")
	var logs testenv.SyncBuffer
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{{Name: "big", Subject: "big",
		Steps: []saga.Step{{Name: "first", Role: "r"}}}}})
	testenv.Agent(t, url, participant.Options{Role: "r", Logger: slog.New(slog.NewTextHandler(&logs, nil)), Steps: []agent.Step{{
		Saga: "big", Name: "first", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	said := regexp.MustCompile(`level=WARN msg="the server's payload limit leaves little room for a step's output: natsaga wants 64 KiB or more" .*max_payload=32768 most_output_bytes=3072`)
	require.Eventually(t, func() bool { return said.MatchString(logs.String()) }, 10*time.Second, 10*time.Millisecond)
}
