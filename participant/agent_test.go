package participant_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// The chores saga: a cleaner sweeps and mops, then an inspector checks;
// a dirty house fails the inspection and the cleaning is undone.
const chores = "chores"

func choresSaga() saga.Definition {
	return saga.Definition{
		Name: "chores", Subject: chores,
		Steps: []saga.Step{
			{Name: "sweep", Role: "cleaner", Compensation: "unsweep"},
			{Name: "mop", Role: "cleaner", Compensation: "unmop"},
			{Name: "inspect", Role: "inspector", Compensation: "uninspect"},
		},
	}
}

// calls counts handler invocations by "saga_id/step/action", and which agent
// copy made them.
type calls struct {
	mu    sync.Mutex
	n     map[string]int
	by    map[string]string
	perBy map[string]int
}

func (c *calls) add(name string, cmd *messages.Command) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cmd.SagaID + "/" + cmd.Step + "/" + string(cmd.Action)
	c.n[k]++
	c.by[k] = name
	c.perBy[name]++
}

// counter is the cleaner's handler: the execute adds one to the branch's
// counter in the role's state, the compensation takes it away.
func counter(name string, c *calls) agent.Handler {
	bump := func(tx agent.Tx, cmd *messages.Command, d int) error {
		key := "done." + cmd.SagaID + "." + cmd.Step
		var n int
		if _, err := tx.Get(key, &n); err != nil {
			return err
		}
		return tx.Put(key, n+d)
	}
	return agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			c.add(name, cmd)
			return messages.Context{}.MustSet(cmd.Step+"_by", name), bump(tx, cmd, 1)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			c.add(name, cmd)
			return bump(tx, cmd, -1)
		},
	}
}

