package participant_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestAgentsAreMicroServices runs two agents of different roles and finds
// them through micro's $SRV.PING and INFO, with their role and copy in the
// metadata, and reads their statistics through $SRV.STATS with
// participant.CollectStats after a saga they served.
func TestAgentsAreMicroServices(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	testenv.Agent(t, url, participant.Options{Role: "cleaner", Name: "cleaner-a", Steps: []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner-a", c)},
		{Saga: chores, Name: "mop", Handler: counter("cleaner-a", c)},
	}})
	testenv.Agent(t, url, participant.Options{Role: "inspector", Name: "inspector-a", Steps: []agent.Step{
		{Saga: chores, Name: "inspect", Handler: counter("inspector-a", c)},
	}})
	nc := testenv.Connect(t, url)

	// Every agent answers a PING; collect the answers for a while.
	subj, err := micro.ControlSubject(micro.InfoVerb, messages.AgentService, "")
	require.NoError(t, err)
	infos := map[string]micro.Info{}
	require.Eventually(t, func() bool {
		inbox := nc.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		require.NoError(t, err)
		defer func() { _ = sub.Unsubscribe() }()
		require.NoError(t, nc.PublishRequest(subj, inbox, nil))
		for {
			m, err := sub.NextMsg(300 * time.Millisecond)
			if err != nil {
				break
			}
			var info micro.Info
			require.NoError(t, json.Unmarshal(m.Data, &info))
			infos[info.Metadata["copy"]] = info
		}
		return len(infos) == 2
	}, 10*time.Second, 10*time.Millisecond)
	pid := strconv.Itoa(os.Getpid())
	require.Equal(t, map[string]string{"role": "cleaner", "copy": "cleaner-a", "pid": pid, "serial": "false"}, infos["cleaner-a"].Metadata)
	require.Equal(t, map[string]string{"role": "inspector", "copy": "inspector-a", "pid": pid, "serial": "false"}, infos["inspector-a"].Metadata)
	require.Equal(t, messages.ServiceVersion, infos["cleaner-a"].Version)
	require.Len(t, infos["cleaner-a"].Endpoints, 1)
	require.Equal(t, messages.AgentStatsSubject, infos["cleaner-a"].Endpoints[0].Subject)

	id := testenv.Start(t, nc, chores, messages.Context{})
	testenv.WaitStatus(t, nc, id, saga.Completed)

	stats, err := participant.CollectStats(context.Background(), nc, participant.StatsWait{Want: 2, Max: 5 * time.Second}, func(err error) { t.Error(err) })
	require.NoError(t, err)
	got := map[string]messages.AgentStats{}
	for _, s := range stats {
		got[s.Agent] = s
	}
	require.Len(t, got, 2)
	require.Equal(t, "cleaner", got["cleaner-a"].Role)
	require.EqualValues(t, 2, got["cleaner-a"].Executed)
	require.EqualValues(t, 2, got["cleaner-a"].Handled)
	require.EqualValues(t, 1, got["inspector-a"].Executed)

	// The stats endpoint answers on its own subject too, from every agent.
	var direct messages.AgentStats
	testenv.Request(t, nc, messages.AgentStatsSubject, struct{}{}, &direct)
	require.Contains(t, []string{"cleaner-a", "inspector-a"}, direct.Agent)
}

// TestCollectStatsGrace runs three agents and asks for the statistics of
// two: with no grace the collection stops at the second answer; with a
// grace it counts the third agent too, and returns long before its bound.
func TestCollectStatsGrace(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	var agents []*participant.Agent
	for _, name := range []string{"cleaner-a", "cleaner-b", "cleaner-c"} {
		agents = append(agents, testenv.Agent(t, url, participant.Options{Role: "cleaner", Name: name, Steps: []agent.Step{
			{Saga: chores, Name: "sweep", Handler: counter(name, c)},
		}}))
	}
	require.Eventually(t, func() bool {
		for _, a := range agents {
			if a.Health() != nil {
				return false
			}
		}
		return true
	}, 10*time.Second, 10*time.Millisecond)
	nc := testenv.Connect(t, url)
	ctx := t.Context()
	fail := func(err error) { t.Error(err) }

	stats, err := participant.CollectStats(ctx, nc, participant.StatsWait{Want: 2, Max: time.Minute}, fail)
	require.NoError(t, err)
	require.Len(t, stats, 2)

	const bound = time.Minute
	began := time.Now()
	stats, err = participant.CollectStats(ctx, nc, participant.StatsWait{Want: 2, Grace: time.Second, Max: bound}, fail)
	require.NoError(t, err)
	require.Len(t, stats, 3)
	require.Less(t, time.Since(began), bound/2, "the grace, not the bound, ended the wait")

	// No number known: every agent that answers within the bound.
	stats, err = participant.CollectStats(ctx, nc, participant.StatsWait{Max: time.Second}, fail)
	require.NoError(t, err)
	require.Len(t, stats, 3)

	_, err = participant.CollectStats(ctx, nc, participant.StatsWait{Grace: -time.Second}, fail)
	require.ErrorIs(t, err, messages.ErrBadRequest)
}

