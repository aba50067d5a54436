package coordinator_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
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

// wideDefs returns n sagas of steps steps each, of role "ghost", every
// name and subject 64 characters long and starting with prefix: 2·n·steps
// command subjects of 145 bytes, the most a subject can take.
func wideDefs(prefix string, n, steps int) []saga.Definition {
	pad := func(s, with string) string { return s + strings.Repeat(with, messages.MaxTokenLen-len(s)) }
	defs := make([]saga.Definition, n)
	for s := range defs {
		name := pad(fmt.Sprintf("%s%d_", prefix, s), "x")
		defs[s] = saga.Definition{Name: name, Subject: name}
		for i := range steps {
			defs[s].Steps = append(defs[s].Steps, saga.Step{Name: pad(fmt.Sprintf("t%d_", i), "y"), Role: "ghost"})
		}
	}
	return defs
}

// wideFile returns a definitions file of defs, of role "ghost" and
// without compensations.
func wideFile(t *testing.T, defs []saga.Definition) string {
	t.Helper()
	type step struct {
		Name string `json:"name"`
		Role string `json:"role"`
	}
	type def struct {
		Name    string `json:"name"`
		Subject string `json:"subject"`
		Steps   []step `json:"steps"`
	}
	f := struct {
		Roles []string `json:"roles"`
		Sagas []def    `json:"sagas"`
	}{Roles: []string{"ghost"}}
	for _, d := range defs {
		x := def{Name: d.Name, Subject: d.Subject}
		for _, st := range d.Steps {
			x.Steps = append(x.Steps, step{Name: st.Name, Role: st.Role})
		}
		f.Sagas = append(f.Sagas, x)
	}
	data, err := json.Marshal(f)
	require.NoError(t, err)
	return string(data)
}

// fileOf returns defs as a definitions file.
func fileOf(t *testing.T, defs []saga.Definition) string {
	t.Helper()
	data, err := json.Marshal(saga.FileOf(defs))
	require.NoError(t, err)
	return string(data)
}

// registerWithin sends file on natsaga.register and requires an answer
// within the client's default request timeout.
func registerWithin(t *testing.T, nc *nats.Conn, file string) messages.RegisterResponse {
	t.Helper()
	data, err := json.Marshal(messages.RegisterRequest{V: messages.Version, Definitions: json.RawMessage(file)})
	require.NoError(t, err)
	m, err := nc.Request(messages.RegisterSubject, data, 5*time.Second)
	require.NoError(t, err, "the register request is answered within the client's default timeout")
	var resp messages.RegisterResponse
	require.NoError(t, json.Unmarshal(m.Data, &resp), string(m.Data))
	return resp
}

// commandSubjects returns the command stream's subjects.
func commandSubjects(t *testing.T, js jetstream.JetStream) []string {
	t.Helper()
	s, err := js.Stream(t.Context(), messages.CommandStream)
	require.NoError(t, err)
	return s.CachedInfo().Config.Subjects
}

// definitionKeys returns the definition keys the bucket holds.
func definitionKeys(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	keys, err := kv.ListKeysFiltered(t.Context(), messages.DefinitionKeyPrefix+">")
	require.NoError(t, err)
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	return out
}