func TestTwoAgentCopiesShareWorkAndApplyEachCommandOnce(t *testing.T) {
	const sagas = 60
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{choresSaga()})
	c := &calls{n: map[string]int{}, by: map[string]string{}, perBy: map[string]int{}}
	var copies []*participant.Agent
	for _, name := range []string{"cleaner-a", "cleaner-b"} {
		copies = append(copies, testenv.Agent(t, url, participant.Options{
			Role: "cleaner", Name: name, Concurrency: 4, AckWait: time.Minute,
			Steps: []agent.Step{
				{Saga: chores, Name: "sweep", Handler: counter(name, c)},
				{Saga: chores, Name: "mop", Handler: counter(name, c)},
			},
		}))
	}
	testenv.Agent(t, url, participant.Options{Role: "inspector", Steps: []agent.Step{{
		Saga: chores, Name: "inspect", Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				if _, dirty := cmd.Context["dirty"]; dirty {
					return nil, agent.Reject("still dirty")
				}
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})

	// Both copies are pulling before the work starts.
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cons, err := js.Consumer(context.Background(), messages.CommandStream, messages.CommandConsumer("cleaner"))
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	}, 10*time.Second, 5*time.Millisecond)

	ids := make([]string, sagas)
	dirty := map[string]bool{}
	for i := range ids {
		ctx := messages.Context{}.MustSet("house", fmt.Sprint(i))
		if i%4 == 0 {
			ctx.MustSet("dirty", true)
		}
		ids[i] = testenv.Start(t, nc, chores, ctx)
		dirty[ids[i]] = i%4 == 0
	}
	nDirty := sagas / 4
	require.Eventually(t, func() bool {
		s := testenv.Summary(t, nc)
		return s.Completed+s.RolledBack == sagas
	}, 30*time.Second, 10*time.Millisecond)
	s := testenv.Summary(t, nc)
	require.Equal(t, sagas-nDirty, s.Completed)
	require.Equal(t, nDirty, s.RolledBack)

	// Every command's handler ran exactly once, on one copy or the other,
	// and nothing else ran.
	c.mu.Lock()
	want := map[string]int{}
	for _, id := range ids {
		want[id+"/sweep/execute"] = 1
		want[id+"/mop/execute"] = 1
		if dirty[id] {
			want[id+"/mop/compensate"] = 1
			want[id+"/sweep/compensate"] = 1
		}
	}
	require.Equal(t, want, c.n)
	require.Len(t, c.perBy, 2, "both copies handled commands")
	c.mu.Unlock()

	// The counters agree with the barrier and the state. A copy counts a
	// command once its record is stored, and the coordinator may read that
	// record, and finish the saga, first.
	var total messages.AgentStats
	require.Eventually(t, func() bool {
		total = messages.AgentStats{}
		for _, a := range copies {
			st := a.Stats()
			total.Handled += st.Handled
			total.Executed += st.Executed
			total.Compensated += st.Compensated
			total.Records += st.Records
			total.RecordMessages += st.RecordMessages
		}
		return total.Handled == int64(2*sagas+2*nDirty)
	}, 10*time.Second, 5*time.Millisecond, "the copies' counters never added up to every command")
	for _, a := range copies {
		st := a.Stats()
		t.Logf("%s: %+v", a.Name(), st)
		require.Positive(t, st.Handled, "%s handled nothing", a.Name())
		require.Zero(t, st.Duplicates)
		require.Zero(t, st.Refused)
		require.Zero(t, st.Rejected)
	}
	require.Equal(t, int64(2*sagas+2*nDirty), total.Handled)
	require.Equal(t, int64(2*sagas), total.Executed)
	require.Equal(t, int64(2*nDirty), total.Compensated)
	require.Equal(t, total.Handled, total.Records, "every command answered by its record")
	require.Positive(t, total.RecordMessages)
	require.LessOrEqual(t, total.RecordMessages, total.Records)

	store := copies[0].Store()
	ctx := context.Background()
	for _, id := range ids {
		x := testenv.Status(t, nc, id)
		for _, step := range []string{"sweep", "mop"} {
			rec, _, err := store.Branch(ctx, id, step)
			require.NoError(t, err)
			require.Equal(t, messages.OK, rec.Execute.Outcome, "%s %s", id, step)
			var n int
			_, err = store.Get(ctx, "done."+id+"."+step, &n)
			require.NoError(t, err)
			if dirty[id] {
				require.Equal(t, saga.RolledBack, x.Status)
				require.NotNil(t, rec.Compensate, "%s %s", id, step)
				require.False(t, rec.Compensate.Noop)
				require.Equal(t, 0, n, "%s %s: executed and compensated once each", id, step)
			} else {
				require.Equal(t, saga.Completed, x.Status)
				require.Nil(t, rec.Compensate)
				require.Equal(t, 1, n, "%s %s: executed once", id, step)
				// The output names the copy whose handler ran.
				c.mu.Lock()
				by := c.by[id+"/"+step+"/execute"]
				c.mu.Unlock()
				require.Equal(t, by, mustString(t, x.Context, step+"_by"))
			}
		}
	}
}

func mustString(t *testing.T, c messages.Context, key string) string {
	t.Helper()
	s, err := c.String(key)
	require.NoError(t, err)
	return s
}