// TestMetadataCannotReplaceTheAgentsOwn: Options.Metadata is announced
// beside the agent's role, copy and pid, and may not name them.
func TestMetadataCannotReplaceTheAgentsOwn(t *testing.T) {
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	o := participant.Options{Role: "till", Name: "till-1", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}},
		Metadata: map[string]string{"metrics": "127.0.0.1:9464"}}
	require.NoError(t, o.Validate())
	for _, k := range []string{"role", "copy", "pid", "serial"} {
		o.Metadata = map[string]string{k: "x"}
		require.ErrorIs(t, o.Validate(), messages.ErrBadRequest, k)
	}
}

// TestAnnouncedOnlyOncePulling: an agent whose consumer cannot be created
// yet (here its user may not create it: the request is never answered,
// and the set-up is tried again, as while a cluster elects its leaders)
// is no micro service, so that a driver waiting for its agents does not
// count it (once it pulls it is one: TestAgentsAreMicroServices).
func TestAnnouncedOnlyOncePulling(t *testing.T) {
	_, url := testenv.ServerWith(t, `jetstream: enabled
authorization { users = [
  {user: admin, password: a}
  {user: agent, password: b, permissions: {publish: {deny: ["$JS.API.CONSUMER.CREATE.NATSAGA_COMMANDS.>"]}}}
]}
`)
	as := func(user string) string { return strings.Replace(url, "nats://", "nats://"+user+"@", 1) }
	testenv.Coordinator(t, as("admin:a"), []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	var logs testenv.SyncBuffer
	testenv.Agent(t, as("agent:b"), participant.Options{Role: "inspector", Name: "inspector-a",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Steps: []agent.Step{{Saga: chores, Name: "inspect", Handler: counter("inspector-a", c)}}})
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent set-up failed for now") },
		30*time.Second, 10*time.Millisecond, "the consumer is refused: %s", &logs)

	admin := testenv.Connect(t, as("admin:a"))
	ping, err := micro.ControlSubject(micro.PingVerb, messages.AgentService, "")
	require.NoError(t, err)
	answers := func() bool {
		_, err := admin.Request(ping, nil, 50*time.Millisecond)
		return err == nil
	}
	require.Never(t, answers, 2*time.Second, 50*time.Millisecond, "announced while it cannot pull")
}

// TestDiscoveryNeverWritesTheLedger sends micro's PING, INFO and STATS
// with the insurer's ledger subject as their reply subject, as one with
// leave to publish on $SRV could: nothing is answered there, and the
// ledger stored is the insurer's, whole.
func TestDiscoveryNeverWritesTheLedger(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	var logs testenv.SyncBuffer
	testenv.Agent(t, url, participant.Options{Role: flood.Insurer, Steps: flood.InsurerSteps(), Serial: true, Init: flood.InitLedger(1000),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	nc := testenv.Connect(t, url)
	ping, err := micro.ControlSubject(micro.PingVerb, messages.AgentService, "")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := nc.Request(ping, nil, 100*time.Millisecond)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "announced")

	ledger := messages.DataSubject(flood.Insurer, flood.LedgerKey)
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		subject, err := micro.ControlSubject(verb, messages.AgentService, "")
		require.NoError(t, err)
		require.NoError(t, nc.PublishRequest(subject, ledger, nil))
		// Answered in turn: once this one is, the one before was handled.
		_, err = nc.Request(subject, nil, 5*time.Second)
		require.NoError(t, err)
	}

	// The stats endpoint too, and a flood of such requests is said once.
	for range 50 {
		require.NoError(t, nc.PublishRequest(messages.AgentStatsSubject, ledger, nil))
	}
	_, err = nc.Request(messages.AgentStatsSubject, nil, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(logs.String(), `msg="stats not sent"`), "%s", &logs)
	require.Equal(t, 1, strings.Count(logs.String(), `msg="micro discovery not answered"`), "%s", &logs)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(context.Background(), messages.StateStream(flood.Insurer))
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(context.Background(), ledger)
	require.NoError(t, err)
	var stored struct{ Value flood.Ledger }
	require.NoError(t, json.Unmarshal(m.Data, &stored), "%s", m.Data)
	require.Equal(t, flood.Ledger{Initial: 1000, Balance: 1000, Spent: map[string]int64{}}, stored.Value)
	require.Equal(t, uint64(1), m.Sequence, "the ledger's one write, its opening")
}