// TestRegistrationPastTheSubjectLimitRefused: a file of
// 40 sagas of 50 steps with names of 64 characters (4,000 command
// subjects, in 188 KB), is refused bad_request naming the limit, at once,
// with nothing stored and nothing live; a file that takes the command
// stream exactly to the limit is registered, one subject more is refused,
// and the coordinator serves on.
func TestRegistrationPastTheSubjectLimitRefused(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	log := newLogSink()
	runCoordinator(t, url, parseDefs(t, jobV1), slog.New(log))
	js, kv := sagaBucket(t, nc)
	before := commandSubjects(t, js)
	require.Len(t, before, 4)

	wide := wideFile(t, wideDefs("S0_", 40, 50))
	require.Less(t, len(wide), saga.MaxFileSize, "the file is of a valid size")
	resp := registerWithin(t, nc, wide)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	require.Contains(t, resp.Error.Message, fmt.Sprintf("limit of %d", coordinator.MaxCommandSubjects))
	require.Equal(t, []string{messages.DefinitionKey("job", 1)}, definitionKeys(t, kv), "nothing stored")
	require.Equal(t, before, commandSubjects(t, js), "the stream unchanged")
	require.Equal(t, 1, testenv.Summary(t, nc).Registered, "nothing live")

	// Exactly to the limit: job's 4 subjects and 2 for each step.
	steps := func(n int) []saga.Definition {
		d := saga.Definition{Name: "wide", Subject: "wide"}
		for i := range n {
			d.Steps = append(d.Steps, saga.Step{Name: fmt.Sprintf("s%d", i), Role: "clerk"})
		}
		return []saga.Definition{d}
	}
	room := (coordinator.MaxCommandSubjects - len(before)) / 2
	resp = registerWithin(t, nc, fileOf(t, steps(room+1)))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	resp = registerWithin(t, nc, fileOf(t, steps(room)))
	require.Nil(t, resp.Error)
	require.Len(t, commandSubjects(t, js), coordinator.MaxCommandSubjects)
	require.Equal(t, 2, testenv.Summary(t, nc).Registered)

	// Full: a new version that only reuses the steps' subjects still
	// fits; one new step does not.
	v2 := steps(room)
	v2[0].Version, v2[0].Steps = 2, v2[0].Steps[:3]
	resp = registerWithin(t, nc, fileOf(t, v2))
	require.Nil(t, resp.Error)
	resp = registerWithin(t, nc, `{"roles":["clerk"],"sagas":[{"name":"one","subject":"one","steps":[{"name":"a","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	require.Zero(t, log.count(slog.LevelError, "coordinator term ended", ""))
}

// TestRegistrationRefusedByTheStreamChangesNothing: a registration whose
// subjects the server refuses to the command stream (another stream holds
// them) is answered with an error, stores nothing and makes nothing live;
// the coordinator serves on, registrations included.
func TestRegistrationRefusedByTheStreamChangesNothing(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	log := newLogSink()
	runCoordinator(t, url, parseDefs(t, jobV1), slog.New(log))
	js, kv := sagaBucket(t, nc)
	_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "CLASH", Subjects: []string{"saga.clash.>"}})
	require.NoError(t, err)

	resp := registerWithin(t, nc, `{"roles":["clerk"],"sagas":[
		{"name":"fine","subject":"fine","steps":[{"name":"a","role":"clerk"}]},
		{"name":"clash","subject":"clash","steps":[{"name":"a","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeInternal, resp.Error.Code, resp.Error.Message)
	require.Contains(t, resp.Error.Message, messages.CommandStream)
	require.Equal(t, []string{messages.DefinitionKey("job", 1)}, definitionKeys(t, kv), "nothing stored")
	require.Equal(t, 1, testenv.Summary(t, nc).Registered, "nothing live")
	var start messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("fine"), messages.StartRequest{V: messages.Version}, &start)
	require.NotNil(t, start.Error)
	require.Equal(t, messages.CodeNotFound, start.Error.Code, start.Error.Message)

	resp = registerWithin(t, nc, `{"roles":["clerk"],"sagas":[{"name":"fine","subject":"fine","steps":[{"name":"a","role":"clerk"}]}]}`)
	require.Nil(t, resp.Error)
	require.Equal(t, 2, testenv.Summary(t, nc).Registered)
	require.Zero(t, log.count(slog.LevelError, "coordinator term ended", ""))
}

// TestStoredDefinitionsPastTheSubjectLimitSkipped: a bucket holding more
// definitions than the command stream can take, as a coordinator before
// the limit could leave it (80 sagas of 50 steps: 8,000 subjects, whose
// stream configuration is over the server's payload limit), is recovered:
// the definitions that fit are served, each of the others is skipped with
// an error naming it, and the coordinator serves on.
func TestStoredDefinitionsPastTheSubjectLimitSkipped(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	stop := startCoordinator(t, url, parseDefs(t, jobV1))
	stop()
	js, kv := sagaBucket(t, nc)
	wide := wideDefs("S0_", 80, 50)
	for _, d := range wide {
		_, err := kv.Create(t.Context(), messages.DefinitionKey(d.Name, 1), []byte(fileOf(t, []saga.Definition{d})))
		require.NoError(t, err)
	}

	log := newLogSink()
	runCoordinator(t, url, parseDefs(t, jobV1), slog.New(log))
	fit := (coordinator.MaxCommandSubjects - 4) / 100
	require.Equal(t, 1+fit, testenv.Summary(t, nc).Registered)
	require.LessOrEqual(t, len(commandSubjects(t, js)), coordinator.MaxCommandSubjects)
	for i, d := range wide {
		n := log.countAttr(slog.LevelError, "stored definition skipped", "key", messages.DefinitionKey(d.Name, 1))
		require.Equal(t, i >= fit, n == 1, "definition %d skipped", i)
	}
	require.Equal(t, len(wide)-fit, log.count(slog.LevelError, "stored definition skipped",
		fmt.Sprintf("limit of %d", coordinator.MaxCommandSubjects)))

	// A fitted one starts; a skipped one is unknown.
	testenv.Start(t, nc, wide[0].Subject, nil)
	var start messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject(wide[fit].Subject), messages.StartRequest{V: messages.Version}, &start)
	require.NotNil(t, start.Error)
	require.Equal(t, messages.CodeNotFound, start.Error.Code, start.Error.Message)
	require.Equal(t, int64(1), testenv.Tick(t, nc, 1).Tick)
	require.Zero(t, log.count(slog.LevelError, "coordinator term ended", ""))
}

// TestStartDefinitionsPastTheSubjectLimitRefused: definitions given at
// start whose command subjects pass the limit are refused at once, naming
// it.
func TestStartDefinitionsPastTheSubjectLimitRefused(t *testing.T) {
	n := coordinator.MaxCommandSubjects / 100
	over := coordinator.Options{Definitions: wideDefs("S0_", n+1, 50)}
	err := over.Validate()
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.ErrorContains(t, err, fmt.Sprintf("limit of %d", coordinator.MaxCommandSubjects))
	o := coordinator.Options{Definitions: wideDefs("S0_", n, 50)}
	require.NoError(t, o.Validate())
}

// TestStartDefinitionsPastTheLimitWithTheStreamsRefused: definitions given
// at start that fit alone but not beside the subjects the command stream
// holds already stop the coordinator, naming the limit, and change
// nothing of the stream.
func TestStartDefinitionsPastTheLimitWithTheStreamsRefused(t *testing.T) {
	_, url := testenv.Server(t)
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	cfg := jetstream.StreamConfig{Name: messages.CommandStream, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}
	for i := range coordinator.MaxCommandSubjects - 2 {
		cfg.Subjects = append(cfg.Subjects, messages.ExecuteSubject("old", fmt.Sprintf("s%d", i)))
	}
	_, err = js.CreateStream(t.Context(), cfg)
	require.NoError(t, err)

	_, err = runRefused(t, url, coordinator.Options{Definitions: parseDefs(t, jobV1)}, "a coordinator whose definitions the command stream cannot take")
	require.ErrorIs(t, err, coordinator.ErrTooManyCommandSubjects)
	require.ErrorContains(t, err, fmt.Sprintf("limit of %d", coordinator.MaxCommandSubjects))
	require.Equal(t, cfg.Subjects, commandSubjects(t, js))
}
