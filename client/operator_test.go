package client_test

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// The tests of this file cover what the operator tool (cmd/natsaga) needs
// of the client beyond a Go program's calls: the states as the coordinator
// sent them, the kept events, the services, and why a request went
// unanswered.

// TestStatesAsSent: StatusJSON and ListJSON return the very JSON that
// Status and List decode, and the coordinator's errors as Status does.
func TestStatesAsSent(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	none, err := c.ListJSON(ctx, saga.RolledBack, 0)
	require.NoError(t, err)
	require.NotNil(t, none, "an empty list, not nil")
	require.Empty(t, none)

	_, errs := c.StartMany(ctx, []client.Start{{Saga: "greet", ID: "a"}, {Saga: "greet", ID: "b"}}, 2)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.Eventually(t, func() bool {
		xs, err := c.List(ctx, saga.RolledBack, 0)
		return err == nil && len(xs) == 2
	}, 10*time.Second, 10*time.Millisecond)

	data, err := c.StatusJSON(ctx, "a")
	require.NoError(t, err)
	var x saga.Execution
	require.NoError(t, json.Unmarshal(data, &x))
	decoded, err := c.Status(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, decoded, x)
	require.Equal(t, saga.ID("a"), x.ID)
	require.Equal(t, saga.RolledBack, x.Status)

	raw, err := c.ListJSON(ctx, saga.RolledBack, 0)
	require.NoError(t, err)
	xs, err := c.List(ctx, saga.RolledBack, 0)
	require.NoError(t, err)
	require.Len(t, raw, 2)
	for i := range raw {
		var y saga.Execution
		require.NoError(t, json.Unmarshal(raw[i], &y))
		require.Equal(t, xs[i], y)
	}
	one, err := c.ListJSON(ctx, saga.RolledBack, 1)
	require.NoError(t, err)
	require.Len(t, one, 1)

	_, err = c.StatusJSON(ctx, "nobody")
	require.ErrorIs(t, err, client.ErrNotFound)
	var ce *client.Error
	require.ErrorAs(t, err, &ce)
	require.Equal(t, messages.StatusSubject, ce.Subject)
	_, err = c.ListJSON(ctx, "sleeping", 0)
	require.ErrorIs(t, err, client.ErrBadRequest)
	_, err = c.ListJSON(ctx, "", -1)
	require.EqualError(t, err, "list: negative limit: bad_request")
	require.ErrorIs(t, err, client.ErrBadRequest)
}

