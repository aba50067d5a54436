package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// payStream starts a server and makes the command stream of the steps of
// saga "pay", as the coordinator would: the server's URL, a JetStream
// context and the stream.
func payStream(t *testing.T, steps ...string) (string, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	_, url := testenv.Server(t)
	js, stream := payStreamOn(t, url, steps...)
	return url, js, stream
}

// payStreamOn is payStream on the server at url.
func payStreamOn(t *testing.T, url string, steps ...string) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	var subjects []string
	for _, step := range steps {
		subjects = append(subjects, messages.StepCommandSubjects("pay", step)...)
	}
	stream, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: messages.CommandStream,
		Subjects: subjects, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	return js, stream
}

// TestSerialRoleAppliesInStreamOrder runs two copies of a serial role whose
// step takes a random while and appends to one shared value: the commands
// take effect in the order they were published, one at a time, and each
// copy reads what the other wrote.
func TestSerialRoleAppliesInStreamOrder(t *testing.T) {
	// Published one message per command, and in batches of up to 7
	// commands (wire version 2): a batch's commands in their order in it.
	for _, batch := range []int{1, 7} {
		t.Run(fmt.Sprintf("batches of %d", batch), func(t *testing.T) { testSerialOrder(t, batch) })
	}
}

func testSerialOrder(t *testing.T, batch int) {
	url, js, _ := payStream(t, "spend")
	ctx := context.Background()

	var mu sync.Mutex
	var applied []string
	spend := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			var log []string
			if _, err := tx.Get("log", &log); err != nil {
				return nil, err
			}
			// Handlers of uneven length: without the serial consumer a
			// later command would overtake an earlier one. The jitter is
			// the load under test, not a wait for an event.
			time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
			mu.Lock()
			applied = append(applied, cmd.SagaID)
			mu.Unlock()
			return nil, tx.Put("log", append(log, cmd.SagaID))
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	var agents []*participant.Agent
	for i := range 2 {
		agents = append(agents, testenv.Agent(t, url, participant.Options{Role: "till", Name: fmt.Sprintf("till-%d", i), Serial: true,
			Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: spend}}}))
	}
	require.Eventually(t, func() bool {
		info, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil && info.CachedInfo().Config.PriorityPolicy == jetstream.PriorityPolicyPinned
	}, 10*time.Second, 10*time.Millisecond, "a serial role's consumer pins one copy at a time")

	var want []string
	var cmds []messages.Command
	for i := range 40 {
		c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%02d", 39-i), Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(i + 1)}
		cmds = append(cmds, c)
		want = append(want, c.SagaID)
	}
	for len(cmds) > 0 {
		n := min(batch, len(cmds))
		publishCommands(t, js, cmds[:n]...)
		cmds = cmds[n:]
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(applied) >= len(want)
	}, 30*time.Second, 10*time.Millisecond)
	mu.Lock()
	require.Equal(t, want, applied, "applied in stream order")
	mu.Unlock()

	// The last command's write lands after its handler ran: wait for it.
	require.Eventually(t, func() bool {
		return agents[0].Stats().Handled+agents[1].Stats().Handled == int64(len(want))
	}, 10*time.Second, 10*time.Millisecond)
	var log []string
	_, err := agents[0].Store().Get(ctx, "log", &log)
	require.NoError(t, err)
	require.Equal(t, want, log, "every command read what the one before wrote, whichever copy ran it")
}

func TestSerialRoleCannotHoldCommands(t *testing.T) {
	o := participant.Options{Role: "till", Serial: true, Steps: []agent.Step{{Saga: "pay", Name: "spend",
		Handler:  agent.Handler{Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil }, Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil }},
		Duration: func(*messages.Command) int64 { return 2 }}}}
	err := o.Validate()
	require.ErrorIs(t, err, messages.ErrBadRequest)
	require.ErrorContains(t, err, "step pay.spend: its Duration holds commands for simulation time, which a Serial role")
	require.ErrorContains(t, err, "drop Serial or the step's Duration")
}

