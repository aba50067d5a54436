package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

// jobV1 is a two-step saga of role "clerk"; jobV2 replaces its second
// step with one of a role no definition named before.
const (
	jobV1 = `{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":1,
		"steps":[{"name":"open","role":"clerk"},{"name":"file","role":"clerk"}]}]}`
	jobV2 = `{"roles":["clerk","auditor"],"sagas":[{"name":"job","subject":"job","version":2,
		"steps":[{"name":"open","role":"clerk"},{"name":"audit","role":"auditor"}]}]}`
)

// foreign is an agent written against the wire alone: it sees every
// command and answers the ones it is told to.
type foreign struct {
	nc   *nats.Conn
	cmds chan messages.Command
}

func newForeign(t *testing.T, nc *nats.Conn) *foreign {
	f := &foreign{nc: nc, cmds: make(chan messages.Command, 64)}
	sub, err := nc.Subscribe("saga.job.>", func(m *nats.Msg) {
		var c messages.Command
		if json.Unmarshal(m.Data, &c) == nil {
			f.cmds <- c
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return f
}

// next returns the next command sent, which must be for step of saga id.
func (f *foreign) next(t *testing.T, id, step string) messages.Command {
	t.Helper()
	select {
	case c := <-f.cmds:
		require.Equal(t, id, c.SagaID)
		require.Equal(t, step, c.Step)
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no command for %s of %s", step, id)
		return messages.Command{}
	}
}

func (f *foreign) ok(t *testing.T, c messages.Command) {
	t.Helper()
	data, err := json.Marshal(messages.ReplyTo(&c, messages.OK, ""))
	require.NoError(t, err)
	_, err = f.nc.Request(messages.ReplySubject(c.Saga, c.Step), data, 5*time.Second)
	require.NoError(t, err, "the reply stream stores it")
}

func register(t *testing.T, nc *nats.Conn, file string) messages.RegisterResponse {
	t.Helper()
	var resp messages.RegisterResponse
	testenv.Request(t, nc, messages.RegisterSubject, messages.RegisterRequest{V: messages.Version, Definitions: json.RawMessage(file)}, &resp)
	return resp
}

// startCoordinator runs a coordinator until stop is called.
func startCoordinator(t *testing.T, url string, defs []saga.Definition) (stop func()) {
	t.Helper()
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: defs, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		t.Fatalf("coordinator stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
	var stopped bool
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			require.NoError(t, <-done)
		}
	}
	t.Cleanup(stop)
	return stop
}

func TestRegisterAtRunTimeNeverChangesARunningSaga(t *testing.T) {
	_, url := testenv.Server(t)
	v1 := parseDefs(t, jobV1)
	stop := startCoordinator(t, url, v1)
	nc := testenv.Connect(t, url)
	f := newForeign(t, nc)

	old := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, old, "open"))
	fileCmd := f.next(t, old, "file")

	resp := register(t, nc, jobV2)
	require.Nil(t, resp.Error)
	require.Equal(t, []messages.RegisteredSaga{{Name: "job", Version: 2, Latest: true}}, resp.Registered)

	// The saga in flight ends by version 1.
	f.ok(t, fileCmd)
	x := testenv.WaitStatus(t, nc, old, saga.Completed)
	require.Equal(t, int64(1), x.Version)
	require.Equal(t, []string{"open", "file"}, x.Completed)

	// A new one runs by version 2, whose new step the command stream
	// takes.
	fresh := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, fresh, "open"))
	f.ok(t, f.next(t, fresh, "audit"))
	x = testenv.WaitStatus(t, nc, fresh, saga.Completed)
	require.Equal(t, int64(2), x.Version)
	require.Equal(t, []string{"open", "audit"}, x.Completed)

	// Registered again, the same version changes nothing; with other
	// content it is refused; a bad file is refused naming the field.
	resp = register(t, nc, jobV2)
	require.Nil(t, resp.Error)
	require.Equal(t, []messages.RegisteredSaga{{Name: "job", Version: 2, Latest: true, Unchanged: true}}, resp.Registered)
	resp = register(t, nc, `{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":2,"steps":[{"name":"open","role":"clerk"}]}]}`)
	require.Equal(t, messages.CodeConflict, resp.Error.Code, resp.Error.Message)
	resp = register(t, nc, `{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":3,"steps":[{"name":"open","role":"nurse"}]}]}`)
	require.Equal(t, &messages.WireError{Code: messages.CodeBadRequest,
		Message: `definition "job": field steps[0].role: unknown role "nurse": not in the file's roles [clerk]`}, resp.Error)

	// Restarted with version 1 only, the coordinator finds version 2 in
	// the bucket, and starts new sagas with it.
	stop()
	startCoordinator(t, url, v1)
	again := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, again, "open"))
	f.ok(t, f.next(t, again, "audit"))
	require.Equal(t, int64(2), testenv.WaitStatus(t, nc, again, saga.Completed).Version)
	require.Equal(t, 1, testenv.Summary(t, nc).Registered)
}