// TestWatchKeptEvents reads the events kept: all of them, or the latest n,
// filtered or not, and ends there unless told to follow.
func TestWatchKeptEvents(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range []string{"a", "b", "c"} {
		_, err := c.Start(ctx, client.Start{Saga: "greet", ID: id})
		require.NoError(t, err)
		require.Eventually(t, func() bool {
			x, err := c.Status(ctx, id)
			return err == nil && x.Status == saga.RolledBack
		}, 10*time.Second, 10*time.Millisecond)
	}
	// Each saga went in_progress, compensating, rolled_back, one after
	// the other.
	var all []string
	for _, id := range []string{"a", "b", "c"} {
		for _, st := range []string{"in_progress", "compensating", "rolled_back"} {
			all = append(all, id+" "+st)
		}
	}
	js, err := jetstream.New(c.Conn())
	require.NoError(t, err)
	// read returns the events f selects, which must end by themselves,
	// and leave no consumer on the server.
	read := func(f client.Watch) []string {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		events, err := c.Watch(rctx, f)
		require.NoError(t, err)
		var got []string
		for ev, err := range events {
			require.NoError(t, err)
			got = append(got, ev.SagaID+" "+ev.Status)
		}
		require.NoError(t, rctx.Err(), "the kept events end the sequence")
		st, err := js.Stream(ctx, messages.EventStream)
		require.NoError(t, err)
		require.Zero(t, st.CachedInfo().State.Consumers, "the read's consumer is deleted once it ends")
		return got
	}
	// Following every event, the nine come; then they are all kept.
	events, err := c.Watch(ctx, client.Watch{All: true})
	require.NoError(t, err)
	var followed []string
	for ev, err := range events {
		require.NoError(t, err)
		if followed = append(followed, ev.SagaID+" "+ev.Status); len(followed) == len(all) {
			break
		}
	}
	require.Equal(t, all, followed)
	require.Equal(t, all, read(client.Watch{All: true, KeptOnly: true}))
	require.Equal(t, all[7:], read(client.Watch{Last: 2, KeptOnly: true}))
	require.Equal(t, all, read(client.Watch{Last: 100, KeptOnly: true}))
	// Filtered, the latest are found among the events of other sagas and
	// statuses.
	require.Equal(t, []string{"b rolled_back", "c rolled_back"}, read(client.Watch{Status: "rolled_back", Last: 2, KeptOnly: true}))
	require.Equal(t, []string{"a compensating", "b compensating", "c compensating"}, read(client.Watch{Saga: "greet", Status: "compensating", All: true, KeptOnly: true}))
	// The saga type by its definition's name, as a start takes it, too.
	require.Equal(t, []string{"a compensating", "b compensating", "c compensating"}, read(client.Watch{Saga: "greeting", Status: "compensating", All: true, KeptOnly: true}))
	// A saga type with neither that subject nor that name is said so.
	_, err = c.Watch(ctx, client.Watch{Saga: "nosuch", All: true})
	require.EqualError(t, err, `watch: not_found: saga "nosuch": no saga type has that subject or name; the subjects are greet`)
	require.ErrorIs(t, err, client.ErrNotFound)
	require.Empty(t, read(client.Watch{Status: "timed_out", All: true, KeptOnly: true}))

	// A message deleted, and one on another subject of the stream, among
	// the latest: the latest are still found, and the read ends.
	st, err := js.Stream(ctx, messages.EventStream)
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	require.NoError(t, st.DeleteMsg(ctx, info.State.LastSeq-1))
	_, err = js.Publish(ctx, "natsaga.eventlog.probe", []byte("garbage"))
	require.NoError(t, err)
	kept := read(client.Watch{All: true, KeptOnly: true})
	require.Len(t, kept, len(all)-1, "one event deleted")
	require.Equal(t, all[len(all)-1], kept[len(kept)-1])
	require.Equal(t, kept[len(kept)-2:], read(client.Watch{Last: 2, KeptOnly: true}))
	require.Equal(t, kept[len(kept)-1:], read(client.Watch{Last: 1, KeptOnly: true}))

	// Without KeptOnly the latest come, then the new ones.
	events, err = c.Watch(ctx, client.Watch{Last: 1})
	require.NoError(t, err)
	var got []string
	for ev, err := range events {
		require.NoError(t, err)
		got = append(got, ev.SagaID+" "+ev.Status)
		if len(got) == 1 {
			_, err := c.Start(ctx, client.Start{Saga: "greet", ID: "d"})
			require.NoError(t, err)
		}
		if len(got) == 4 {
			break
		}
	}
	require.Equal(t, []string{"c rolled_back", "d in_progress", "d compensating", "d rolled_back"}, got)

	for _, f := range []client.Watch{{Last: -1}, {All: true, Last: 1}, {KeptOnly: true}, {Saga: "a.b"}} {
		_, err := c.Watch(ctx, f)
		require.Error(t, err, "%+v", f)
	}

	// A watch never ranged: its consumer goes when its context ends.
	wctx, stop := context.WithCancel(ctx)
	_, err = c.Watch(wctx, client.Watch{All: true})
	require.NoError(t, err)
	consumers := func() int {
		st, err := js.Stream(ctx, messages.EventStream)
		require.NoError(t, err)
		return st.CachedInfo().State.Consumers
	}
	require.Equal(t, 1, consumers())
	stop()
	require.Eventually(t, func() bool { return consumers() == 0 }, 10*time.Second, 10*time.Millisecond)
}