// TestSerialCopyReadsAgainWhenPinnedAnew moves the pin of a serial role
// between its two copies, again and again, while each round publishes a
// read-only command (peek, whose output is the length of a shared log)
// before one that appends to the log. A copy pinned anew must not answer
// the peek from what it cached when it last held the pin: the other copy
// has appended since, and a peek writes nothing that a compare-and-swap
// could refuse.
func TestSerialCopyReadsAgainWhenPinnedAnew(t *testing.T) {
	url, js, stream := payStream(t, "peek", "spend")
	ctx := context.Background()

	undo := func(context.Context, agent.Tx, *messages.Command) error { return nil }
	peek := agent.Handler{Compensate: undo, Execute: func(_ context.Context, tx agent.Tx, _ *messages.Command) (messages.Context, error) {
		var log []string
		if _, err := tx.Get("log", &log); err != nil {
			return nil, err
		}
		return messages.Context{"len": json.RawMessage(strconv.Itoa(len(log)))}, nil
	}}
	spend := agent.Handler{Compensate: undo, Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		var log []string
		if _, err := tx.Get("log", &log); err != nil {
			return nil, err
		}
		return nil, tx.Put("log", append(log, cmd.SagaID))
	}}
	var copies []*participant.Agent
	for i := range 2 {
		copies = append(copies, testenv.Agent(t, url, participant.Options{Role: "till", Name: fmt.Sprintf("till-%d", i), Serial: true,
			Steps: []agent.Step{{Saga: "pay", Name: "peek", Handler: peek}, {Saga: "pay", Name: "spend", Handler: spend}}}))
	}
	handled := func() (n [2]int64) {
		for i, a := range copies {
			n[i] = a.Stats().Handled
		}
		return n
	}
	publish := func(id, step string) {
		c := messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: step, Action: messages.Execute, Attempt: 1, Seq: 1}
		data, err := wirejson.AppendCommand(nil, &c)
		require.NoError(t, err)
		_, err = js.Publish(ctx, c.Subject(), data)
		require.NoError(t, err)
	}

	// Each round goes to one copy; the pin moves between rounds. Count
	// the rounds whose copy had held the pin before, with the other copy
	// pinned in between: those are the rounds under test. A copy whose
	// first pull failed starts pulling a second later: the rounds go on
	// until eight are under test.
	const maxRounds = 100
	var owners []int
	back := 0
	for r := 0; r < maxRounds && back < 8; r++ {
		before := handled()
		id := fmt.Sprintf("s-%02d", r)
		publish(id, "peek")
		publish(id, "spend")
		require.Eventually(t, func() bool {
			n := handled()
			return n[0]+n[1] == before[0]+before[1]+2
		}, 10*time.Second, 5*time.Millisecond)
		n := handled()
		owner := 0
		if n[1] > before[1] {
			owner = 1
		}
		require.Equal(t, before[owner]+2, n[owner], "round %d: both commands went to the pinned copy", r)
		if len(owners) > 0 && owners[len(owners)-1] != owner && slices.Contains(owners, owner) {
			back++
		}
		owners = append(owners, owner)
		require.NoError(t, stream.UnpinConsumer(ctx, messages.CommandConsumer("till"), messages.SerialGroup))
	}
	t.Logf("copies by round: %v; %d rounds on a copy pinned anew after the other", owners, back)
	require.Equal(t, 8, back, "the pin never came back to a copy after the other held it: the test proves nothing")

	for r := range owners {
		rec, _, err := copies[0].Store().Branch(ctx, fmt.Sprintf("s-%02d", r), "peek")
		require.NoError(t, err)
		require.NotNil(t, rec.Execute, "round %d", r)
		require.Equal(t, strconv.Itoa(r), string(rec.Execute.Output["len"]), "round %d: the peek saw every spend before it (copy %d)", r, owners[r])
	}
}

