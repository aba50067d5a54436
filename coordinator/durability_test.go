package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

var twoSteps = saga.Definition{Name: "transfer", Subject: "transfer", Steps: []saga.Step{
	{Name: "debit", Role: "bank"}, {Name: "credit", Role: "bank"},
}}

func TestRefusesServerWithoutJetStream(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{NoJetStream: true})
	require.NoError(t, err)
	defer ns.Shutdown()
	nc := testenv.Connect(t, ns.ClientURL())

	c, err := coordinator.New(nc, coordinator.Options{Definitions: []saga.Definition{twoSteps}})
	require.NoError(t, err)
	err = c.Run(context.Background())
	require.ErrorIs(t, err, coordinator.ErrNoJetStream)
	require.Contains(t, err.Error(), "start nats-server with -js")

	ok := func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }
	a, err := participant.New(nc, participant.Options{Role: "bank", Steps: []agent.Step{{Saga: "transfer", Name: "debit",
		Handler: agent.Handler{Execute: ok, Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }}}}})
	require.NoError(t, err)
	err = a.Run(context.Background())
	require.ErrorIs(t, err, participant.ErrNoJetStream)
}

// TestCoordinatorAndServerRestartResume stops the coordinator while sagas
// are in flight, restarts it, then restarts the NATS server itself on the
// same store, and checks that every saga still completes, each step once.
func TestCoordinatorAndServerRestartResume(t *testing.T) {
	dir := t.TempDir()
	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	require.NoError(t, err)
	url := ns.ClientURL()
	port := ns.Addr().(*net.TCPAddr).Port
	// The server goes last, after the processes using it have stopped.
	var restarted *server.Server
	t.Cleanup(func() {
		if restarted != nil {
			restarted.Shutdown()
		}
	})

	var mu sync.Mutex
	debited := map[string]bool{} // debit handled, as the agent saw it
	var gate atomic.Bool         // while set, credit hangs (no reply)
	gate.Store(true)
	release := make(chan struct{})
	// Each step counts its effects in the agent's state, through the
	// barrier: a handler may run more than once for one command, an
	// effect may not.
	handler := agent.Handler{
		Execute: func(ctx context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if cmd.Step == "credit" && gate.Load() {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			var n int
			key := effectKey(cmd.SagaID, cmd.Step)
			if _, err := tx.Get(key, &n); err != nil {
				return nil, err
			}
			if err := tx.Put(key, n+1); err != nil {
				return nil, err
			}
			mu.Lock()
			debited[cmd.SagaID] = debited[cmd.SagaID] || cmd.Step == "debit"
			mu.Unlock()
			return messages.Context{}.MustSet("done_"+cmd.Step, true), nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	agentOpts := participant.Options{Role: "bank", AckWait: 500 * time.Millisecond, Steps: []agent.Step{
		{Saga: "transfer", Name: "debit", Handler: handler}, {Saga: "transfer", Name: "credit", Handler: handler}}}

	c1ctx, stopC1 := context.WithCancel(context.Background())
	nc1 := testenv.Connect(t, url)
	c1, err := coordinator.New(nc1, coordinator.Options{Definitions: []saga.Definition{twoSteps}, AckWait: 500 * time.Millisecond})
	require.NoError(t, err)
	c1done := make(chan error, 1)
	go func() { c1done <- c1.Run(c1ctx) }()
	<-c1.Ready()
	testenv.Agent(t, url, agentOpts)

	client := testenv.Connect(t, url)
	var ids []string
	for range 5 {
		ids = append(ids, testenv.Start(t, client, "transfer", nil))
	}
	// Every saga is waiting on credit: stop the coordinator.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, id := range ids {
			if debited[id] {
				n++
			}
		}
		return n == len(ids)
	}, 10*time.Second, 5*time.Millisecond)
	stopC1()
	require.NoError(t, <-c1done)
	nc1.Close()

	// A new coordinator picks the sagas up; the server then restarts too.
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	ns.Shutdown()
	ns.WaitForShutdown()
	restarted, err = embedded.Start(embedded.Options{StoreDir: dir, Port: port})
	require.NoError(t, err)
	gate.Store(false)
	close(release)

	for _, id := range ids {
		x := testenv.WaitStatus(t, client, id, saga.Completed)
		require.Equal(t, []string{"debit", "credit"}, x.Completed)
	}
	// The coordinator's resends after its restart reached the barrier,
	// which answered them from its records: each step took effect once.
	store, err := participant.OpenStore(context.Background(), client, "bank", false, 1)
	require.NoError(t, err)
	for _, id := range ids {
		for _, step := range []string{"debit", "credit"} {
			var n int
			_, err := store.Get(context.Background(), effectKey(id, step), &n)
			require.NoError(t, err)
			require.Equal(t, 1, n, "%s of %s", step, id)
		}
	}
}