// TestNotReadyWhileItsConsumerIsLost deletes the command stream under two
// serving agents, one shared and one serial: each says it does not serve,
// naming its consumer, until the stream is back; then each is ready again
// and serves a saga.
func TestNotReadyWhileItsConsumerIsLost(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	cleaner := testenv.Agent(t, url, participant.Options{Role: "cleaner", Steps: []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner", c)}, {Saga: chores, Name: "mop", Handler: counter("cleaner", c)}}})
	inspector := testenv.Agent(t, url, participant.Options{Role: "inspector", Serial: true, Steps: []agent.Step{
		{Saga: chores, Name: "inspect", Handler: counter("inspector", c)}}})
	agents := []*participant.Agent{cleaner, inspector}
	for _, a := range agents {
		require.Eventually(t, func() bool { return a.Health() == nil }, 10*time.Second, 5*time.Millisecond)
	}

	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	stream, err := js.Stream(ctx, messages.CommandStream)
	require.NoError(t, err)
	cfg := stream.CachedInfo().Config
	require.NoError(t, js.DeleteStream(ctx, messages.CommandStream))
	for _, a := range agents {
		require.Eventually(t, func() bool {
			err := a.Health()
			return errors.Is(err, participant.ErrNotServing) && strings.Contains(err.Error(), "consumer")
		}, 20*time.Second, 5*time.Millisecond, "%s: %v", a.Name(), a.Health())
	}

	_, err = js.CreateStream(ctx, cfg)
	require.NoError(t, err)
	for _, a := range agents {
		require.Eventually(t, func() bool { return a.Health() == nil }, 20*time.Second, 5*time.Millisecond, "%s: %v", a.Name(), a.Health())
	}
	id := testenv.Start(t, nc, chores, messages.Context{})
	testenv.WaitStatus(t, nc, id, saga.Completed)
}

// TestAgentMakesItsStoreAgainWhenItIsGone deletes the state and record
// streams of two serving agents, one shared and one serial, as a server
// back with an empty store has none: each sets itself up again, which
// makes them anew, and serves a saga.
func TestAgentMakesItsStoreAgainWhenItIsGone(t *testing.T) {
	participant.SetStoreCheck(t, 50*time.Millisecond)
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	var logs testenv.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	testenv.Agent(t, url, participant.Options{Role: "cleaner", Logger: logger, Steps: []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner", c)}, {Saga: chores, Name: "mop", Handler: counter("cleaner", c)}}})
	testenv.Agent(t, url, participant.Options{Role: "inspector", Serial: true, Logger: logger, Steps: []agent.Step{
		{Saga: chores, Name: "inspect", Handler: counter("inspector", c)}}})
	nc := testenv.Connect(t, url)
	testenv.WaitStatus(t, nc, testenv.Start(t, nc, chores, messages.Context{}), saga.Completed)

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	var streams []string
	for _, role := range []string{"cleaner", "inspector"} {
		streams = append(streams, messages.StateStream(role), messages.RecordStream(role))
	}
	for _, name := range streams {
		require.NoError(t, js.DeleteStream(ctx, name))
	}
	require.Eventually(t, func() bool { return strings.Count(logs.String(), "the role's store is gone from the server") == 2 },
		10*time.Second, 5*time.Millisecond, "%s", &logs)
	require.Eventually(t, func() bool {
		for _, name := range streams {
			if _, err := js.Stream(ctx, name); err != nil {
				return false
			}
		}
		return true
	}, 20*time.Second, 10*time.Millisecond, "the streams are made anew: %s", &logs)
	testenv.WaitStatus(t, nc, testenv.Start(t, nc, chores, messages.Context{}), saga.Completed)
}

// TestAgentRefusesCopiesOfAnotherWireVersion runs, as micro services, a
// copy of the role "cleaner" announcing wire version 2, one of another role
// announcing 2, and one of the role announcing this build's version: a new
// cleaner refuses to start, naming the old copy, and makes nothing of the
// role (no record stream, which would tell a coordinator that the role
// speaks version 3). Told to skip the check, a copy serves beside the
// old one; once the old copy is gone, every copy serves.
func TestAgentRefusesCopiesOfAnotherWireVersion(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	announce := func(role, copy, version string) micro.Service {
		svc, err := micro.AddService(nc, micro.Config{Name: messages.AgentService, Version: version,
			Metadata: map[string]string{"role": role, "copy": copy, "pid": "4242"}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = svc.Stop() })
		return svc
	}
	old := announce("cleaner", "cleaner-old", "2.1.0")
	announce("inspector", "inspector-old", "2.1.0")
	announce("cleaner", "cleaner-new", messages.ServiceVersion)

	opts := participant.Options{Role: "cleaner", Name: "cleaner-b", Logger: testenv.Logger(t), Steps: []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner-b", &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}})},
	}}
	a, err := participant.New(testenv.Connect(t, url), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = a.Run(ctx)
	require.ErrorIs(t, err, participant.ErrOtherVersion)
	require.ErrorContains(t, err, "cleaner-old (pid 4242, version 2.1.0)")
	require.NotContains(t, err.Error(), "inspector-old")
	require.NotContains(t, err.Error(), "cleaner-new")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Stream(t.Context(), messages.RecordStream("cleaner"))
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound)

	// Told to skip the check (the old copy's answer a forgery, say), a
	// copy serves beside it.
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	s := testenv.Agent(t, url, participant.Options{Role: "cleaner", Name: "cleaner-s", Steps: opts.Steps, SkipCopiesCheck: true})
	require.Eventually(t, func() bool { return s.Health() == nil }, 10*time.Second, 10*time.Millisecond)

	require.NoError(t, old.Stop())
	b := testenv.Agent(t, url, participant.Options{Role: "cleaner", Name: "cleaner-c", Steps: opts.Steps})
	require.Eventually(t, func() bool { return b.Health() == nil }, 10*time.Second, 10*time.Millisecond)
}

// TestAgentRefusesCopiesThatRunSerialOtherwise: beside a running copy of
// the role "cleaner" that is not serial, a serial copy refuses to start,
// naming it, and makes nothing of the role; a copy announcing no serial
// (an agent before the key) is not counted against it.
func TestAgentRefusesCopiesThatRunSerialOtherwise(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	svc, err := micro.AddService(nc, micro.Config{Name: messages.AgentService, Version: messages.ServiceVersion,
		Metadata: map[string]string{"role": "cleaner", "copy": "cleaner-older", "pid": "4243"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = svc.Stop() })
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	steps := []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner", &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}})},
	}
	first := testenv.Agent(t, url, participant.Options{Role: "cleaner", Name: "cleaner-a", Steps: steps})
	require.Eventually(t, func() bool { return first.Health() == nil }, 10*time.Second, 10*time.Millisecond)

	a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "cleaner", Name: "cleaner-b", Serial: true,
		Logger: testenv.Logger(t), Steps: steps})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = a.Run(ctx)
	require.ErrorIs(t, err, participant.ErrOtherSerial)
	require.EqualError(t, err, "agent cleaner-b: copies of the role that run serial otherwise are running: role cleaner, "+
		"this copy runs with serial true, and cleaner-a (pid "+strconv.Itoa(os.Getpid())+", serial false); start every copy of a role alike")
}

// TestCopiesStartedTogetherThatRunSerialOtherwise: copies started at once
// pass each other's first check. A second look, after the copy announced
// itself, stops the one of a disagreeing pair whose name sorts after the
// other's, and only it.
func TestCopiesStartedTogetherThatRunSerialOtherwise(t *testing.T) {
	defer participant.SetCopiesRecheck(2 * time.Second)()
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	steps := []agent.Step{
		{Saga: chores, Name: "sweep", Handler: counter("cleaner", &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}})},
	}
	// run starts a serial copy named name, and, once it serves, a copy
	// announcing serial false, named other, as one started with it would.
	run := func(name, other string) (*participant.Agent, *testenv.SyncBuffer, chan error, micro.Service) {
		t.Helper()
		logs := &testenv.SyncBuffer{}
		a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "cleaner", Name: name, Serial: true, Steps: steps,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		done, ran := make(chan error, 1), make(chan struct{})
		go func() {
			defer close(ran)
			done <- a.Run(ctx)
		}()
		t.Cleanup(func() {
			cancel()
			<-ran
		})
		require.Eventually(t, func() bool { return a.Health() == nil }, 10*time.Second, 10*time.Millisecond)
		svc, err := micro.AddService(nc, micro.Config{Name: messages.AgentService, Version: messages.ServiceVersion,
			Metadata: map[string]string{"role": "cleaner", "copy": other, "pid": "4244", "serial": "false"}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = svc.Stop() })
		return a, logs, done, svc
	}

	// The other sorts after it: it serves on.
	a, logs, _, other := run("cleaner-b", "cleaner-c")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "the role's copies run serial alike") },
		10*time.Second, 10*time.Millisecond, "%s", logs)
	require.NoError(t, a.Health())
	require.NoError(t, other.Stop())

	// The other sorts before it: it stops.
	_, _, done, _ := run("cleaner-d", "cleaner-a")
	select {
	case err := <-done:
		require.ErrorIs(t, err, participant.ErrOtherSerial)
		require.ErrorContains(t, err, "cleaner-a (pid 4244, serial false), which started with it and sort before it")
	case <-time.After(10 * time.Second):
		t.Fatal("a copy disagreeing with an earlier-named one served on")
	}
}