// TestSerialCopyPinnedAnewWaitsForTheCommandsBefore has a copy of a serial
// role die holding the first commands of a round, unanswered, while the
// rest of the round waits in the stream. The copy pinned next gets the rest
// at once, and the first ones only when their ack wait runs out: it must
// run them first all the same.
func TestSerialCopyPinnedAnewWaitsForTheCommandsBefore(t *testing.T) {
	url, js, _ := payStream(t, "spend", "other")
	ctx := context.Background()
	// Another role's commands come first in the stream, and stay there.
	for range 3 {
		_, err := js.Publish(ctx, messages.ExecuteSubject("pay", "other"), []byte("{}"))
		require.NoError(t, err)
	}
	const ackWait = time.Second
	// The consumer as every copy of the role makes it.
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.CommandConsumer("till"), FilterSubjects: messages.StepCommandSubjects("pay", "spend"),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait, MaxDeliver: -1, MaxAckPending: 8192,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{messages.SerialGroup}, PinnedTTL: ackWait})
	require.NoError(t, err)
	var want []string
	publish := func(n int) {
		for range n {
			c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%02d", 20-len(want)), Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(len(want) + 1)}
			data, err := wirejson.AppendCommand(nil, &c)
			require.NoError(t, err)
			_, err = js.Publish(ctx, c.Subject(), data)
			require.NoError(t, err)
			want = append(want, c.SagaID)
		}
	}

	// The copy that dies: pinned, it takes the first five and answers none.
	publish(5)
	dying := testenv.Connect(t, url)
	djs, err := jetstream.New(dying)
	require.NoError(t, err)
	dcons, err := djs.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
	require.NoError(t, err)
	batch, err := dcons.Fetch(5, jetstream.FetchPriorityGroup(messages.SerialGroup))
	require.NoError(t, err)
	held := 0
	for range batch.Messages() {
		held++
	}
	require.NoError(t, batch.Error())
	require.Equal(t, 5, held)
	dying.Close()
	publish(5)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, info.NumAckPending, "the dead copy holds the first five")
	// Its pin goes now, not after its timeout, at about the time its five
	// come back: the next copy is pinned while they are away.
	stream, err := js.Stream(ctx, messages.CommandStream)
	require.NoError(t, err)
	require.NoError(t, stream.UnpinConsumer(ctx, messages.CommandConsumer("till"), messages.SerialGroup))

	var mu sync.Mutex
	var applied []string
	spend := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			var log []string
			if _, err := tx.Get("log", &log); err != nil {
				return nil, err
			}
			mu.Lock()
			applied = append(applied, cmd.SagaID)
			mu.Unlock()
			return nil, tx.Put("log", append(log, cmd.SagaID))
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	logs := &testenv.SyncBuffer{}
	next := testenv.Agent(t, url, participant.Options{Role: "till", Name: "till-next", Serial: true, AckWait: ackWait,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Steps:  []agent.Step{{Saga: "pay", Name: "spend", Handler: spend}}})
	require.Eventually(t, func() bool { return next.Stats().Handled == int64(len(want)) }, 30*time.Second, 10*time.Millisecond)
	// The wait, a look every 100 ms for the ack wait of a second, is said
	// at info once, then at debug.
	waits := `msg="serial copy pinned anew: waiting for the commands before its own"`
	require.Equal(t, 1, strings.Count(logs.String(), "level=INFO "+waits), "%s", logs)
	require.Positive(t, strings.Count(logs.String(), "level=DEBUG "+waits), "%s", logs)
	mu.Lock()
	require.Equal(t, want, applied, "applied in stream order, the dead copy's five first")
	mu.Unlock()
	var log []string
	_, err = next.Store().Get(ctx, "log", &log)
	require.NoError(t, err)
	require.Equal(t, want, log)
}

