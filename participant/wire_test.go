package participant_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// publishCommands publishes cmds as the coordinator does: one alone, more
// as one batch (wire version 2).
func publishCommands(t *testing.T, js jetstream.JetStream, cmds ...messages.Command) {
	t.Helper()
	var parts [][]byte
	for i := range cmds {
		data, err := wirejson.AppendCommand(nil, &cmds[i])
		require.NoError(t, err)
		parts = append(parts, data)
	}
	publishRaw(t, js, cmds[0].Subject(), parts...)
}

// publishRaw publishes the raw commands parts on subject, as a batch when
// there is more than one.
func publishRaw(t *testing.T, js jetstream.JetStream, subject string, parts ...[]byte) {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = parts[0]
	if len(parts) > 1 {
		m.Data = wirejson.AppendCommandBatch(nil, parts)
		m.Header.Set(messages.BatchHeader, strconv.Itoa(len(parts)))
	}
	_, err := js.PublishMsg(context.Background(), m)
	require.NoError(t, err)
}

// TestAgentAnswersEachCommandOfABatch sends an agent one batch holding
// commands that succeed, one its handler rejects, one malformed and one
// for a step it does not serve: each is decided on its own, the rejection
// and the refusals spoil none of their neighbours, and the batch is
// acknowledged once all are settled. The same batch sent again (as after
// a coordinator's restart) is answered from the barrier records: nothing
// is paid twice.
func TestAgentAnswersEachCommandOfABatch(t *testing.T) {
	url, js, commands := payStream(t, "spend")
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: messages.ReplyStream, Subjects: messages.ReplySubjects,
		Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)

	var mu sync.Mutex
	ran := map[string]int{}
	a := testenv.Agent(t, url, participant.Options{Role: "till", Concurrency: 4, Steps: []agent.Step{{Saga: "pay", Name: "spend",
		Handler: agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
				mu.Lock()
				ran[cmd.SagaID]++
				mu.Unlock()
				if cmd.SagaID == "broke" {
					return nil, agent.Reject("no money")
				}
				var n int
				if _, err := tx.Get("paid."+cmd.SagaID, &n); err != nil {
					return nil, err
				}
				return messages.Context{}.MustSet("paid", cmd.SagaID), tx.Put("paid."+cmd.SagaID, n+1)
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.Eventually(t, func() bool {
		info, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil && info.CachedInfo().Config.Metadata[messages.WireMetadata] == "2"
	}, 10*time.Second, 10*time.Millisecond, "the consumer says the agent reads batches")

	cmd := func(id, step string) []byte {
		c := messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: step, Action: messages.Execute, Attempt: 1, Seq: 1}
		data, err := wirejson.AppendCommand(nil, &c)
		require.NoError(t, err)
		return data
	}
	batch := [][]byte{cmd("s-1", "spend"), cmd("broke", "spend"), []byte(`{"v":9}`), cmd("s-2", "spend"), cmd("s-3", "mop")}
	publishRaw(t, js, messages.ExecuteSubject("pay", "spend"), batch...)
	emptied := func() bool {
		info, err := commands.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}
	require.Eventually(t, emptied, 10*time.Second, 10*time.Millisecond, "the batch is acknowledged")
	require.Eventually(t, func() bool { return a.Stats().Handled == 3 }, 10*time.Second, 10*time.Millisecond)

	outcome := func(id string) string {
		rec, _, err := a.Store().Branch(ctx, id, "spend")
		require.NoError(t, err)
		if rec.Execute == nil {
			return "none"
		}
		return string(rec.Execute.Outcome) + " " + rec.Execute.Reason
	}
	require.Equal(t, "ok ", outcome("s-1"))
	require.Equal(t, "failed no money", outcome("broke"))
	require.Equal(t, "ok ", outcome("s-2"))
	require.Equal(t, "none", outcome("s-3"))
	st := a.Stats()
	require.Equal(t, int64(3), st.Executed)
	require.Equal(t, int64(2), st.Rejected, "the malformed command and the one for a step not served")
	require.Equal(t, int64(0), st.Duplicates)
	require.Equal(t, int64(1), st.Messages, "five commands in one message")

	publishRaw(t, js, messages.ExecuteSubject("pay", "spend"), batch...)
	require.Eventually(t, emptied, 10*time.Second, 10*time.Millisecond, "the batch sent again is acknowledged")
	require.Eventually(t, func() bool { return a.Stats().Duplicates == 3 }, 10*time.Second, 10*time.Millisecond)
	for _, id := range []string{"s-1", "s-2"} {
		var n int
		_, err := a.Store().Get(ctx, "paid."+id, &n)
		require.NoError(t, err)
		require.Equal(t, 1, n, "%s paid once", id)
	}
	mu.Lock()
	require.Zero(t, ran["s-3"], "a command for a step not served never runs")
	mu.Unlock()
}

// TestMalformedBatchIsDropped sends batches whose envelope is wrong: each
// is dropped whole, counted, and the agent goes on to the next message.
func TestMalformedBatchIsDropped(t *testing.T) {
	url, js, commands := payStream(t, "spend")
	ctx := context.Background()
	a := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend",
		Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	whole := `{"v":2,"commands":[{"v":1,"saga_id":"s-9","saga":"pay","step":"spend","action":"execute","attempt":1,"seq":1,"tick":0,"context":{}}]}`
	for _, tc := range []struct{ body, count string }{
		{`{"v":1,"commands":[{}]}`, "1"}, {`{"v":2,"commands":[]}`, "1"}, {`not json`, "1"}, {`{"v":2,"commands":{}}`, "1"},
		// A whole batch whose header miscounts it.
		{whole, "2"}, {whole, "one"}, {whole, "01"},
	} {
		m := nats.NewMsg(messages.ExecuteSubject("pay", "spend"))
		m.Data = []byte(tc.body)
		m.Header.Set(messages.BatchHeader, tc.count)
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	c := messages.Command{V: messages.Version, SagaID: "s-1", Saga: "pay", Step: "spend", Action: messages.Execute, Attempt: 1, Seq: 1}
	publishCommands(t, js, c)
	require.Eventually(t, func() bool { return a.Stats().Handled == 1 && a.Stats().Rejected == 7 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := commands.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond)
}

// TestDroppedCommandsOfOneBatchSaidTenTimes: a batch of 30 malformed
// commands and a good one writes ten error lines and one warning, not
// thirty lines; each dropped command is counted, the good one runs, and
// the next message's drops are said again.
func TestDroppedCommandsOfOneBatchSaidTenTimes(t *testing.T) {
	a, logs, nc := servingAgent(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	bad := []byte(`{"v":9}`)
	good := []byte(`{"v":1,"saga_id":"ok-1","saga":"s","step":"x","action":"execute","attempt":1,"seq":1,"tick":0,"context":{}}`)
	batch := [][]byte{good}
	for range 30 {
		batch = append(batch, bad)
	}
	publishRaw(t, js, messages.ExecuteSubject("s", "x"), batch...)
	require.Eventually(t, func() bool { return a.Stats().Handled == 1 && a.Stats().Rejected == 30 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 10, strings.Count(logs.String(), `level=ERROR msg="dropping malformed command"`), "%s", logs)
	require.Equal(t, 1, strings.Count(logs.String(), `level=WARN msg="more commands of one message dropped`), "%s", logs)

	publishRaw(t, js, messages.ExecuteSubject("s", "x"), bad, bad)
	require.Eventually(t, func() bool { return a.Stats().Rejected == 32 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool {
		return strings.Count(logs.String(), `level=ERROR msg="dropping malformed command"`) == 12
	}, 10*time.Second, 5*time.Millisecond, "%s", logs)
	require.Equal(t, 1, strings.Count(logs.String(), `msg="more commands of one message dropped`), "%s", logs)
}

// TestQueuedBatchesKeptWhileWorkersAreBusy gives a copy with eight workers
// far more batched commands than they run in an ack wait: twenty messages
// of 256, each command taking 6 ms or more. The ack wait is 2 s, so that
// the copy keeps its messages (every ack wait/3) with a margin of over a
// second, however loaded the machine the race suite runs on. Every message the copy has
// taken is kept from redelivery however long it waits for a worker, and
// the copy takes no message it cannot keep: each command runs once, none
// is delivered twice.
func TestQueuedBatchesKeptWhileWorkersAreBusy(t *testing.T) {
	const msgs, per = 20, messages.MaxBatch
	url, js, commands := payStream(t, "spend")
	ctx := context.Background()
	var mu sync.Mutex
	ran := map[string]int{}
	a := testenv.Agent(t, url, participant.Options{Role: "till", Concurrency: 8, AckWait: 2 * time.Second,
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				// Simulated work: the 5,120 commands take close to
				// two ack waits to run, eight at a time.
				time.Sleep(6 * time.Millisecond)
				mu.Lock()
				ran[cmd.SagaID]++
				mu.Unlock()
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.Eventually(t, func() bool {
		_, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil
	}, 10*time.Second, 10*time.Millisecond)

	for m := range msgs {
		var cmds []messages.Command
		for i := range per {
			cmds = append(cmds, messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d-%03d", m, i), Saga: "pay",
				Step: "spend", Action: messages.Execute, Attempt: 1, Seq: 1})
		}
		publishCommands(t, js, cmds...)
	}
	require.Eventually(t, func() bool { return a.Stats().Handled == msgs*per }, 60*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := commands.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "every message acknowledged")

	st := a.Stats()
	require.Zero(t, st.Redelivered, "messages delivered again")
	require.Zero(t, st.Duplicates)
	require.Equal(t, int64(msgs), st.Messages)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, ran, msgs*per)
	for id, n := range ran {
		require.Equal(t, 1, n, "%s ran %d times", id, n)
	}
}

// TestACopyLeavesAStepItDoesNotServe runs two copies of a role, as in a
// rolling update: an older one that serves only "spend" and a newer one
// that serves "tip" too, which started last and so widened the role's
// consumer to both. Every "tip" command is run, by the newer copy: the
// older one puts back those it is given instead of dropping them.
func TestACopyLeavesAStepItDoesNotServe(t *testing.T) {
	url, js, _ := payStream(t, "spend", "tip")
	ctx := context.Background()
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	filter := func(n int) func() bool {
		return func() bool {
			info, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
			return err == nil && len(info.CachedInfo().Config.FilterSubjects) == n
		}
	}
	var logs testenv.SyncBuffer
	older := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.Eventually(t, filter(2), 10*time.Second, 10*time.Millisecond)
	newer := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{
		{Saga: "pay", Name: "spend", Handler: ok}, {Saga: "pay", Name: "tip", Handler: ok}}})
	require.Eventually(t, filter(4), 10*time.Second, 10*time.Millisecond)

	const n = 40
	for i := range n {
		publishCommands(t, js, messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d", i), Saga: "pay", Step: "tip",
			Action: messages.Execute, Attempt: 1, Seq: 1})
	}
	require.Eventually(t, func() bool { return newer.Stats().Executed == n }, 60*time.Second, 10*time.Millisecond,
		"the newer copy ran %d of %d", newer.Stats().Executed, n)
	require.Zero(t, older.Stats().Executed)
	require.Zero(t, older.Stats().Rejected, "the older copy dropped a command")
	require.LessOrEqual(t, strings.Count(logs.String(), "command for a step this copy does not serve"), 1,
		"said at most once a minute:\n%s", logs.String())
}

// TestACopyThatNarrowsTheConsumerSaysSo: a copy of an older build started
// after a newer one sets the role's consumer to its own steps, and the
// newer step's commands then go to no copy: it says so, naming them.
func TestACopyThatNarrowsTheConsumerSaysSo(t *testing.T) {
	url, _, _ := payStream(t, "spend", "tip")
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	var newerLogs, olderLogs testenv.SyncBuffer
	testenv.Agent(t, url, participant.Options{Role: "till", Logger: slog.New(slog.NewTextHandler(&newerLogs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}, {Saga: "pay", Name: "tip", Handler: ok}}})
	require.Eventually(t, func() bool { return strings.Contains(newerLogs.String(), "agent serving") }, 10*time.Second, 10*time.Millisecond)
	testenv.Agent(t, url, participant.Options{Role: "till", Logger: slog.New(slog.NewTextHandler(&olderLogs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.Eventually(t, func() bool { return strings.Contains(olderLogs.String(), "agent serving") }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, olderLogs.String(), `msg="this copy narrows the role's consumer`)
	require.Contains(t, olderLogs.String(), "dropped=\"[saga.pay.tip saga.pay.tip.compensate]\"")
	require.NotContains(t, newerLogs.String(), "narrows")
}

// TestAgentSaysItWaitsForTheCoordinator starts an agent before any
// coordinator: it says what it waits for, and serves once the command
// stream is there.
func TestAgentSaysItWaitsForTheCoordinator(t *testing.T) {
	_, url := testenv.Server(t)
	var logs testenv.SyncBuffer
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	testenv.Agent(t, url, participant.Options{Role: "till", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "waiting for a coordinator to create the command stream")
	}, 10*time.Second, 10*time.Millisecond, logs.String())
	require.NotContains(t, logs.String(), "agent serving")
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: messages.CommandStream,
		Subjects: messages.StepCommandSubjects("pay", "spend"), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent serving") },
		10*time.Second, 10*time.Millisecond, logs.String())
}

// TestAgentStoppedWhileWaitingForTheCoordinator: a stop asked for while
// the agent waits for the command stream is a stop, not a failure (it
// was an error naming the stream not found, and the program exited 1).
func TestAgentStoppedWhileWaitingForTheCoordinator(t *testing.T) {
	_, url := testenv.Server(t)
	var logs testenv.SyncBuffer
	a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "till",
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), "waiting for a coordinator to create the command stream")
	}, 10*time.Second, 10*time.Millisecond, logs.String())
	cancel()
	select {
	case err := <-ran:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestCommandsStoredBeforeTheirStepIsServedAreDelivered publishes "tip"
// commands while the role's only copy serves "spend" alone, so that the
// role's consumer passes over them, then starts a copy that serves "tip":
// it widens the consumer and has it deliver the passed-over commands,
// every one of which runs.
func TestCommandsStoredBeforeTheirStepIsServedAreDelivered(t *testing.T) {
	url, js, _ := payStream(t, "spend", "tip")
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	command := func(id, step string) messages.Command {
		return messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: step, Action: messages.Execute, Attempt: 1, Seq: 1}
	}
	older := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	const n = 10
	for i := range n {
		publishCommands(t, js, command(fmt.Sprintf("t-%d", i), "tip"))
	}
	// A spend after them: once the older copy has run it, the consumer
	// has passed over the tips.
	publishCommands(t, js, command("s-1", "spend"))
	require.Eventually(t, func() bool { return older.Stats().Executed == 1 }, 10*time.Second, 10*time.Millisecond)

	newer := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{
		{Saga: "pay", Name: "spend", Handler: ok}, {Saga: "pay", Name: "tip", Handler: ok}}})
	require.Eventually(t, func() bool { return newer.Stats().Executed == n }, 60*time.Second, 10*time.Millisecond,
		"the newer copy ran %d of the %d tips", newer.Stats().Executed, n)
	require.Equal(t, int64(1), older.Stats().Executed, "the spend ran once")
}

// TestAgentTriesItsSetUpAgain starts an agent whose user may not yet create
// consumers, as a JetStream cluster electing its leaders answers no one:
// its set-up times out, it says so and tries again, and once the server
// allows it (a configuration reload) it serves and runs a command.
func TestAgentTriesItsSetUpAgain(t *testing.T) {
	user := func(name string, deny ...string) *server.User {
		u := &server.User{Username: name, Password: name}
		if deny != nil {
			u.Permissions = &server.Permissions{Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: deny}}
		}
		return u
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{user("admin"), user("agent", "$JS.API.CONSUMER.CREATE.>", "$JS.API.CONSUMER.DURABLE.CREATE.>")}}
	ns, err := server.NewServer(opts)
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(10*time.Second))
	url := func(u string) string { return fmt.Sprintf("nats://%s:%s@%s", u, u, ns.Addr()) }

	js, err := jetstream.New(testenv.Connect(t, url("admin")))
	require.NoError(t, err)
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: messages.CommandStream,
		Subjects: messages.StepCommandSubjects("pay", "spend"), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	var logs testenv.SyncBuffer
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a := testenv.Agent(t, url("agent"), participant.Options{Role: "till", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "agent set-up failed for now; trying again") },
		20*time.Second, 10*time.Millisecond, logs.String())
	require.NotContains(t, logs.String(), "agent serving")

	allowed := *opts
	allowed.Users = []*server.User{user("admin"), user("agent")}
	require.NoError(t, ns.ReloadOptions(&allowed))
	require.Eventually(t, func() bool { return a.Health() == nil }, 30*time.Second, 10*time.Millisecond, logs.String())
	publishCommands(t, js, messages.Command{V: messages.Version, SagaID: "s-1", Saga: "pay", Step: "spend",
		Action: messages.Execute, Attempt: 1, Seq: 1})
	require.Eventually(t, func() bool { return a.Stats().Executed == 1 }, 10*time.Second, 10*time.Millisecond)
}