func effectKey(sagaID, step string) string { return "effects." + sagaID + "." + step }

// TestStartRetriedAfterTheSagaFinished checks that a start retried with the
// same id after its saga finished answers with the finished saga and runs
// nothing again.
func TestStartRetriedAfterTheSagaFinished(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	var runs atomic.Int32
	handler := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			runs.Add(1)
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	testenv.Agent(t, url, participant.Options{Role: "bank", Steps: []agent.Step{
		{Saga: "transfer", Name: "debit", Handler: handler}, {Saga: "transfer", Name: "credit", Handler: handler}}})
	nc := testenv.Connect(t, url)
	req := messages.StartRequest{V: messages.Version, SagaID: "order-17", Context: messages.Context{}}
	var first messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("transfer"), req, &first)
	require.Nil(t, first.Error)
	require.Equal(t, "order-17", first.SagaID)
	testenv.WaitStatus(t, nc, "order-17", saga.Completed)

	var again messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("transfer"), req, &again)
	require.Nil(t, again.Error)
	require.Equal(t, "order-17", again.SagaID)
	require.Equal(t, string(saga.Completed), again.Status)
	s := testenv.Summary(t, nc)
	require.Equal(t, 1, s.Completed)
	require.Equal(t, 0, s.Active)
	require.Equal(t, int32(2), runs.Load())
}

// TestFinishedSagasExpireAfterRetention checks that a finished saga leaves
// the bucket once its retention has passed.
func TestFinishedSagasExpireAfterRetention(t *testing.T) {
	_, url := testenv.Server(t)
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{
		Definitions: []saga.Definition{twoSteps}, Retention: time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	<-c.Ready()
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "transfer", nil)
	testenv.WaitStatus(t, nc, id, saga.Completed)

	req := messages.StatusRequest{V: messages.Version, SagaID: id}
	require.Eventually(t, func() bool {
		var resp messages.StatusResponse
		testenv.Request(t, nc, messages.StatusSubject, req, &resp)
		return resp.Error != nil && resp.Error.Code == messages.CodeNotFound
	}, 10*time.Second, 50*time.Millisecond, "the finished saga never expired")
	require.Equal(t, 1, testenv.Summary(t, nc).Completed, "counts outlive the sagas they count")
}