// TestWatchReadsEventBatches: the stream keeps events in batches, and the
// latest n are counted in events, across batches, filtered or not. A batch
// that does not decode is skipped.
func TestWatchReadsEventBatches(t *testing.T) {
	_, url := testenv.Server(t)
	defs, err := saga.ParseFile([]byte(greetings))
	require.NoError(t, err)
	testenv.Coordinator(t, url, defs)
	nc := testenv.Connect(t, url)
	c, err := client.New(nc, client.Options{Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	keep := func(status string, ids ...string) {
		t.Helper()
		var evs [][]byte
		for _, id := range ids {
			data, err := json.Marshal(messages.Event{V: messages.Version, SagaID: id, Saga: "greet", Status: status})
			require.NoError(t, err)
			evs = append(evs, data)
		}
		data := []byte("junk")
		if len(ids) > 0 {
			data = wirejson.AppendEventBatch(nil, evs)
		}
		_, err := js.Publish(ctx, messages.EventLogSubject("greet", status), data)
		require.NoError(t, err)
	}
	keep("completed", "a", "b")
	keep("rolled_back", "c")
	keep("completed", "d", "e", "f")
	keep("completed") // junk
	keep("completed", "g")

	read := func(f client.Watch) string {
		t.Helper()
		events, err := c.Watch(ctx, f)
		require.NoError(t, err)
		var got []string
		for ev, err := range events {
			require.NoError(t, err)
			got = append(got, ev.SagaID)
		}
		return strings.Join(got, " ")
	}
	require.Equal(t, "a b c d e f g", read(client.Watch{All: true, KeptOnly: true}))
	require.Equal(t, "e f g", read(client.Watch{Last: 3, KeptOnly: true}))
	require.Equal(t, "d e f g", read(client.Watch{Status: "completed", Last: 4, KeptOnly: true}))
	require.Equal(t, "c", read(client.Watch{Status: "rolled_back", Last: 4, KeptOnly: true}))

	// Without KeptOnly the latest come, then the new ones.
	events, err := c.Watch(ctx, client.Watch{Last: 1})
	require.NoError(t, err)
	var got []string
	for ev, err := range events {
		require.NoError(t, err)
		got = append(got, ev.SagaID)
		if len(got) == 1 {
			keep("completed", "h", "i")
		}
		if len(got) == 3 {
			break
		}
	}
	require.Equal(t, []string{"g", "h", "i"}, got)
}

// TestServices finds the coordinator, active, and the agent.
func TestServices(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	infos, err := c.Services(ctx, 500*time.Millisecond)
	require.NoError(t, err)
	require.Len(t, infos, 2)
	require.Equal(t, messages.CoordinatorService, infos[0].Name)
	require.Equal(t, "active", infos[0].Metadata["state"])
	require.Equal(t, messages.AgentService, infos[1].Name)
	require.Equal(t, "greeter", infos[1].Metadata["role"])
}

// TestNobodyServes: a request no coordinator serves is sent again for the
// restart patience, and its error says that nobody served it, whether the
// patience or ctx ended it.
func TestNobodyServes(t *testing.T) {
	_, url := testenv.Server(t)
	c, err := client.New(testenv.Connect(t, url), client.Options{Attempts: 1, RestartPatience: 600 * time.Millisecond})
	require.NoError(t, err)
	begin := time.Now()
	_, err = c.Summary(context.Background())
	require.ErrorIs(t, err, nats.ErrNoResponders)
	require.GreaterOrEqual(t, time.Since(begin), 600*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = c.Status(ctx, "a")
	require.ErrorIs(t, err, nats.ErrNoResponders)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestWithoutJetStream reads events and the bucket of a server without
// JetStream: each error says what the server lacks.
func TestWithoutJetStream(t *testing.T) {
	ns, err := embedded.Start(embedded.Options{NoJetStream: true})
	require.NoError(t, err)
	defer ns.Shutdown()
	c, err := client.New(testenv.Connect(t, ns.ClientURL()), client.Options{})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const says = "(the server has no JetStream, which natsaga needs: start nats-server with -js)"
	_, err = c.Watch(ctx, client.Watch{All: true, KeptOnly: true})
	require.ErrorContains(t, err, says)
	_, _, err = c.WriteOutcomes(ctx, io.Discard, false)
	require.ErrorContains(t, err, says)
}