// TestStartDefinitionsAreStored: the definitions a coordinator is started
// with are stored in the bucket as a registered one is, started again with
// the same content they stay as they are, and a coordinator started with
// other content under a stored version refuses to run, naming it.
func TestStartDefinitionsAreStored(t *testing.T) {
	_, url := testenv.Server(t)
	v1 := parseDefs(t, jobV1)
	stop := startCoordinator(t, url, v1)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	require.NoError(t, err)
	stored := func() (string, uint64) {
		t.Helper()
		e, err := kv.Get(ctx, messages.DefinitionKey("job", 1))
		require.NoError(t, err)
		return string(e.Value()), e.Revision()
	}
	file, rev := stored()
	require.Equal(t, `{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":1,`+
		`"steps":[{"name":"open","role":"clerk","compensation":""},{"name":"file","role":"clerk","compensation":""}]}]}`, file)
	stop()

	// The same content again: the stored version is left as it was.
	stop = startCoordinator(t, url, v1)
	_, again := stored()
	require.Equal(t, rev, again)
	stop()

	// Other content under version 1: the coordinator does not run.
	changed, err := saga.ParseFile([]byte(`{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":1,
		"steps":[{"name":"open","role":"clerk"},{"name":"close","role":"clerk"}]}]}`))
	require.NoError(t, err)
	// runChanged runs a coordinator with changed, which must stop by itself.
	runChanged := func(what string) (*coordinator.Coordinator, error) {
		t.Helper()
		return runRefused(t, url, coordinator.Options{Definitions: changed}, what+" with a changed version 1")
	}
	_, err = runChanged("a coordinator")
	require.ErrorIs(t, err, coordinator.ErrDefinitionConflict)
	require.EqualError(t, err, `definition "job" version 1 given at start differs from the one stored under d.job.1, `+
		`given or registered before; give the changed one a new version: `+coordinator.ErrDefinitionConflict.Error())
	_, again = stored()
	require.Equal(t, rev, again, "the stored version never changes")

	// A version 2 that gives a step to another role than the stored
	// version 1 does: refused, as a registration of it is; nothing is
	// stored.
	moved, err := saga.ParseFile([]byte(`{"roles":["clerk","judge"],"sagas":[{"name":"job","subject":"job","version":2,
		"steps":[{"name":"open","role":"judge"},{"name":"file","role":"clerk"}]}]}`))
	require.NoError(t, err)
	_, err = runRefused(t, url, coordinator.Options{Definitions: moved}, "a coordinator whose version 2 moves a step")
	require.ErrorIs(t, err, coordinator.ErrDefinitionConflict)
	require.ErrorIs(t, err, saga.ErrStepMoved)
	require.ErrorContains(t, err, `definition "job" version 2 given at start, beside version 1 stored under d.job.1: `+
		`update "job": step "open" is role "clerk"'s in version 1, not "judge"'s`)
	_, err = kv.Get(ctx, messages.DefinitionKey("job", 2))
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the refused version is not stored")

	// The same beside an active coordinator: it refuses as it sets up,
	// not once it would take over, and never stands by as if healthy.
	stop = startCoordinator(t, url, v1)
	defer stop()
	c, err := runChanged("a standby")
	require.ErrorIs(t, err, coordinator.ErrDefinitionConflict)
	require.Error(t, c.Health())
	_, err = runRefused(t, url, coordinator.Options{Definitions: moved}, "a standby whose version 2 moves a step")
	require.ErrorIs(t, err, saga.ErrStepMoved)
	subjects := func() []string {
		t.Helper()
		s, err := js.Stream(ctx, messages.CommandStream)
		require.NoError(t, err)
		return s.CachedInfo().Config.Subjects
	}
	require.Contains(t, subjects(), "saga.job.file", "the refused standby changed nothing of the active's")
	require.NotContains(t, subjects(), "saga.job.close")

	// A standby started with other sagas only adds their subjects: the
	// active coordinator's commands are still taken.
	other := []saga.Definition{{Name: "other", Subject: "other", Steps: []saga.Step{{Name: "go", Role: "clerk"}}}}
	standby, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: other, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	go func() { _ = standby.Run(sctx) }()
	require.Eventually(t, func() bool { return standby.Health() == nil }, 10*time.Second, 10*time.Millisecond)
	require.Subset(t, subjects(), []string{"saga.job.open", "saga.job.file", "saga.other.go"})

	// A definition whose name a definitions file cannot hold cannot be
	// stored: it is refused at once.
	_, err = coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{
		{Name: "my job", Subject: "job", Steps: []saga.Step{{Name: "open", Role: "clerk"}}}}})
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)
	require.ErrorContains(t, err, `coordinator options: definition "my job" cannot be stored as a definitions file: `)
}