// TestHeldStepDoneAlreadyIsAnsweredAtOnce checks that an execute of a step
// that takes simulation time, sent again after its step was done (as a
// restarted coordinator does), is answered from the barrier at once rather
// than held for its duration again.
func TestHeldStepDoneAlreadyIsAnsweredAtOnce(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "bake", Subject: "bake", Steps: []saga.Step{{Name: "proof", Role: "baker", TimeoutTicks: 100}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	testenv.Agent(t, url, participant.Options{Role: "baker", AckWait: time.Minute, Steps: []agent.Step{{
		Saga: "bake", Name: "proof",
		Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				return messages.Context{}.MustSet("risen", true), nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		},
		Duration: func(*messages.Command) int64 { return 3 },
	}}})
	nc := testenv.Connect(t, url)
	replies := repliesOn(t, nc, "bake", "proof", 16)

	id := testenv.Start(t, nc, "bake", nil)
	next := func() messages.Reply {
		t.Helper()
		select {
		case m := <-replies:
			r, err := wirejson.DecodeReply(m.Data)
			require.NoError(t, err)
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
			return messages.Reply{}
		}
	}
	require.Equal(t, messages.Working, next().Outcome, "the first execute is held")
	testenv.Tick(t, nc, 3)
	// The execute, done, is answered by its barrier record.
	testenv.WaitStatus(t, nc, id, saga.Completed)

	// The same step again, with a later sequence number and no tick.
	again := messages.Command{V: messages.Version, SagaID: id, Saga: "bake", Step: "proof", Action: messages.Execute,
		Attempt: 1, Seq: 9, Tick: 3, Context: messages.Context{}}
	data, err := wirejson.AppendCommand(nil, &again)
	require.NoError(t, err)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), again.Subject(), data)
	require.NoError(t, err)
	r := next()
	require.Equal(t, messages.OK, r.Outcome, "answered from the barrier, not held")
	require.Equal(t, 9, r.Seq)
	require.Equal(t, messages.Context{}.MustSet("risen", true), r.Output)
}

// waitWorking waits for n "working" answers on replies: n commands held.
func waitWorking(t *testing.T, replies <-chan *nats.Msg, n int) {
	t.Helper()
	for range n {
		select {
		case m := <-replies:
			r, err := wirejson.DecodeReply(m.Data)
			require.NoError(t, err)
			require.Equal(t, messages.Working, r.Outcome)
		case <-time.After(30 * time.Second):
			t.Fatal("not every command held")
		}
	}
}

// repliesOn subscribes nc to the replies of the step of the saga of
// subject sagaSubject, into a channel with room for n, until the test ends.
func repliesOn(t *testing.T, nc *nats.Conn, sagaSubject, step string, n int) <-chan *nats.Msg {
	t.Helper()
	replies := make(chan *nats.Msg, n)
	sub, err := nc.ChanSubscribe(messages.ReplySubject(sagaSubject, step), replies)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return replies
}

// ticksOf is a step's Duration: the command's context value "ticks".
func ticksOf(cmd *messages.Command) int64 {
	d, _ := cmd.Context.Int64("ticks")
	return d
}

