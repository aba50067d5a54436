package coordinator_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestCommandBatchesOnTheWire schedules ranked sagas for one tick and
// checks the exact messages published: a role whose consumer reads
// batches gets the tick's commands of a step in batches of at most
// CommandBatch, in rank order; a role whose consumer does not (a foreign
// agent's) gets each command alone, in rank order too.
func TestCommandBatchesOnTheWire(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{
		{Name: "ask", Role: "asker"}, {Name: "spend", Role: "treasury"},
	}}
	c := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}, CommandBatch: 3})
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	for role, meta := range map[string]map[string]string{
		"asker":    {messages.WireMetadata: "2"},
		"treasury": nil,
	} {
		step := map[string]string{"asker": "ask", "treasury": "spend"}[role]
		_, err := js.CreateOrUpdateConsumer(t.Context(), messages.CommandStream, jetstream.ConsumerConfig{
			Durable: messages.CommandConsumer(role), FilterSubjects: messages.StepCommandSubjects("pay", step),
			AckPolicy: jetstream.AckExplicitPolicy, Metadata: meta,
		})
		require.NoError(t, err)
	}
	require.NoError(t, coordinator.LearnWire(t.Context(), c))

	w := watchCommands(t, nc)
	next, last := w.next, w.last

	for _, s := range []struct {
		id   string
		rank int64
	}{{"e", 5}, {"c", 3}, {"a", 1}, {"d", 4}, {"b", 2}, {"f", 6}, {"g", 7}} {
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject("pay"), messages.StartRequest{V: messages.Version, SagaID: s.id, Rank: s.rank, Tick: 1}, &resp)
		require.Nil(t, resp.Error)
	}
	testenv.Tick(t, nc, 1)
	require.Equal(t, "saga.pay.ask batch: a b c", next())
	require.Equal(t, "saga.pay.ask batch: d e f", next())
	require.Equal(t, "saga.pay.ask single: g", next())

	for _, id := range []string{"g", "c", "a", "f", "b", "e", "d"} {
		c := last[id]
		data, err := json.Marshal(messages.ReplyTo(&c, messages.OK, ""))
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), messages.ReplySubject(c.Saga, c.Step), data)
		require.NoError(t, err)
	}
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		require.Equal(t, "saga.pay.spend single: "+id, next())
	}
}

// TestEventsKeptInBatches: a tick that starts seven sagas publishes seven
// live events, each alone and of version 1, and the event stream keeps
// them as one batch, in the order they happened (the starts were
// scheduled, and so begin, in the order e c a d b f g).
func TestEventsKeptInBatches(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{{Name: "ask", Role: "asker"}}}
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}})
	nc := testenv.Connect(t, url)
	live := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("natsaga.event.>", live)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())

	ids := []string{"e", "c", "a", "d", "b", "f", "g"}
	for i, id := range ids {
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject("pay"), messages.StartRequest{V: messages.Version, SagaID: id, Rank: int64(i + 1), Tick: 1}, &resp)
		require.Nil(t, resp.Error)
	}
	testenv.Tick(t, nc, 1)
	for _, id := range ids {
		select {
		case m := <-live:
			require.Equal(t, messages.EventSubject("pay", "in_progress"), m.Subject)
			require.Empty(t, m.Header.Get(messages.BatchHeader))
			var ev messages.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			require.Equal(t, messages.Event{V: messages.Version, SagaID: id, Saga: "pay", Status: "in_progress", Tick: 1}, ev)
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no live event for "+id)
		}
	}

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	stream, err := js.Stream(t.Context(), messages.EventStream)
	require.NoError(t, err)
	// The batch is published after the live events, without waiting for
	// the stream: it may be stored a moment after they arrive.
	var m *jetstream.RawStreamMsg
	require.Eventually(t, func() bool {
		m, err = stream.GetLastMsgForSubject(t.Context(), messages.EventLogSubject("pay", "in_progress"))
		return err == nil
	}, 10*time.Second, 5*time.Millisecond, "the events' batch is never stored")
	require.Equal(t, "7", m.Header.Get(messages.BatchHeader))
	events, err := wirejson.DecodeEventBatch(m.Data)
	require.NoError(t, err)
	var kept []string
	for _, ev := range events {
		kept = append(kept, ev.SagaID)
	}
	require.Equal(t, ids, kept)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	require.Equal(t, uint64(1), info.State.Msgs, "one message kept for the seven events")
}