// TestSerialCopyKeepsItsPinThroughLongBatches gives a serial role, with a
// short ack wait, more batched work than it can do in one: the pinned
// copy must go on asking for commands while it works through those it
// holds, so that it keeps the pin and nothing it holds is delivered
// again to the copy standing by.
func TestSerialCopyKeepsItsPinThroughLongBatches(t *testing.T) {
	url, js, stream := payStream(t, "spend")
	ctx := context.Background()
	slow := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			// The work under test: each command takes a while.
			time.Sleep(2 * time.Millisecond)
			return nil, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	var copies []*participant.Agent
	for i := range 2 {
		copies = append(copies, testenv.Agent(t, url, participant.Options{Role: "till", Name: fmt.Sprintf("till-%d", i), Serial: true,
			AckWait: 2 * time.Second, Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: slow}}}))
	}
	require.Eventually(t, func() bool {
		info, err := js.Consumer(ctx, messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil && info.CachedInfo().Config.PriorityPolicy == jetstream.PriorityPolicyPinned
	}, 10*time.Second, 10*time.Millisecond)

	// 2,000 commands of 2 ms: 4 s of work, two ack waits (of 2 s, a
	// margin the loaded race suite needs).
	const batches, size = 40, 50
	for b := range batches {
		var cmds []messages.Command
		for i := range size {
			cmds = append(cmds, messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%02d-%02d", b, i), Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1})
		}
		publishCommands(t, js, cmds...)
	}
	require.Eventually(t, func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, 60*time.Second, 20*time.Millisecond)
	var handled, redelivered []int64
	for _, a := range copies {
		st := a.Stats()
		handled = append(handled, st.Handled)
		redelivered = append(redelivered, st.Redelivered)
	}
	require.ElementsMatch(t, []int64{0, batches * size}, handled, "one copy did all the work: the pin never moved")
	require.Equal(t, []int64{0, 0}, redelivered)
}

// serialTill runs a copy of the serial role "till" serving the step
// "spend" of saga "pay" with spend, and waits until its consumer is pinned.
func serialTill(t *testing.T, url string, js jetstream.JetStream, spend agent.Handler) *participant.Agent {
	t.Helper()
	a := testenv.Agent(t, url, participant.Options{Role: "till", Serial: true,
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: spend}}})
	require.Eventually(t, func() bool {
		info, err := js.Consumer(context.Background(), messages.CommandStream, messages.CommandConsumer("till"))
		return err == nil && info.CachedInfo().Config.PriorityPolicy == jetstream.PriorityPolicyPinned
	}, 10*time.Second, 10*time.Millisecond)
	return a
}

// appendLog appends entry to the value "log" in tx.
func appendLog(tx agent.Tx, entry string) error {
	var log []string
	if _, err := tx.Get("log", &log); err != nil {
		return err
	}
	return tx.Put("log", append(log, entry))
}

// tillLog returns the value "log" of the role "till", as a's store reads it.
func tillLog(t *testing.T, a *participant.Agent) []string {
	t.Helper()
	var log []string
	_, err := a.Store().Get(context.Background(), "log", &log)
	require.NoError(t, err)
	return log
}

