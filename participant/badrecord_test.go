package participant_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestMalformedRecordAnsweredAsError: a branch record that does not
// decode (an outcome no agent writes, as a buggy copy of the role could
// store) is no ground for a decision. The command is answered error
// naming it, so that the saga retries, rolls back, and, as its
// compensation meets the same record, ends failed (docs/guarantees.md):
// not asked for again for ever. So is a record the coordinator would drop:
// over an eighth of the payload limit, or not UTF-8.
func TestMalformedRecordAnsweredAsError(t *testing.T) {
	maybe := `{"execute":{"outcome":"maybe","seq":1}}`
	for what, record := range map[string]string{
		"an outcome no agent writes": maybe,
		"over an eighth of 1 MiB":    `{"execute":{"outcome":"ok","seq":1,"output":{"x":"` + strings.Repeat("x", 140_000) + `"}}}`,
		"not utf-8":                  "{\"execute\":{\"outcome\":\"ok\",\"seq\":1,\"output\":{\"x\":\"\xff\"}}}",
	} {
		t.Run(what, func(t *testing.T) { malformedRecordAnsweredAsError(t, nil, record) })
	}
	// A step that takes simulation time reads its branch before it holds
	// the command: the same record answers it error, not held.
	t.Run("timed", func(t *testing.T) {
		malformedRecordAnsweredAsError(t, func(*messages.Command) int64 { return 1 }, maybe)
	})
}

func malformedRecordAnsweredAsError(t *testing.T, duration func(*messages.Command) int64, record string) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	def := saga.Definition{Name: "job", Subject: "job", Steps: []saga.Step{{Name: "work", Role: "worker"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	noop := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	testenv.Agent(t, url, participant.Options{Role: "worker", Steps: []agent.Step{{Saga: "job", Name: "work", Handler: noop, Duration: duration}}})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bad := kvlog.AppendMessage(nil, "bug", []kvlog.Entry{{Key: messages.RecordKey("j-1", "work"), Value: []byte(record)}})
	_, err = js.Publish(context.Background(), messages.RecordSubject("worker"), bad)
	require.NoError(t, err)

	var resp messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("job"), messages.StartRequest{V: 1, SagaID: "j-1"}, &resp)
	require.Nil(t, resp.Error)
	var x saga.Execution
	require.Eventually(t, func() bool {
		x = testenv.Status(t, nc, "j-1")
		return x.Status.Terminal()
	}, 30*time.Second, 20*time.Millisecond)
	require.Equal(t, saga.Failed, x.Status)
	require.Contains(t, x.Error, "j-1/work: its barrier record is malformed")
	require.Nil(t, x.Results["work"])
}