// TestRestartedCoordinatorCatchesUpFromRecords stops the coordinator while a
// saga's second step is in flight (the move to it was not stored), starts
// another, and times the saga out: the new coordinator has caught up from
// the agent's record of the first step, so it compensates the step in
// flight and then the first, with the first step's output in the context.
func TestRestartedCoordinatorCatchesUpFromRecords(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "transfer", Subject: "transfer", Steps: []saga.Step{
		{Name: "debit", Role: "bank", TimeoutTicks: 2}, {Name: "credit", Role: "bank", TimeoutTicks: 2},
	}}
	crediting := make(chan string, 1)
	release := make(chan struct{})
	testenv.Agent(t, url, participant.Options{Role: "bank", AckWait: time.Minute, Steps: []agent.Step{
		debitStep,
		{Saga: "transfer", Name: "credit", Handler: agent.Handler{
			// The credit never answers before the test ends.
			Execute: func(ctx context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				select {
				case crediting <- cmd.SagaID:
				default:
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil, errors.New("too late")
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}},
	}})
	// Cleanups run last first: the credit returns before its agent stops.
	t.Cleanup(func() { close(release) })

	stopC1 := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{def}})
	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "transfer", nil)
	select {
	case got := <-crediting:
		require.Equal(t, id, got)
	case <-time.After(10 * time.Second):
		t.Fatal("credit never started")
	}
	stopC1()

	commands := listen(t, nc, "saga.>")
	testenv.Coordinator(t, url, []saga.Definition{def})
	x := testenv.Status(t, nc, id)
	require.Equal(t, []string{"debit"}, x.Completed, "caught up from the debit's record")
	require.Equal(t, "credit", def.Steps[x.Current].Name)
	require.Equal(t, json.RawMessage("5"), x.Context["debited"])

	testenv.Tick(t, nc, 5)
	x = testenv.WaitStatus(t, nc, id, saga.TimedOut)
	require.Equal(t, []string{"credit", "debit"}, x.Compensated)
	require.Eventually(t, func() bool { return len(commands.commands(t, id)) == 3 }, 10*time.Second, 5*time.Millisecond)
	got := commands.commands(t, id)
	require.Equal(t, messages.ExecuteSubject("transfer", "credit"), got[0].Subject, "the resend is the step in flight, not the stored one")
	require.Equal(t, messages.CompensateSubject("transfer", "credit"), got[1].Subject)
	require.Equal(t, messages.CompensateSubject("transfer", "debit"), got[2].Subject)
	comp := commands.commandOf(t, id, "credit", messages.Compensate)
	require.Equal(t, json.RawMessage("5"), comp.Context["debited"], "the compensation carries the debit's output")
}

// TestRetryWaitingAtRestartIsSent: a saga waiting out a retry's backoff
// when its coordinator stops is retried by the next one when the backoff
// ends, with no request or answer to wake it (the first waited for one,
// and a compensation, which never times out, waited for ever). Both kinds
// of retry: an execute's and a compensation's.
func TestRetryWaitingAtRestartIsSent(t *testing.T) {
	backoff := saga.RetryPolicy{MaxAttempts: 2, Backoff: 2 * time.Second, MaxBackoff: 2 * time.Second}
	for _, action := range []messages.Action{messages.Execute, messages.Compensate} {
		t.Run(string(action), func(t *testing.T) {
			_, url := testenv.Server(t)
			nc := testenv.Connect(t, url)
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			def := saga.Definition{Name: "transfer", Subject: "transfer", CompensationRetry: backoff, Steps: []saga.Step{
				{Name: "debit", Role: "bank", Retry: backoff}, {Name: "credit", Role: "bank"},
			}}
			commands := listen(t, nc, "saga.>")
			answer := func(id, step string, action messages.Action, outcome messages.Outcome, reason string) {
				t.Helper()
				require.Eventually(t, func() bool {
					for _, c := range commands.commands(t, id) {
						if c.Subject == messages.CommandSubject("transfer", step, action) {
							return true
						}
					}
					return false
				}, 10*time.Second, 5*time.Millisecond, "no %s %s", action, step)
				cmd := commands.commandOf(t, id, step, action)
				reply := messages.ReplyTo(&cmd, outcome, reason)
				_, err := js.Publish(context.Background(), reply.Subject(), mustJSON(t, reply))
				require.NoError(t, err)
			}

			stopC1 := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{def}})
			id := testenv.Start(t, nc, "transfer", nil)
			if action == messages.Compensate {
				answer(id, "debit", messages.Execute, messages.OK, "")
				answer(id, "credit", messages.Execute, messages.Failed, "declined")
			}
			answer(id, "debit", action, messages.Error, "try later")
			require.Eventually(t, func() bool { return testenv.Summary(t, nc).Retrying == 1 }, 10*time.Second, 5*time.Millisecond)
			stopC1()
			sent := len(commands.commands(t, id))

			// No request reaches the new coordinator: only its backoff's
			// end may send the retry.
			testenv.Coordinator(t, url, []saga.Definition{def})
			require.Eventually(t, func() bool { return len(commands.commands(t, id)) > sent }, 10*time.Second, 5*time.Millisecond,
				"the retry was never sent")
			retry := commands.commands(t, id)[sent]
			require.Equal(t, messages.CommandSubject("transfer", "debit", action), retry.Subject)
			require.Equal(t, action, retry.Action)
			require.Equal(t, 2, retry.Attempt)
		})
	}
}