// TestHeldCommandsKeptWhileOthersFallDue holds commands of two groups for
// simulation time. When the first group falls due, running it takes
// longer than the ack wait; the second group's commands, still held, must
// be kept from redelivery meanwhile, and each command run once.
func TestHeldCommandsKeptWhileOthersFallDue(t *testing.T) {
	const early, late = 300, 100
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "bake", Subject: "bake", Steps: []saga.Step{{Name: "proof", Role: "baker", TimeoutTicks: 100}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	baker := testenv.Agent(t, url, participant.Options{Role: "baker", AckWait: 2 * time.Second, Concurrency: 1, Steps: []agent.Step{{
		Saga: "bake", Name: "proof",
		Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				// Simulated work: the early group takes about 4 s to
				// run (one at a time: Concurrency 1), twice the ack
				// wait, which is 2 s for a margin the loaded race
				// suite needs.
				time.Sleep(14 * time.Millisecond)
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		},
		Duration: ticksOf,
	}}})
	nc := testenv.Connect(t, url)
	replies := make(chan *nats.Msg, early+late)
	sub, err := nc.ChanSubscribe(messages.ReplySubject("bake", "proof"), replies)
	require.NoError(t, err)

	var ids []string
	for i := range early + late {
		ticks := int64(1)
		if i >= early {
			ticks = 5
		}
		ids = append(ids, testenv.Start(t, nc, "bake", messages.Context{}.MustSet("ticks", ticks)))
	}
	waitWorking(t, replies, early+late)
	require.NoError(t, sub.Unsubscribe())
	testenv.Tick(t, nc, 1)
	for _, id := range ids[:early] {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
	testenv.Tick(t, nc, 5)
	for _, id := range ids[early:] {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
	// A saga completes once the record is stored; the agent counts the
	// command just after.
	require.Eventually(t, func() bool { return baker.Stats().Executed >= early+late }, 10*time.Second, 10*time.Millisecond)
	st := baker.Stats()
	require.Zero(t, st.Redelivered, "held commands delivered again")
	require.Zero(t, st.Duplicates)
	require.Equal(t, int64(early+late), st.Executed)
}

// TestAgentRunsOnce: a second Run of one agent is refused at once, after
// the first returned, rather than reuse what the first closed.
func TestAgentRunsOnce(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	a, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "r", Steps: []agent.Step{{Saga: "s", Name: "x", Handler: agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	require.Eventually(t, func() bool { return a.Store() != nil }, 10*time.Second, 5*time.Millisecond)
	require.ErrorIs(t, a.Run(context.Background()), participant.ErrRanBefore, "while the first runs")
	cancel()
	require.NoError(t, <-done)
	require.ErrorIs(t, a.Run(context.Background()), participant.ErrRanBefore, "after")
}

// TestStepOfAnotherRoleNamed: an agent whose role would serve a step that
// another role's consumer takes already is refused by the server; Run's
// error names the subjects and the other role's consumer, where the
// server's own says only "filtered consumer not unique".
func TestStepOfAnotherRoleNamed(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	steps := []agent.Step{{Saga: "s", Name: "x", Handler: agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}
	first := testenv.Agent(t, url, participant.Options{Role: "r", Steps: steps})
	require.Eventually(t, func() bool { return first.Health() == nil }, 10*time.Second, 5*time.Millisecond)
	other, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "q", Steps: steps, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = other.Run(ctx)
	require.ErrorContains(t, err, "saga.s.x (consumer agent-r)")
	require.ErrorContains(t, err, "filtered consumer not unique")

	// A foreign agent's consumer may take the step with a wildcard.
	_, url = testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: "foreign", FilterSubjects: []string{"saga.s.>"}, AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	other, err = participant.New(testenv.Connect(t, url), participant.Options{Role: "q", Steps: steps, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	err = other.Run(ctx)
	require.ErrorContains(t, err, "saga.s.x (consumer foreign), saga.s.x.compensate (consumer foreign)")
}

// TestStepOfNoDefinitionWarned: an agent whose step no definition has
// (bound by the saga's name rather than its subject) says so in its log
// as it starts, where it would otherwise wait for commands that never
// come; an agent whose steps the definitions have says nothing of it.
func TestStepOfNoDefinitionWarned(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "long_name", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "r"}}}})
	h := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	serve := func(role, sagaToken string) string {
		var logs testenv.SyncBuffer
		a := testenv.Agent(t, url, participant.Options{Role: role, Steps: []agent.Step{{Saga: sagaToken, Name: "x", Handler: h}},
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.Eventually(t, func() bool { return a.Health() == nil }, 10*time.Second, 5*time.Millisecond)
		return logs.String()
	}
	const warning = "no saga definition the coordinator knows has this step (yet)"
	require.NotContains(t, serve("r", "s"), warning)
	logs := serve("q", "long_name")
	require.Contains(t, logs, warning)
	require.Contains(t, logs, "subject=saga.long_name.x")
}

// TestRejectedCompensationLoggedAsSuch: a compensation whose handler
// rejects is logged as a rejected compensation, which the coordinator
// sends again, not as a transient failure.
func TestRejectedCompensationLoggedAsSuch(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s",
		CompensationRetry: saga.RetryPolicy{MaxAttempts: 1},
		Steps:             []saga.Step{{Name: "x", Role: "r"}, {Name: "y", Role: "r"}}}})
	var logs testenv.SyncBuffer
	testenv.Agent(t, url, participant.Options{Role: "r", Logger: slog.New(slog.NewTextHandler(&logs, nil)), Steps: []agent.Step{
		{Saga: "s", Name: "x", Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return agent.Reject("cannot undo") },
		}},
		{Saga: "s", Name: "y", Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				return nil, agent.Reject("no")
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}},
	}})
	nc := testenv.Connect(t, url)
	testenv.WaitStatus(t, nc, testenv.Start(t, nc, "s", nil), saga.Failed)
	require.Contains(t, logs.String(), `msg="compensation rejected: the coordinator sends it again`)
	require.NotContains(t, logs.String(), `msg="transient failure"`)
}