// TestAgentReturnsWhatWaitingDoesNotMend runs an agent asking for three
// copies of its streams on a single server: Run returns the server's
// refusal instead of trying again.
func TestAgentReturnsWhatWaitingDoesNotMend(t *testing.T) {
	_, url := testenv.Server(t)
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "till", Replicas: 3,
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = a.Run(ctx)
	require.ErrorContains(t, err, "replicas > 1 not supported in non-clustered mode")
	require.NoError(t, ctx.Err(), "Run returned at once, not when the wait ran out")
}

// TestAgentStopsWhenItsConnectionCloses closes the connection of a
// serving agent, as a connection whose reconnects ran out is: Run returns
// that error instead of trying to pull for ever, so the program exits and
// its supervisor starts it again.
func TestAgentStopsWhenItsConnectionCloses(t *testing.T) {
	url, _, _ := payStream(t, "spend")
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	a, err := participant.New(nc, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.NoError(t, err)
	ran := make(chan error, 1)
	go func() { ran <- a.Run(context.Background()) }()
	require.Eventually(t, func() bool { return a.Health() == nil }, 10*time.Second, 10*time.Millisecond)
	nc.Close()
	select {
	case err := <-ran:
		require.ErrorIs(t, err, nats.ErrConnectionClosed)
	case <-time.After(30 * time.Second):
		t.Fatal("Run went on with its connection closed")
	}
}

// TestAgentStopsWithoutAHandlerThatIgnoresItsContext stops an agent whose
// handler blocks and never looks at its context: Run returns
// ErrHandlerStuck one ack wait after the handler's context ended, instead
// of waiting for it for ever.
func TestAgentStopsWithoutAHandlerThatIgnoresItsContext(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			url, js, _ := payStream(t, "spend")
			running, release := make(chan struct{}), make(chan struct{})
			defer close(release)
			stuck := agent.Handler{
				Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
					close(running) // the one command sent
					<-release
					return nil, nil
				},
				Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
			}
			a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "till", Serial: serial, AckWait: time.Second,
				Logger: testenv.Logger(t), Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: stuck}}})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ran := make(chan error, 1)
			go func() { ran <- a.Run(ctx) }()
			publishCommands(t, js, messages.Command{V: messages.Version, SagaID: "s-1", Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1})
			select {
			case <-running:
			case <-time.After(30 * time.Second):
				t.Fatal("the command is not run")
			}
			cancel()
			select {
			case err := <-ran:
				require.ErrorIs(t, err, participant.ErrHandlerStuck)
			case <-time.After(30 * time.Second):
				t.Fatal("Run waits for a handler that ignores its context")
			}
		})
	}
}