// TestWireOfEachRole: the coordinator learns from each consumer whether
// its role reads batches, and whether it is serial (pinned), whose
// commands then keep their order across its steps.
func TestWireOfEachRole(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{
		{Name: "ask", Role: "asker"}, {Name: "spend", Role: "treasury"}, {Name: "log", Role: "clerk"},
	}}
	c := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}, CommandBatch: 50})
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	wire2 := map[string]string{messages.WireMetadata: "2"}
	for _, cfg := range []jetstream.ConsumerConfig{
		{Durable: messages.CommandConsumer("asker"), FilterSubjects: messages.StepCommandSubjects("pay", "ask"), Metadata: wire2},
		{Durable: messages.CommandConsumer("treasury"), FilterSubjects: messages.StepCommandSubjects("pay", "spend"), Metadata: wire2,
			PriorityPolicy: jetstream.PriorityPolicyPinned, PriorityGroups: []string{messages.SerialGroup}, PinnedTTL: time.Second},
		{Durable: messages.CommandConsumer("clerk"), FilterSubjects: messages.StepCommandSubjects("pay", "log")},
	} {
		cfg.AckPolicy = jetstream.AckExplicitPolicy
		_, err := js.CreateOrUpdateConsumer(t.Context(), messages.CommandStream, cfg)
		require.NoError(t, err)
	}
	require.NoError(t, coordinator.LearnWire(t.Context(), c))
	for role, want := range map[string]struct {
		limit   int
		ordered bool
	}{
		"asker":    {50, false},
		"treasury": {50, true},
		"clerk":    {1, true},
		"nobody":   {1, true},
	} {
		limit, ordered := coordinator.BatchLimit(c, role)
		require.Equal(t, want.limit, limit, role)
		require.Equal(t, want.ordered, ordered, role)
	}
}

// TestBatchesLeaveRoomForTheirHeaders: under a server payload limit of
// 64 KiB, commands sized so that a batch's data comes within a header's
// bytes of the limit are sent, each batch with its header within the
// limit. A batch filled to the limit without its header was refused by
// the server, which ended the coordinator's term, and again at every
// recovery: no command was ever sent again.
func TestBatchesLeaveRoomForTheirHeaders(t *testing.T) {
	const limit = 65536
	_, url := testenv.ServerWith(t, fmt.Sprintf("max_payload: %d", limit))
	def := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{{Name: "ask", Role: "asker"}}}
	c := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}})
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateOrUpdateConsumer(t.Context(), messages.CommandStream, jetstream.ConsumerConfig{
		Durable: messages.CommandConsumer("asker"), FilterSubjects: messages.StepCommandSubjects("pay", "ask"),
		AckPolicy: jetstream.AckExplicitPolicy, Metadata: map[string]string{messages.WireMetadata: "2"},
	})
	require.NoError(t, err)
	require.NoError(t, coordinator.LearnWire(t.Context(), c))
	msgs := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe("saga.>", msgs)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	// start schedules sagas first to first+n-1 for tick, each with a pad
	// of pad bytes: ids, ranks and ticks of one width, so that every
	// command has one length.
	start := func(first, n int, tick int64, pad int) {
		for i := first; i < first+n; i++ {
			var resp messages.StartResponse
			testenv.Request(t, nc, messages.StartSubject("pay"), messages.StartRequest{V: messages.Version,
				SagaID: fmt.Sprintf("s-%04d", i), Rank: int64(1000 + i), Tick: tick,
				Context: messages.Context{}.MustSet("pad", strings.Repeat("p", pad))}, &resp)
			require.Nil(t, resp.Error)
		}
		testenv.Tick(t, nc, tick)
	}
	// commands returns the commands of the next messages, n in all.
	commands := func(n int) (raws [][]byte, sizes []int) {
		for len(raws) < n {
			select {
			case m := <-msgs:
				sizes = append(sizes, len(m.Data))
				if m.Header.Get(messages.BatchHeader) == "" {
					raws = append(raws, m.Data)
					continue
				}
				rs, err := wirejson.SplitCommandBatch(m.Data)
				require.NoError(t, err)
				raws = append(raws, rs...)
			case <-time.After(10 * time.Second):
				require.FailNow(t, "commands not sent", "%d of %d", len(raws), n)
			}
		}
		return raws, sizes
	}

	// One command, to learn its length without a pad.
	start(0, 1, 1, 0)
	raws, _ := commands(1)
	bare := len(raws[0])
	// Answered, so that the next tick's round is released.
	first, err := wirejson.DecodeCommand(raws[0])
	require.NoError(t, err)
	data, err := json.Marshal(messages.ReplyTo(&first, messages.OK, ""))
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), messages.ReplySubject(first.Saga, first.Step), data)
	require.NoError(t, err)
	testenv.WaitStatus(t, nc, first.SagaID, saga.Completed)
	// The pad that makes the fullest batch, as filled without a header's
	// room, come within 20 bytes of the limit: its header (the count,
	// 31 bytes with the status line) would not fit.
	const envelope = len(`{"v":2,"commands":[]}`)
	pad, full := -1, 0
	for p := 0; p < 4000 && pad < 0; p++ {
		l := bare + p
		n := (limit - envelope + 1) / (l + 1)
		if slack := limit - (envelope - 1 + n*(l+1)); n <= messages.MaxBatch && slack >= 0 && slack < 20 {
			pad, full = p, n
		}
	}
	require.GreaterOrEqual(t, pad, 0, "no pad lands a batch there")
	n := full + 5 // a full batch, and more
	start(1, n, 2, pad)
	raws, sizes := commands(n)
	require.Len(t, raws, n)
	require.Greater(t, len(sizes), 1, "more than one batch")
	for _, size := range sizes {
		require.LessOrEqual(t, size, limit-1<<10, "each batch leaves a header room")
	}
}