// TestRefusedRegistrationChangesNothing: a file refused after some of its
// definitions were stored takes them back; registered again alone, with
// the same content, a definition is registered, also when a refused
// registration could not take its key back.
func TestRefusedRegistrationChangesNothing(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "job0", Subject: "job0", Steps: []saga.Step{{Name: "s", Role: "clerk"}}}})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), messages.SagaBucket)
	require.NoError(t, err)
	// What the coordinator could not take, under beta's key.
	_, err = kv.Put(context.Background(), messages.DefinitionKey("beta", 1), []byte(`{}`))
	require.NoError(t, err)

	alpha := `{"name":"alpha","subject":"alpha","steps":[{"name":"a","role":"clerk"}]}`
	resp := register(t, nc, `{"roles":["clerk"],"sagas":[`+alpha+`,{"name":"beta","subject":"beta","steps":[{"name":"b","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error, "beta's key is taken")
	_, err = kv.Get(context.Background(), messages.DefinitionKey("alpha", 1))
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "alpha is taken back")

	// A file whose one saga's name is another's subject: the two cannot
	// both be registered, and neither is.
	resp = register(t, nc, `{"roles":["clerk"],"sagas":[{"name":"x","subject":"y","steps":[{"name":"a","role":"clerk"}]},
		{"name":"y","subject":"z","steps":[{"name":"a","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	for _, key := range []string{messages.DefinitionKey("x", 1), messages.DefinitionKey("y", 1)} {
		_, err = kv.Get(context.Background(), key)
		require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "%s is not stored", key)
	}
	require.Equal(t, 1, testenv.Summary(t, nc).Registered)

	// A file at the size limit whose definition, as stored (its version
	// and every field written out), is over it: refused before the
	// command stream takes its subjects.
	stream, err := js.Stream(context.Background(), messages.CommandStream)
	require.NoError(t, err)
	before := stream.CachedInfo().Config.Subjects
	big := `{"roles":["clerk"],"sagas":[{"name":"big","subject":"big","description":"","steps":[{"name":"a","role":"clerk"}]}]}`
	big = strings.Replace(big, `"description":""`, `"description":"`+strings.Repeat("d", saga.MaxFileSize-len(big))+`"`, 1)
	require.Len(t, big, saga.MaxFileSize)
	resp = register(t, nc, big)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	require.Contains(t, resp.Error.Message, "cannot be stored as a definitions file")
	info, err := stream.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, before, info.Config.Subjects, "the stream took no subject")

	// As a refused registration that could not take it back leaves it.
	file := `{"roles":["clerk"],"sagas":[` + alpha + `]}`
	_, err = kv.Create(context.Background(), messages.DefinitionKey("alpha", 1), []byte(file))
	require.NoError(t, err)
	resp = register(t, nc, file)
	require.Nil(t, resp.Error)
	require.Equal(t, []messages.RegisteredSaga{{Name: "alpha", Version: 1, Latest: true}}, resp.Registered)

	// Another content under that version is still refused: by the engine
	// once it holds the version, by the stored key when only the bucket
	// does.
	resp = register(t, nc, `{"roles":["clerk"],"sagas":[{"name":"alpha","subject":"alpha","steps":[{"name":"a","role":"clerk"},{"name":"b","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error)
	_, err = kv.Create(context.Background(), messages.DefinitionKey("gamma", 1),
		[]byte(`{"roles":["clerk"],"sagas":[{"name":"gamma","subject":"gamma","steps":[{"name":"a","role":"clerk"},{"name":"b","role":"clerk"}]}]}`))
	require.NoError(t, err)
	resp = register(t, nc, `{"roles":["clerk"],"sagas":[{"name":"gamma","subject":"gamma","steps":[{"name":"a","role":"clerk"}]}]}`)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeConflict, resp.Error.Code, resp.Error.Message)
}

// TestDefinitionBytesBounded: registrations are refused once the versions
// held would pass MaxDefinitionBytes, storing nothing; the versions given
// at start and those stored are always held, by a coordinator started
// again with the same limit too, and a version held already is taken.
func TestDefinitionBytesBounded(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	job := func(v int64) saga.Definition {
		return saga.Definition{Name: "job", Subject: "job", Version: v, Steps: []saga.Step{{Name: "s", Role: "clerk"}}}
	}
	file := func(v int64) string {
		return fmt.Sprintf(`{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","version":%d,"steps":[{"name":"s","role":"clerk"}]}]}`, v)
	}
	one, err := coordinator.DefinitionFile(job(1))
	require.NoError(t, err)
	// Room for versions 1 to 3, each as long as the first.
	opts := coordinator.Options{Definitions: []saga.Definition{job(1)}, MaxDefinitionBytes: int64(3 * len(one)), Logger: testenv.Logger(t)}
	stop := runUntilStopped(t, url, opts)
	for v := int64(2); v <= 3; v++ {
		resp := register(t, nc, file(v))
		require.Nil(t, resp.Error, "version %d", v)
	}
	refused := func() {
		t.Helper()
		resp := register(t, nc, file(4))
		require.NotNil(t, resp.Error)
		require.Equal(t, messages.CodeBadRequest, resp.Error.Code)
		require.Contains(t, resp.Error.Message, "would pass the coordinator's -max-definition-bytes")
		kv, err := js.KeyValue(t.Context(), messages.SagaBucket)
		require.NoError(t, err)
		_, err = kv.Get(t.Context(), messages.DefinitionKey("job", 4))
		require.ErrorIs(t, err, jetstream.ErrKeyNotFound, "a refused version is not stored")
	}
	refused()
	resp := register(t, nc, file(3))
	require.Nil(t, resp.Error, "a version held already")
	require.Equal(t, []messages.RegisteredSaga{{Name: "job", Version: 3, Latest: true, Unchanged: true}}, resp.Registered)

	// Started again with room for two: it holds the three stored, runs
	// the latest, and still refuses a fourth.
	stop()
	opts.MaxDefinitionBytes = int64(2 * len(one))
	runUntilStopped(t, url, opts)
	refused()
	started := testenv.Start(t, nc, "job", messages.Context{})
	require.Equal(t, int64(3), testenv.Status(t, nc, started).Version)
}

// defined records what a DefinitionObserver is told.
type defined struct {
	mu   sync.Mutex
	seen []string
}

func (d *defined) Committed([]messages.Command, []messages.Event, messages.Summary)  {}
func (d *defined) Answered(messages.Command, messages.Outcome, int64, time.Duration) {}
func (d *defined) Defined(def saga.Definition) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen = append(d.seen, fmt.Sprintf("%s v%d", def.Name, def.Version))
}

func (d *defined) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seen)
}