// TestAgentSaysAHandlerThatRunsLong runs a command whose handler blocks
// until released, shared and serial: the agent says so once, at warn,
// naming the saga and the step, and says how long it took once it
// returns; a handler that returns soon is not said.
func TestAgentSaysAHandlerThatRunsLong(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			participant.SetSlowHandler(t, 300*time.Millisecond, 20*time.Millisecond)
			url, js, _ := payStream(t, "spend")
			running, release := make(chan struct{}, 2), make(chan struct{})
			slow := agent.Handler{
				Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
					if cmd.SagaID == "s-slow" {
						running <- struct{}{}
						<-release
					}
					return nil, nil
				},
				Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
			}
			var logs testenv.SyncBuffer
			a := testenv.Agent(t, url, participant.Options{Role: "till", Serial: serial,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)), Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: slow}}})
			// Released before the agent stops, whether or not the test
			// got that far.
			var once sync.Once
			free := func() { once.Do(func() { close(release) }) }
			t.Cleanup(free)
			publishCommands(t, js, messages.Command{V: messages.Version, SagaID: "s-quick", Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1})
			require.Eventually(t, func() bool { return a.Stats().Handled == 1 }, 10*time.Second, 10*time.Millisecond)
			publishCommands(t, js, messages.Command{V: messages.Version, SagaID: "s-slow", Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1})
			<-running
			said := "a handler has run long and not returned"
			require.Eventually(t, func() bool { return strings.Contains(logs.String(), said) }, 10*time.Second, 10*time.Millisecond)
			free()
			require.Eventually(t, func() bool { return strings.Contains(logs.String(), "the slow handler returned") }, 10*time.Second, 10*time.Millisecond)
			var warned []string
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, said) {
					warned = append(warned, line)
				}
			}
			require.Len(t, warned, 1, "said once")
			require.Contains(t, warned[0], "level=WARN")
			require.Contains(t, warned[0], "saga_id=s-slow saga=pay step=spend action=execute")
			if serial {
				require.Contains(t, warned[0], "its commands behind this one wait")
			}
			require.NotContains(t, logs.String(), "s-quick")
		})
	}
}

