package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestOutcomes writes the outcome log of the stored sagas, the same bytes
// as saga.OutcomeLog of their states, and prints its SHA-256.
func TestOutcomes(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "pay", Role: "ops"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	testenv.Agent(t, url, participant.Options{Role: "ops", Steps: []agent.Step{
		{Saga: "ops", Name: "pay", Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				if cmd.Rank == 2 {
					return nil, agent.Reject("no money for rank 2")
				}
				return messages.Context{}.MustSet("paid", 100*cmd.Rank), nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }}},
	}})
	// With none stored, the log is refused, and -ranked says what it keeps.
	code, out := natsaga(t, url, "outcomes")
	require.Equal(t, 1, code, out)
	require.Equal(t, "natsaga: no saga stored\n", out)
	code, out = natsaga(t, url, "outcomes", "-ranked")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "natsaga: no ranked saga stored: only the starts a simulation driver gives a rank are")

	nc := testenv.Connect(t, url)
	var xs []saga.Execution
	for rank, id := range []string{"c", "a", "b"} {
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject("ops"), messages.StartRequest{V: messages.Version, SagaID: id, Rank: int64(rank + 1)}, &resp)
		require.Nil(t, resp.Error)
	}
	for _, id := range []string{"a", "b", "c"} {
		want := saga.Completed
		if id == "a" {
			want = saga.RolledBack
		}
		xs = append(xs, testenv.WaitStatus(t, nc, id, want))
	}
	log, digest, err := saga.OutcomeLog(xs)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "outcomes.jsonl")
	code, out = natsaga(t, url, "outcomes", "-o", path)
	require.Equal(t, 0, code, out)
	require.Equal(t, "3 sagas, outcome log SHA-256: "+digest+"\n", out)

	// With -json, the same bytes on stdout; without, a table.
	code, out = natsaga(t, url, "-json", "outcomes")
	require.Equal(t, 0, code, out)
	require.Equal(t, string(log)+"3 sagas, outcome log SHA-256: "+digest+"\n", out)
	code, out = natsaga(t, url, "outcomes", "-ranked")
	require.Equal(t, 0, code, out)
	ls := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, ls, 5, out) // header, three sagas, the digest
	require.Regexp(t, `^SAGA_ID\s+TYPE\s+RANK\s+STATUS\s+START\s+END\s+COMPLETED\s+REASON$`, ls[0])
	require.Regexp(t, `^a\s+ops\s+2\s+rolled_back\s+0\s+0\s+-\s+step pay failed: no money for rank 2$`, ls[1])
	require.Regexp(t, `^b\s+ops\s+3\s+completed\s+0\s+0\s+pay\s+-$`, ls[2])
	require.Equal(t, "3 sagas, outcome log SHA-256: "+digest, ls[4])
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, string(log), string(got))
	require.Equal(t, `{"saga_id":"a","saga":"ops","rank":2,"status":"rolled_back","reason":"step pay failed: no money for rank 2","start_tick":0,"end_tick":0,"completed_steps":[],"context":{}}
{"saga_id":"b","saga":"ops","rank":3,"status":"completed","start_tick":0,"end_tick":0,"completed_steps":["pay"],"context":{"paid":300}}
{"saga_id":"c","saga":"ops","rank":1,"status":"completed","start_tick":0,"end_tick":0,"completed_steps":["pay"],"context":{"paid":100}}
`, string(got))
}

// TestQuiet waits for the tick to be quiet, and fails when a command stays
// due, here one no agent serves, naming its saga; while it waits it sends
// the tick again every second, for an agent restarted meanwhile.
func TestQuiet(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "ops", Subject: "ops", Steps: []saga.Step{{Name: "pay", Role: "nobody"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	code, out := natsaga(t, url, "-json", "quiet", "-wait", "5s")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, `"due": 0`)
	code, out = natsaga(t, url, "quiet")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "tick 0 is quiet\n")

	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "ops", nil)
	ticks, err := nc.SubscribeSync(messages.TickSubject)
	require.NoError(t, err)
	code, out = natsaga(t, url, "quiet", "-wait", "2500ms")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "tick 0 is not quiet: 1 command due\n")
	require.Contains(t, out, "natsaga: tick 0: 1 command due, not quiet within 2.5s; waiting for "+id+" (ops, execute ops.pay, attempt 1)\n")
	for range 2 {
		m, err := ticks.NextMsg(time.Second)
		require.NoError(t, err, "the tick sent again")
		var tick messages.Tick
		require.NoError(t, json.Unmarshal(m.Data, &tick))
		require.Zero(t, tick.Tick)
	}
}