// TestHeldCommandLearnsTheTickAtStart: a copy started after the clock
// moved on, with no tick sent since, learns the tick from the summary,
// so that a command it holds for simulation time runs when it is due,
// not when a driver happens to send a tick again.
func TestHeldCommandLearnsTheTickAtStart(t *testing.T) {
	// At tick 1, and past MaxTickJump, which a tick heard may not move a
	// new copy's clock (at 0) by, and the coordinator's answer may.
	for _, base := range []int64{1, 2*messages.MaxTickJump + 1} {
		t.Run(fmt.Sprint(base), func(t *testing.T) {
			_, url := testenv.Server(t)
			testenv.Coordinator(t, url, []saga.Definition{{Name: "s", Subject: "s",
				Steps: []saga.Step{{Name: "work", Role: "r", TimeoutTicks: 5}}}})
			nc := testenv.Connect(t, url)
			for tick := min(base, messages.MaxTickJump); ; tick = min(tick+messages.MaxTickJump, base) {
				testenv.Tick(t, nc, tick)
				if tick == base {
					break
				}
			}
			id := testenv.Start(t, nc, "s", nil)
			testenv.Tick(t, nc, base+2) // no agent hears it
			testenv.Agent(t, url, participant.Options{Role: "r", Steps: []agent.Step{{Saga: "s", Name: "work",
				Duration: func(*messages.Command) int64 { return 1 }, // due at base+1
				Handler: agent.Handler{
					Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
					Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
				}}}})
			testenv.WaitStatus(t, nc, id, saga.Completed)
		})
	}
}