// TestACopyThatChangesTheAckWaitSaysSo starts two copies of a role with
// different ack waits: the ack wait is the role's consumer's, and the
// second copy, which changes it for both, says so.
func TestACopyThatChangesTheAckWaitSaysSo(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	steps := []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}
	var first, second testenv.SyncBuffer
	a := testenv.Agent(t, url, participant.Options{Role: "till", Steps: steps, Logger: slog.New(slog.NewTextHandler(&first, nil))})
	require.Eventually(t, func() bool { return a.Health() == nil }, 10*time.Second, 10*time.Millisecond)
	b := testenv.Agent(t, url, participant.Options{Role: "till", Steps: steps, AckWait: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(&second, nil))})
	require.Eventually(t, func() bool { return b.Health() == nil }, 10*time.Second, 10*time.Millisecond)
	require.Contains(t, second.String(), `msg="this copy changes the ack wait of the role's consumer, which every copy shares"`)
	require.Contains(t, second.String(), "consumer=agent-till was=5s now=2s")
	require.NotContains(t, first.String(), "changes the ack wait")
	cons, err := js.Consumer(context.Background(), messages.CommandStream, "agent-till")
	require.NoError(t, err)
	require.Equal(t, 2*time.Second, cons.CachedInfo().Config.AckWait)
}