// TestObserverToldOfRegisteredDefinitions: a version registered at run
// time is told to the observer once stored, and not again when registered
// unchanged; a coordinator is told of every version it recovers from the
// bucket, the one given at start (stored as it starts) among them.
func TestObserverToldOfRegisteredDefinitions(t *testing.T) {
	_, url := testenv.Server(t)
	v1 := parseDefs(t, jobV1)
	run := func(obs *defined) (stop func()) {
		c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: v1, Observer: obs, Logger: testenv.Logger(t)})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		<-c.Ready()
		return func() { cancel(); require.NoError(t, <-done) }
	}
	first := &defined{}
	stop := run(first)
	nc := testenv.Connect(t, url)
	require.Nil(t, register(t, nc, jobV2).Error)
	require.Nil(t, register(t, nc, jobV2).Error, "the same content again")
	require.Equal(t, []string{"job v1", "job v2"}, first.names())
	stop()

	second := &defined{}
	stop = run(second)
	defer stop()
	require.ElementsMatch(t, []string{"job v1", "job v2"}, second.names(), "recovered from the bucket")
}

// TestMetadataCannotReplaceTheCoordinatorsOwn: Options.Metadata may not
// name what the coordinator announces itself.
func TestMetadataCannotReplaceTheCoordinatorsOwn(t *testing.T) {
	v1 := parseDefs(t, jobV1)
	o := coordinator.Options{Definitions: v1, Metadata: map[string]string{"metrics": "127.0.0.1:9464"}}
	require.NoError(t, o.Validate())
	for _, k := range []string{"definitions", "state", "copy"} {
		o.Metadata = map[string]string{k: "x"}
		require.ErrorContains(t, o.Validate(), `metadata "`+k+`" is the coordinator's own`)
	}
}

