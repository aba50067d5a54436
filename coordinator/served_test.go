package coordinator_test

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestStepNoAgentServesIsWarnedAbout: a role's consumer that leaves out
// a step of the definitions (a misspelt step name in the agents) is
// warned about once for each of the step's subjects, and said to be
// served when a consumer takes them; a role with no consumer yet is not
// warned about.
func TestStepNoAgentServesIsWarnedAbout(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "job", Subject: "job", Steps: []saga.Step{
		{Name: "open", Role: "clerk"}, {Name: "file", Role: "clerk"}, {Name: "audit", Role: "auditor"},
	}}
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}, Logger: log})
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	consume := func(filters ...string) {
		_, err := js.CreateOrUpdateConsumer(t.Context(), messages.CommandStream, jetstream.ConsumerConfig{
			Durable: messages.CommandConsumer("clerk"), FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy,
		})
		require.NoError(t, err)
	}
	// said returns the subjects logged with msg, in the order logged.
	said := func(msg string) []string {
		var subjects []string
		for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var rec struct{ Msg, Subject, Role, Step string }
			require.NoError(t, json.Unmarshal([]byte(line), &rec))
			if strings.HasPrefix(rec.Msg, msg) {
				subjects = append(subjects, rec.Subject)
			}
		}
		return subjects
	}
	const unserved, served = "no agent of the role serves this step", "an agent of the role serves the step now"

	consume(append(messages.StepCommandSubjects("job", "open"), messages.ExecuteSubject("job", "fiel"))...)
	want := []string{"saga.job.file", "saga.job.file.compensate"}
	require.Eventually(t, func() bool { return slices.Equal(want, said(unserved)) }, 10*time.Second, 10*time.Millisecond, logs.String())

	consume("saga.job.*", "saga.job.*.compensate")
	require.Eventually(t, func() bool { return slices.Equal(want, said(served)) }, 10*time.Second, 10*time.Millisecond, logs.String())
	require.Equal(t, want, said(unserved), "each said once; the auditor, with no consumer, not at all")
}

// TestAnswerThatDoesNotEncodeIsAnError: every request is answered, one
// whose answer does not encode with an internal error, in the body and
// the headers.
func TestAnswerThatDoesNotEncodeIsAnError(t *testing.T) {
	_, url := testenv.Server(t)
	c := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	require.NoError(t, err)
	require.NoError(t, nc.Flush(), "the server knows the subscription before the coordinator answers")
	coordinator.Respond(c, &nats.Msg{Subject: messages.StatusSubject, Reply: inbox}, map[string]any{"v": 1, "saga": json.RawMessage(`{`)})
	m, err := sub.NextMsg(5 * time.Second)
	require.NoError(t, err)
	var resp messages.StatusResponse
	require.NoError(t, json.Unmarshal(m.Data, &resp), string(m.Data))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeInternal, resp.Error.Code)
	require.Contains(t, resp.Error.Message, "the answer could not be encoded")
	require.Equal(t, "500", m.Header.Get("Nats-Service-Error-Code"))
}