// TestOptionsBounded refuses a concurrency that would only hold memory, a
// step named as a compensation's subject ends, and no connection.
func TestOptionsBounded(t *testing.T) {
	ok := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	_, err := participant.New(nil, participant.Options{Role: "till", Concurrency: participant.MaxConcurrency + 1,
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.ErrorIs(t, err, messages.ErrBadRequest)
	require.ErrorContains(t, err, "concurrency 4097: at most 4096")
	// A step may not take the last token of a compensation's subject.
	_, err = participant.New(nil, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "compensate", Handler: ok}}})
	require.ErrorIs(t, err, messages.ErrBadRequest)
	require.ErrorContains(t, err, "step pay.compensate: the name is reserved")
	// Good options without a connection are said so, not a panic later.
	_, err = participant.New(nil, participant.Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: ok}}})
	require.EqualError(t, err, "agent: no NATS connection (nil)")
	_, err = participant.OpenStore(t.Context(), nil, "till", true, 1)
	require.EqualError(t, err, "open store: no NATS connection (nil)")
	require.EqualError(t, participant.ServeQueries(t.Context(), nil, "till", "till.state", nil), "serve queries: no NATS connection (nil)")
}

// TestAStopLeavesTheCommandForAnotherCopy stops an agent whose handler
// waits for its context and returns its error, as agent.Handler asks: the
// agent answers nothing, the command goes to the next copy, and no
// attempt is spent (the step allows one: an error answered would roll the
// saga back).
func TestAStopLeavesTheCommandForAnotherCopy(t *testing.T) {
	for _, serial := range []bool{false, true} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			_, url := testenv.Server(t)
			def := saga.Definition{Name: "once", Subject: "once", Steps: []saga.Step{
				{Name: "try", Role: "worker", Retry: saga.RetryPolicy{MaxAttempts: 1}}}}
			testenv.Coordinator(t, url, []saga.Definition{def})
			nc := testenv.Connect(t, url)
			entered := make(chan struct{}, 1)
			waits := agent.Handler{
				Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
					entered <- struct{}{}
					<-ctx.Done()
					return nil, ctx.Err()
				},
				Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
			}
			stop := stoppable(t, url, participant.Options{Role: "worker", Serial: serial, AckWait: time.Second,
				Steps: []agent.Step{{Saga: "once", Name: "try", Handler: waits}}})
			id := testenv.Start(t, nc, "once", nil)
			<-entered
			require.NoError(t, stop(), "a handler that returns when its context ends stops cleanly")

			testenv.Agent(t, url, participant.Options{Role: "worker", Serial: serial, Steps: []agent.Step{{Saga: "once", Name: "try", Handler: agent.Handler{
				Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
				Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
			}}}})
			x := testenv.WaitStatus(t, nc, id, saga.Completed)
			require.Equal(t, 1, x.Attempt, "the first attempt, answered by the next copy")
		})
	}
}