// TestNoDefinitionsAtStart: a coordinator started with no definitions
// runs the ones registered at run time, and, restarted with none again,
// those it finds in its bucket.
func TestNoDefinitionsAtStart(t *testing.T) {
	_, url := testenv.Server(t)
	stop := startCoordinator(t, url, nil)
	nc := testenv.Connect(t, url)
	f := newForeign(t, nc)
	require.Equal(t, 0, testenv.Summary(t, nc).Registered)

	resp := register(t, nc, jobV1)
	require.Nil(t, resp.Error)
	id := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, id, "open"))
	f.ok(t, f.next(t, id, "file"))
	testenv.WaitStatus(t, nc, id, saga.Completed)

	stop()
	startCoordinator(t, url, nil)
	again := testenv.Start(t, nc, "job", nil)
	f.ok(t, f.next(t, again, "open"))
	f.ok(t, f.next(t, again, "file"))
	testenv.WaitStatus(t, nc, again, saga.Completed)
	require.Equal(t, 1, testenv.Summary(t, nc).Registered)
}

// TestStoredDefinitionTakingASubjectNamesTheCause: a stored definition
// whose subject is another definition's is skipped with an error that
// says so, not that a version changed its content.
func TestStoredDefinitionTakingASubjectNamesTheCause(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	stop := startCoordinator(t, url, parseDefs(t, jobV1))
	stop()
	_, kv := sagaBucket(t, nc)
	_, err := kv.Create(t.Context(), messages.DefinitionKey("evil", 1),
		[]byte(`{"roles":["clerk"],"sagas":[{"name":"evil","subject":"job","steps":[{"name":"x","role":"clerk"}]}]}`))
	require.NoError(t, err)

	log := newLogSink()
	runCoordinator(t, url, parseDefs(t, jobV1), slog.New(log))
	require.Equal(t, 1, log.count(slog.LevelError, "stored definition skipped", `its name or subject is another definition's`))
	require.Zero(t, log.count(slog.LevelError, "stored definition skipped", "other content"))
	require.Equal(t, 1, testenv.Summary(t, nc).Registered)
}

// parseDefs parses the definitions file file.
func parseDefs(t *testing.T, file string) []saga.Definition {
	t.Helper()
	defs, err := saga.ParseFile([]byte(file))
	require.NoError(t, err)
	return defs
}