// TestAdvanceOnAReplyIsStored checks that a step answered by a reply (as a
// foreign agent answers) is stored before the next command goes out, while
// an answer by record is not: a restarted coordinator catches up from
// records only.
func TestAdvanceOnAReplyIsStored(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	commands := listen(t, nc, "saga.>")
	stores := listenStores(t, nc)
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	id := testenv.Start(t, nc, "transfer", nil)
	require.Eventually(t, func() bool { return len(commands.commands(t, id)) == 1 }, 10*time.Second, 5*time.Millisecond)

	// No agent serves the steps: the test answers the debit by reply.
	debit := commands.commandOf(t, id, "debit", messages.Execute)
	reply := messages.ReplyTo(&debit, messages.OK, "")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), reply.Subject(), mustJSON(t, reply))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(commands.commands(t, id)) == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return stores.states(t, id) == "in_progress in_progress" }, 10*time.Second, 5*time.Millisecond,
		"stored at the start and at the move to credit: %s", stores.states(t, id))
}

// TestServerBackWithoutJetStreamIsWaitedFor runs a coordinator, restarts
// its server without JetStream, then with it: the coordinator does not
// exit, says it is not ready while JetStream is missing, and serves again
// once it is back. (Without JetStream at its start, Run returns
// ErrNoJetStream: TestRequiresJetStream.)
func TestServerBackWithoutJetStreamIsWaitedFor(t *testing.T) {
	coordinator.SetNoJetStreamPause(t, 100*time.Millisecond)
	dir := t.TempDir()
	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	require.NoError(t, err)
	p, url := ns.Addr().(*net.TCPAddr).Port, ns.ClientURL()
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions(), Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-ran
	})
	<-c.Ready()
	ns.Shutdown()
	ns.WaitForShutdown()

	bare, err := embedded.Start(embedded.Options{Port: p, NoJetStream: true})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		err := c.Health()
		return errors.Is(err, coordinator.ErrNoJetStream)
	}, 20*time.Second, 10*time.Millisecond, "not ready, saying why")
	select {
	case err := <-ran:
		t.Fatalf("the coordinator stopped: %v", err)
	default:
	}
	bare.Shutdown()
	bare.WaitForShutdown()

	back, err := embedded.Start(embedded.Options{Port: p, StoreDir: dir})
	require.NoError(t, err)
	t.Cleanup(back.Shutdown)
	require.Eventually(t, func() bool { return c.Health() == nil }, 30*time.Second, 20*time.Millisecond)
	nc := testenv.Connect(t, url)
	// Active again once it answers.
	require.Eventually(t, func() bool {
		_, err := nc.Request(messages.SummarySubject, []byte(`{"v":1}`), time.Second)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	id := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-1"))
	require.Equal(t, saga.InProgress, testenv.Status(t, nc, id).Status)
}

// TestCoordinatorLeavesNothingOnItsConnection runs coordinators one after
// another on one connection, each storing a saga (asynchronous publishes):
// a coordinator that has stopped leaves no subscription on it.
func TestCoordinatorLeavesNothingOnItsConnection(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	other := testenv.Connect(t, url)
	subs := -1
	for i := range 3 {
		c, err := coordinator.New(nc, coordinator.Options{Definitions: flood.Definitions(), Logger: testenv.Logger(t)})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan error, 1)
		go func() { ran <- c.Run(ctx) }()
		<-c.Ready()
		testenv.Start(t, other, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h-%d", i)))
		cancel()
		require.NoError(t, <-ran)
		if subs < 0 {
			subs = nc.NumSubscriptions()
		}
		require.Equal(t, subs, nc.NumSubscriptions(), "after coordinator %d", i+1)
	}
}

// TestNewWithoutAConnection is said so, not a panic later.
func TestNewWithoutAConnection(t *testing.T) {
	_, err := coordinator.New(nil, coordinator.Options{Definitions: flood.Definitions()})
	require.EqualError(t, err, "coordinator: no NATS connection (nil)")
}