// TestSerialCopyRunsABatchMessageAsOneBatch sends a serial role one
// message of 200 executes that all write one value: its copy takes the
// message's commands in together and commits them as one batch, in their
// order, where taking them in one by one left it batches of two. The first
// runs alone: a copy newly pinned runs one command at a time until it has
// run one delivered to it first.
func TestSerialCopyRunsABatchMessageAsOneBatch(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	spend := agent.Handler{
		Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			return nil, appendLog(tx, cmd.SagaID)
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a := serialTill(t, url, js, spend)

	var cmds []messages.Command
	var want []string
	for i := range 200 {
		c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%03d", i), Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(i + 1)}
		cmds = append(cmds, c)
		want = append(want, c.SagaID)
	}
	publishCommands(t, js, cmds...)
	require.Eventually(t, func() bool { return a.Stats().Handled == int64(len(cmds)) }, 20*time.Second, 10*time.Millisecond)

	st := a.Stats()
	require.Equal(t, int64(1), st.Messages)
	require.Equal(t, int64(1), st.Batches, "one batch for the message")
	require.Equal(t, int64(len(cmds)-1), st.Batched, "every command in it but the first")
	require.Equal(t, want, tillLog(t, a), "in their order in the message")
}

// TestSerialCopyRunsWhatWaitsAsOneBatch sends a serial copy 101 commands a
// message each, the first of which blocks its handler until the other 100
// are in the copy's hands: those then run as one batch, in their order.
// (Taken in one message at a time, they ran in batches of two or three.)
func TestSerialCopyRunsWhatWaitsAsOneBatch(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	gate := make(chan struct{})
	spend := agent.Handler{
		Execute: func(ctx context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if cmd.SagaID == "s-000" {
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return nil, appendLog(tx, cmd.SagaID)
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a := serialTill(t, url, js, spend)

	var want []string
	for i := range 101 {
		c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%03d", i), Saga: "pay", Step: "spend",
			Action: messages.Execute, Attempt: 1, Seq: 1, Rank: int64(i + 1)}
		publishCommands(t, js, c)
		want = append(want, c.SagaID)
	}
	require.Eventually(t, func() bool { return a.Stats().Messages == 101 }, 20*time.Second, 10*time.Millisecond)
	close(gate)
	require.Eventually(t, func() bool { return a.Stats().Handled == 101 }, 20*time.Second, 10*time.Millisecond)

	st := a.Stats()
	// The first runs alone (a copy newly pinned runs one command alone);
	// the 100 behind it in one batch. The messages reach the worker one
	// after the other, each counted just before: the last may still be on
	// its way when the gate opens, and then runs alone after the batch.
	require.Equal(t, int64(1), st.Batches)
	require.GreaterOrEqual(t, st.Batched, int64(99))
	require.Equal(t, want, tillLog(t, a), "in the order they were published")
}

// TestSerialCopyBatchesCompensations has a serial copy run executes and
// compensations of one message together: ten
// compensations of executes that took effect, five with nothing to undo,
// ten executes, then an execute and its own compensation. Everything up to
// that compensation is one batch (a branch already in the batch ends it);
// the compensation runs alone after it, and so does the same compensation
// sent again. The value shows every command applied once, in order, and
// each branch holds its record.
func TestSerialCopyBatchesCompensations(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	ctx := context.Background()
	gate, entered := make(chan struct{}), make(chan struct{})
	spend := agent.Handler{
		Execute: func(ctx context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
			if cmd.SagaID == "s-100" {
				close(entered)
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return messages.Context{}.MustSet("paid", cmd.SagaID), appendLog(tx, cmd.SagaID)
		},
		Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
			return appendLog(tx, "undo:"+cmd.SagaID)
		},
	}
	a := serialTill(t, url, js, spend)

	command := func(i int, action messages.Action) messages.Command {
		return messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%03d", i), Saga: "pay", Step: "spend",
			Action: action, Attempt: 1, Seq: 1, Rank: int64(i + 1)}
	}
	var want []string
	for i := 1; i <= 10; i++ {
		publishCommands(t, js, command(i, messages.Execute))
		want = append(want, fmt.Sprintf("s-%03d", i))
	}
	require.Eventually(t, func() bool { return a.Stats().Handled == 10 }, 20*time.Second, 10*time.Millisecond)
	before := a.Stats()

	publishCommands(t, js, command(100, messages.Execute))
	want = append(want, "s-100")
	<-entered
	var later []messages.Command
	for i := 1; i <= 10; i++ {
		later = append(later, command(i, messages.Compensate))
		want = append(want, fmt.Sprintf("undo:s-%03d", i))
	}
	for i := 50; i < 55; i++ {
		later = append(later, command(i, messages.Compensate)) // nothing to undo
	}
	for i := 21; i <= 30; i++ {
		later = append(later, command(i, messages.Execute))
		want = append(want, fmt.Sprintf("s-%03d", i))
	}
	later = append(later, command(60, messages.Execute), command(60, messages.Compensate))
	want = append(want, "s-060", "undo:s-060")
	// Last, the compensation of s-060 again: whether it reaches the worker
	// before the gate opens or after (the last message counted may still
	// be on its way), it runs alone, a duplicate.
	later = append(later, command(60, messages.Compensate))
	for _, c := range later {
		publishCommands(t, js, c)
	}
	require.Eventually(t, func() bool { return a.Stats().Messages == before.Messages+1+int64(len(later)) },
		20*time.Second, 10*time.Millisecond)
	close(gate)
	// The duplicate is answered by a reply, which this test keeps no
	// stream for: it counts as a duplicate, not as handled.
	require.Eventually(t, func() bool {
		st := a.Stats()
		return st.Handled == before.Handled+int64(len(later)) && st.Duplicates == 1
	}, 20*time.Second, 10*time.Millisecond)

	st := a.Stats()
	require.Equal(t, int64(1), st.Batches-before.Batches, "one batch behind the command held up")
	require.Equal(t, int64(len(later)-2), st.Batched-before.Batched, "all but the last two compensations")
	require.Equal(t, int64(16), st.Compensated-before.Compensated)
	require.Equal(t, int64(0), st.Refused)
	require.Equal(t, want, tillLog(t, a), "each command applied once, in order")

	for _, c := range []struct {
		saga string
		noop bool
	}{{"s-001", false}, {"s-010", false}, {"s-050", true}, {"s-054", true}, {"s-060", false}} {
		rec, _, err := a.Store().Branch(ctx, c.saga, "spend")
		require.NoError(t, err)
		require.True(t, rec.Compensate.Done(), c.saga)
		require.Equal(t, messages.OK, rec.Compensate.Outcome, c.saga)
		require.Equal(t, c.noop, rec.Compensate.Noop, c.saga)
		if c.noop {
			require.Nil(t, rec.Execute, c.saga)
		} else {
			require.Equal(t, messages.OK, rec.Execute.Outcome, "%s keeps its execute's result", c.saga)
		}
	}
	rec, _, err := a.Store().Branch(ctx, "s-025", "spend")
	require.NoError(t, err)
	require.Nil(t, rec.Compensate)
	require.Equal(t, messages.Context{}.MustSet("paid", "s-025"), rec.Execute.Output)
}

// TestSerialCopySkipsACommandAcknowledgedButKept stores a command below
// the role's consumer's ack floor, as a server killed soon after the
// command's acknowledgement keeps it (the delete lost, the consumer's
// state not): the consumer never delivers it again. A copy pinned anew
// must not wait for it, or the role would stop for good; it runs the
// commands after it, and says once what it found.
func TestSerialCopySkipsACommandAcknowledgedButKept(t *testing.T) {
	url, js, _ := payStream(t, "spend")
	ctx := context.Background()
	cons, err := js.CreateOrUpdateConsumer(ctx, messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.CommandConsumer("till"), FilterSubjects: messages.StepCommandSubjects("pay", "spend"),
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Second, MaxDeliver: -1, MaxAckPending: 8192,
		PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{messages.SerialGroup}, PinnedTTL: time.Second})
	require.NoError(t, err)
	publish := func(id string) uint64 {
		c := messages.Command{V: messages.Version, SagaID: id, Saga: "pay", Step: "spend", Action: messages.Execute, Attempt: 1, Seq: 1}
		data, err := wirejson.AppendCommand(nil, &c)
		require.NoError(t, err)
		ack, err := js.Publish(ctx, c.Subject(), data)
		require.NoError(t, err)
		return ack.Sequence
	}
	kept := publish("kept")
	// The consumer past it, as its state came back from the server's store.
	_, err = js.ResetConsumerToSequence(ctx, messages.CommandStream, messages.CommandConsumer("till"), kept+1)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	require.Equal(t, kept, info.AckFloor.Stream)
	want := []string{"s-1", "s-2", "s-3"}
	for _, id := range want {
		publish(id)
	}

	var logs testenv.SyncBuffer
	a := testenv.Agent(t, url, participant.Options{Role: "till", Serial: true, AckWait: time.Second,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: agent.Handler{
			Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
				return nil, appendLog(tx, cmd.SagaID)
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}}})
	require.Eventually(t, func() bool { return a.Stats().Handled == int64(len(want)) }, 20*time.Second, 10*time.Millisecond,
		"the copy waits for the kept command: %s", &logs)
	require.Equal(t, want, tillLog(t, a))
	require.Equal(t, 1, strings.Count(logs.String(), "still stores commands this role acknowledged"), logs.String())
}