// TestCommandBesideAHeldOneIsTriedAgainInPlace sends two commands in one
// message, one held for a tick and one for three; the first, once due,
// finds the store unavailable. Its message is delivered again only once
// the held one is settled, at tick 3, which a driver sends only once the
// first is answered: the agent must try it again itself.
func TestCommandBesideAHeldOneIsTriedAgainInPlace(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "bake", Subject: "bake", Steps: []saga.Step{{Name: "proof", Role: "baker", TimeoutTicks: 100}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	var failed atomic.Bool
	baker := testenv.Agent(t, url, participant.Options{Role: "baker", Steps: []agent.Step{{
		Saga: "bake", Name: "proof",
		Handler: agent.Handler{
			Execute: func(_ context.Context, _ agent.Tx, cmd *messages.Command) (messages.Context, error) {
				if ticks, _ := cmd.Context.Int64("ticks"); ticks == 1 && failed.CompareAndSwap(false, true) {
					return nil, fmt.Errorf("the oven: %w", participant.ErrUnavailable)
				}
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		},
		Duration: ticksOf,
	}}})
	nc := testenv.Connect(t, url)
	replies := repliesOn(t, nc, "bake", "proof", 2)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var cmds []messages.Command
	for i, ticks := range []int64{1, 3} {
		cmds = append(cmds, messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d", i), Saga: "bake", Step: "proof",
			Action: messages.Execute, Attempt: 1, Seq: 1, Context: messages.Context{}.MustSet("ticks", ticks)})
	}
	publishCommands(t, js, cmds...)
	waitWorking(t, replies, 2)

	testenv.Tick(t, nc, 1)
	require.Eventually(t, func() bool { return baker.Stats().Executed == 1 }, 10*time.Second, 10*time.Millisecond,
		"the command due at tick 1 waits for its message: %+v", baker.Stats())
	require.True(t, failed.Load())
	testenv.Tick(t, nc, 3)
	require.Eventually(t, func() bool { return baker.Stats().Executed == 2 }, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, baker.Stats().Redelivered)
}

// TestReplyBesideAHeldCommandIsStoredInPlace fails a command's handler
// while the reply stream is gone, beside a command of its message held for
// simulation time: the reply is published again in place until it is
// stored. Left to its message's redelivery, it would wait for its
// sibling's tick, which waits for its answer.
func TestReplyBesideAHeldCommandIsStoredInPlace(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	ctx := context.Background()
	replyStream := jetstream.StreamConfig{Name: messages.ReplyStream, Subjects: messages.ReplySubjects, Retention: jetstream.WorkQueuePolicy}
	_, err := js.CreateStream(ctx, replyStream)
	require.NoError(t, err)
	release := make(chan struct{})
	till := testenv.Agent(t, url, participant.Options{Role: "till", Steps: []agent.Step{{
		Saga: "pay", Name: "spend",
		Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				<-release
				return nil, errors.New("the till is jammed")
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		},
		Duration: ticksOf,
	}}})
	nc := testenv.Connect(t, url)
	replies := repliesOn(t, nc, "pay", "spend", 16)
	var cmds []messages.Command
	for _, id := range []string{"held", "jammed"} {
		ticks := map[string]int64{"held": 3}[id]
		cmds = append(cmds, messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Context: messages.Context{}.MustSet("ticks", ticks)})
	}
	publishCommands(t, js, cmds...)
	waitWorking(t, replies, 1)

	require.NoError(t, js.DeleteStream(ctx, messages.ReplyStream))
	close(release)
	select {
	case m := <-replies:
		r, err := wirejson.DecodeReply(m.Data)
		require.NoError(t, err)
		require.Equal(t, "jammed", r.SagaID, "the failed command's reply, which no stream stores")
	case <-time.After(10 * time.Second):
		t.Fatal("the failed command is not answered")
	}
	stream, err := js.CreateStream(ctx, replyStream)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs > 0
	}, 10*time.Second, 10*time.Millisecond, "the reply is stored once its stream is back")
	last, err := stream.GetLastMsgForSubject(ctx, messages.ReplySubject("pay", "spend"))
	require.NoError(t, err)
	r, err := wirejson.DecodeReply(last.Data)
	require.NoError(t, err)
	require.Equal(t, "jammed", r.SagaID)
	require.Equal(t, "the till is jammed", r.Reason)
	require.Eventually(t, func() bool { return till.Stats().Handled == 1 }, 10*time.Second, 10*time.Millisecond)
}

// TestAStoppingCopyLetsItsHeldCommandsGo stops a copy holding a command
// for simulation time: it lets the command go at once, and the next copy,
// started after, completes it at its tick, though the role's ack wait,
// after which the command would come back otherwise, is a minute.
func TestAStoppingCopyLetsItsHeldCommandsGo(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "bake", Subject: "bake", Steps: []saga.Step{{Name: "proof", Role: "baker", TimeoutTicks: 100}}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	var ran atomic.Int32
	step := []agent.Step{{Saga: "bake", Name: "proof", Duration: func(*messages.Command) int64 { return 3 },
		Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				ran.Add(1)
				return nil, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}
	stop := stoppable(t, url, participant.Options{Role: "baker", AckWait: time.Minute, Steps: step})
	nc := testenv.Connect(t, url)
	replies := repliesOn(t, nc, "bake", "proof", 16)
	id := testenv.Start(t, nc, "bake", nil)
	waitWorking(t, replies, 1)
	require.NoError(t, stop())

	testenv.Agent(t, url, participant.Options{Role: "baker", AckWait: time.Minute, Steps: step})
	testenv.Tick(t, nc, 3)
	testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, int32(1), ran.Load())
}