// TestAStoppingCopyKeepsItsCommandUntilItLetsGo stops a copy whose
// handler runs on through the grace the stop gives it (one ack wait): the
// copy keeps the command meanwhile, so that it is not delivered to another
// copy while it still runs here, and then lets it go. The next copy gets
// it once, where it used to get it twice, side by side: redelivered when
// the stopping copy stopped keeping it, and again when that copy let it
// go.
func TestAStoppingCopyKeepsItsCommandUntilItLetsGo(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "once", Subject: "once", Steps: []saga.Step{{Name: "try", Role: "worker"}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	nc := testenv.Connect(t, url)
	step := func(h agent.Handler) []agent.Step { return []agent.Step{{Saga: "once", Name: "try", Handler: h}} }
	compensate := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	entered := make(chan struct{}, 1)
	stop := stoppable(t, url, participant.Options{Role: "worker", Name: "worker-1", AckWait: 2 * time.Second,
		Steps: step(agent.Handler{Compensate: compensate,
			Execute: func(ctx context.Context, _ agent.Tx, _ *messages.Command) (messages.Context, error) {
				entered <- struct{}{}
				<-ctx.Done()
				return nil, ctx.Err()
			}})})
	id := testenv.Start(t, nc, "once", nil)
	<-entered

	var runs atomic.Int32
	release := make(chan struct{})
	testenv.Agent(t, url, participant.Options{Role: "worker", Name: "worker-2", AckWait: 2 * time.Second,
		Steps: step(agent.Handler{Compensate: compensate,
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				runs.Add(1)
				<-release
				return nil, nil
			}})})
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(released) // before the copy stops, should a check fail
	require.NoError(t, stop())
	require.Eventually(t, func() bool { return runs.Load() >= 1 }, 10*time.Second, 5*time.Millisecond)
	require.Never(t, func() bool { return runs.Load() > 1 }, 500*time.Millisecond, 5*time.Millisecond, "delivered to the next copy once")
	released()
	testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, int32(1), runs.Load())
}

// stoppable runs an agent made with opts until the stop it returns is
// called, which returns the agent's Run error.
func stoppable(t *testing.T, url string, opts participant.Options) (stop func() error) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	a, err := participant.New(testenv.Connect(t, url), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	return func() error {
		cancel()
		return <-ran
	}
}
