package discovery_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/discovery"
	"github.com/natsaga/natsaga/internal/testenv"
)

// TestAnswersAsMicroDoes: PING, INFO and STATS, to the service's every
// control subject, are answered with micro's types, and an endpoint's
// requests are counted.
func TestAnswersAsMicroDoes(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	svc, err := discovery.Add(nc, discovery.Config{Name: "natsaga-test", Version: "3.0.0", Description: "a test",
		Metadata: map[string]string{"role": "tester"}, Stats: func() any { return map[string]int{"handled": 7} }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	require.NoError(t, svc.AddEndpoint("echo", "test.echo", true, func(m *nats.Msg) { _ = m.Respond(m.Data) }))
	_, err = nc.Request("test.echo", []byte("hi"), 5*time.Second)
	require.NoError(t, err)

	ask := func(verb micro.Verb, name, id string, v any) {
		t.Helper()
		subject, err := micro.ControlSubject(verb, name, id)
		require.NoError(t, err)
		m, err := nc.Request(subject, nil, 5*time.Second)
		require.NoError(t, err, subject)
		require.NoError(t, json.Unmarshal(m.Data, v))
	}
	var ping micro.Ping
	ask(micro.PingVerb, "", "", &ping)
	require.Equal(t, micro.PingResponseType, ping.Type)
	require.Equal(t, "natsaga-test", ping.Name)
	var info micro.Info
	ask(micro.InfoVerb, "natsaga-test", ping.ID, &info)
	require.Equal(t, micro.Info{ServiceIdentity: micro.ServiceIdentity{Name: "natsaga-test", ID: ping.ID, Version: "3.0.0",
		Metadata: map[string]string{"role": "tester"}}, Type: micro.InfoResponseType, Description: "a test",
		Endpoints: []micro.EndpointInfo{{Name: "echo", Subject: "test.echo", QueueGroup: micro.DefaultQueueGroup}}}, info)
	var stats micro.Stats
	ask(micro.StatsVerb, "natsaga-test", "", &stats)
	require.Equal(t, micro.StatsResponseType, stats.Type)
	require.Len(t, stats.Endpoints, 1)
	require.Equal(t, 1, stats.Endpoints[0].NumRequests)
	require.JSONEq(t, `{"handled":7}`, string(stats.Endpoints[0].Data))

	require.NoError(t, svc.Stop())
	subject, err := micro.ControlSubject(micro.PingVerb, "natsaga-test", "")
	require.NoError(t, err)
	_, err = nc.Request(subject, nil, 200*time.Millisecond)
	require.ErrorIs(t, err, nats.ErrNoResponders, "stopped")
}

// TestNeverAnswersIntoNatsagasSubjects: a discovery request whose reply
// subject is a role's state, the coordinator's lease or another of
// natsaga's subjects gets no answer there (micro's own would be stored,
// in place of a ledger), and is said.
func TestNeverAnswersIntoNatsagasSubjects(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	var mu sync.Mutex
	var said []string
	svc, err := discovery.Add(nc, discovery.Config{Name: "natsaga-test", Version: "3.0.0", Warn: func(msg string, _ ...any) {
		mu.Lock()
		defer mu.Unlock()
		said = append(said, msg)
	}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })

	watch := testenv.Connect(t, url)
	stored, err := watch.SubscribeSync(">")
	require.NoError(t, err)
	require.NoError(t, watch.Flush())
	protected := []string{"natsaga.state.insurer.data.ledger", "$KV.natsaga_sagas.meta.leader", "saga.subsidy.household_applies", "$JS.API.STREAM.DELETE.X"}
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		subject, err := micro.ControlSubject(verb, "natsaga-test", "")
		require.NoError(t, err)
		for _, reply := range protected {
			require.NoError(t, nc.PublishRequest(subject, reply, nil))
		}
		// Answered in turn: once this one is, those before were handled.
		_, err = nc.Request(subject, nil, 5*time.Second)
		require.NoError(t, err)
	}
	require.NoError(t, nc.Flush())
	require.NoError(t, watch.Flush())
	for {
		m, err := stored.NextMsg(100 * time.Millisecond)
		if err != nil {
			break
		}
		require.NotContains(t, protected, m.Subject, "an answer went there")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, said, 3*len(protected))
}