// TestStreamsCutByHandAreSaid: an operator who cut the limits of a role's
// record or state stream has lost records or values, and commands whose
// records went run again; a copy starting on such a server says so at
// error, naming each stream and its cut, and sets the stream back.
func TestStreamsCutByHandAreSaid(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	steps := []agent.Step{{Saga: chores, Name: "sweep", Handler: counter("cleaner", c)}, {Saga: chores, Name: "mop", Handler: counter("cleaner", c)}}
	var first testenv.SyncBuffer
	testenv.Agent(t, url, participant.Options{Role: "cleaner", Logger: slog.New(slog.NewTextHandler(&first, nil)), Steps: steps})
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Stream(t.Context(), messages.RecordStream("cleaner"))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the role's streams are made")
	require.NotContains(t, first.String(), "level=ERROR", "a new role's streams are not cut")
	for name, cut := range map[string]func(*jetstream.StreamConfig){
		messages.RecordStream("cleaner"): func(c *jetstream.StreamConfig) { c.MaxMsgs = 5 },
		messages.StateStream("cleaner"):  func(c *jetstream.StreamConfig) { c.MaxBytes = 4096 },
	} {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		cfg := st.CachedInfo().Config
		cut(&cfg)
		_, err = js.UpdateStream(t.Context(), cfg)
		require.NoError(t, err)
	}

	var logs testenv.SyncBuffer
	testenv.Agent(t, url, participant.Options{Role: "cleaner", Logger: slog.New(slog.NewTextHandler(&logs, nil)), Steps: steps})
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), `level=ERROR msg="a stream's limits were cut by hand`) == 2
	}, 10*time.Second, 5*time.Millisecond, "%s", &logs)
	said := logs.String()
	require.Contains(t, said, `stream=NATSAGA_RECORDS_CLEANER cut="max_msgs 5, not unlimited"`)
	require.Contains(t, said, `stream=NATSAGA_STATE_CLEANER cut="max_bytes 4096, not unlimited"`)
	for _, name := range []string{messages.RecordStream("cleaner"), messages.StateStream("cleaner")} {
		st, err := js.Stream(t.Context(), name)
		require.NoError(t, err)
		require.Equal(t, int64(-1), st.CachedInfo().Config.MaxMsgs, name)
		require.Equal(t, int64(-1), st.CachedInfo().Config.MaxBytes, name)
	}
}