// TestRoleThatStopsReadingBatchesGetsItsCommandsAgain: a role's agents
// replaced by agents of wire version 1 (its consumer no longer says it
// reads batches) drop the batches sent before; the coordinator sends that
// role's commands in flight again, each alone, in rank order, and leaves
// the other roles' alone.
func TestRoleThatStopsReadingBatchesGetsItsCommandsAgain(t *testing.T) {
	_, url := testenv.Server(t)
	pay := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{{Name: "ask", Role: "asker"}}}
	log := saga.Definition{Name: "log", Subject: "log", Steps: []saga.Step{{Name: "note", Role: "clerk"}}}
	c := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{pay, log}, CommandBatch: 3})
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	consumer := func(role string, subjects []string, meta map[string]string) {
		_, err := js.CreateOrUpdateConsumer(t.Context(), messages.CommandStream, jetstream.ConsumerConfig{
			Durable: messages.CommandConsumer(role), FilterSubjects: subjects, AckPolicy: jetstream.AckExplicitPolicy, Metadata: meta,
		})
		require.NoError(t, err)
	}
	wire2 := map[string]string{messages.WireMetadata: "2"}
	consumer("asker", messages.StepCommandSubjects("pay", "ask"), wire2)
	consumer("clerk", messages.StepCommandSubjects("log", "note"), wire2)
	require.NoError(t, coordinator.LearnWire(t.Context(), c))

	w := watchCommands(t, nc)
	next := w.next
	for i, id := range []string{"c", "a", "b", "x", "y"} {
		sagaType := map[bool]string{true: "log", false: "pay"}[id >= "x"]
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject(sagaType), messages.StartRequest{V: messages.Version, SagaID: id, Rank: int64(10 - i), Tick: 1}, &resp)
		require.Nil(t, resp.Error)
	}
	testenv.Tick(t, nc, 1)
	sent := []string{next(), next()}
	slices.Sort(sent)
	require.Equal(t, []string{"saga.log.note batch: y x", "saga.pay.ask batch: b a c"}, sent)

	consumer("asker", messages.StepCommandSubjects("pay", "ask"), nil) // agents of version 1
	for _, id := range []string{"b", "a", "c"} {
		require.Equal(t, "saga.pay.ask single: "+id, next())
	}
	select {
	case m := <-w.msgs:
		require.FailNow(t, "a command sent again to a role that reads batches still", m.Subject)
	case <-time.After(3 * coordinator.WireRefresh):
	}
}

// commandWatch follows the commands published on saga.>.
type commandWatch struct {
	msgs chan *nats.Msg
	// last holds the last command seen of each saga.
	last map[string]messages.Command
	// next returns the next message as "subject single|batch: saga ids",
	// checking that a batch's header counts its commands and that each
	// command is on its step's subject.
	next func() string
}

// watchCommands subscribes to every command nc's server carries.
func watchCommands(t *testing.T, nc *nats.Conn) *commandWatch {
	t.Helper()
	w := &commandWatch{msgs: make(chan *nats.Msg, 64), last: map[string]messages.Command{}}
	sub, err := nc.ChanSubscribe("saga.>", w.msgs)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	w.next = func() string {
		t.Helper()
		select {
		case m := <-w.msgs:
			raws := [][]byte{m.Data}
			kind := "single"
			if n := m.Header.Get(messages.BatchHeader); n != "" {
				raws, err = wirejson.SplitCommandBatch(m.Data)
				require.NoError(t, err)
				require.Equal(t, fmt.Sprint(len(raws)), n)
				kind = "batch"
			}
			ids := ""
			for _, raw := range raws {
				c, err := wirejson.DecodeCommand(raw)
				require.NoError(t, err)
				require.True(t, c.OnSubject(m.Subject), "command %s/%s in a batch on %s", c.SagaID, c.Step, m.Subject)
				w.last[c.SagaID] = c
				ids += " " + c.SagaID
			}
			return m.Subject + " " + kind + ":" + ids
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no command published")
			return ""
		}
	}
	return w
}
