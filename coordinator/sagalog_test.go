package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// pay is a one-step saga its agent (payer) completes at once; waiting, a
// saga no agent serves: it stays active.
var (
	pay     = saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{{Name: "pay", Role: "payer"}}}
	waiting = saga.Definition{Name: "waiting", Subject: "waiting", Steps: []saga.Step{{Name: "wait", Role: "nobody"}}}
)

func payer(t *testing.T, url string) {
	t.Helper()
	testenv.Agent(t, url, participant.Options{Role: "payer", Steps: []agent.Step{{Saga: "pay", Name: "pay", Handler: agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			return messages.Context{}, nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}}}})
}

// TestSagaLogCompacted: the log holds each active saga's last state; the
// sagas that end leave entries no saga needs. Once those are more than
// the floor beyond twice the active sagas' bytes, the active sagas are
// written again at the log's end and the messages before purged: a new
// coordinator recovers every active saga from what is left.
func TestSagaLogCompacted(t *testing.T) {
	t.Cleanup(coordinator.SetCompactFloor(4 << 10))
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	// Two entries no coordinator can take, kept for an operator through
	// every compaction: a saga of an unknown definition, and a value
	// that is not a saga.
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: messages.SagaLogStream, Subjects: []string{messages.SagaLogSubject}})
	require.NoError(t, err)
	unknown := json.RawMessage(`{"saga_id":"unknown-def","definition":"no_such","saga":"no_such","version":1,"status":"in_progress","context":{},"current_step":0,"action":"execute","attempt":1,"seq":1,"started_tick":0,"dispatched_tick":0,"completed_steps":[],"history":[]}`)
	notSaga := json.RawMessage(`[1,2]`)
	_, err = js.Publish(t.Context(), messages.SagaLogSubject, kvlog.AppendMessage(nil, "", []kvlog.Entry{
		{Key: "unknown-def", Value: unknown}, {Key: "not-a-saga", Value: notSaga}}))
	require.NoError(t, err)
	logs := newLogSink()
	stop := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{pay, waiting}, Logger: slog.New(logs)})
	payer(t, url)
	var waits []string
	for range 3 {
		waits = append(waits, testenv.Start(t, nc, "waiting", nil))
	}
	for range 40 {
		testenv.WaitStatus(t, nc, testenv.Start(t, nc, "pay", nil), saga.Completed)
	}
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "saga log compacted", "") > 0 }, 10*time.Second, 5*time.Millisecond)
	stop()

	st, err := js.Stream(t.Context(), messages.SagaLogStream)
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	require.Greater(t, info.State.FirstSeq, uint64(1), "purged")
	require.Less(t, info.State.Msgs, info.State.LastSeq)
	kept := map[string]string{}
	require.NoError(t, kvlog.Scan(t.Context(), js, messages.SagaLogStream, messages.SagaLogSubject, func(_ uint64, es []kvlog.Entry, err error) {
		require.NoError(t, err)
		for _, e := range es {
			kept[e.Key] = string(e.Value)
		}
	}))
	require.Equal(t, string(unknown), kept["unknown-def"], "kept as it was")
	require.Equal(t, string(notSaga), kept["not-a-saga"], "kept as it was")

	testenv.Coordinator(t, url, []saga.Definition{pay, waiting})
	require.Equal(t, 3, testenv.Summary(t, nc).Active)
	for _, id := range waits {
		x := testenv.Status(t, nc, id)
		require.Equal(t, saga.InProgress, x.Status, id)
		require.Equal(t, 0, x.Current, id)
	}
}

// TestEndedSagaNotTakenFromTheLogAgain: a saga that ended is stored in the
// bucket, and the log's next message marks it ended. When its end has
// expired from the bucket, a new coordinator does not take it as active
// from its older entries in the log.
func TestEndedSagaNotTakenFromTheLogAgain(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	stores := listenStores(t, nc)
	stop := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{pay}, Retention: time.Second})
	payer(t, url)
	id := testenv.Start(t, nc, "pay", nil)
	testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Eventually(t, func() bool { return stores.endedMarks(t, id) == 1 }, 10*time.Second, 5*time.Millisecond,
		"the log marks it ended")
	require.Equal(t, "in_progress completed", stores.states(t, id))
	stop()

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(t.Context(), messages.SagaBucket)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := kv.Get(t.Context(), messages.SagaKey(id))
		return errors.Is(err, jetstream.ErrKeyNotFound)
	}, 10*time.Second, 20*time.Millisecond, "its end expires from the bucket")

	testenv.Coordinator(t, url, []saga.Definition{pay})
	require.Equal(t, 0, testenv.Summary(t, nc).Active)
	var resp messages.StatusResponse
	testenv.Request(t, nc, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id}, &resp)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeNotFound, resp.Error.Code)
}

// writeAsAnother gets a message into the saga log, as another coordinator
// would: the state of saga id under another id.
func writeAsAnother(t *testing.T, nc *nats.Conn, id string) {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	x := testenv.Status(t, nc, id)
	x.ID = "other"
	_, err = js.Publish(t.Context(), messages.SagaLogSubject, kvlog.AppendMessage(nil, "", []kvlog.Entry{{Key: "other", Value: mustJSON(t, x)}}))
	require.NoError(t, err)
}

// TestAnotherWriterOfTheLogEndsTheTerm: each message of the saga log
// expects the last one the coordinator wrote or read. When another writer
// got a message in (a coordinator whose term is over would), the next
// commit is refused: the term ends, and the next one recovers the log,
// the other writer's message included, and serves again.
func TestAnotherWriterOfTheLogEndsTheTerm(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	logs := newLogSink()
	runCoordinator(t, url, []saga.Definition{waiting}, slog.New(logs))
	first := testenv.Start(t, nc, "waiting", nil)

	writeAsAnother(t, nc, first)

	var resp messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("waiting"), messages.StartRequest{V: messages.Version, SagaID: "second", Context: messages.Context{}}, &resp)
	require.NotNil(t, resp.Error, "its commit is refused")
	require.Equal(t, messages.CodeBusy, resp.Error.Code)
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "recovered", "") == 2 }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 1, logs.count(slog.LevelError, "coordinator term ended", coordinator.ErrConflict.Error()))

	again := mustJSON(t, messages.StartRequest{V: messages.Version, SagaID: "second", Context: messages.Context{}})
	require.Eventually(t, func() bool {
		// Sent again until the next term serves it.
		m, err := nc.Request(messages.StartSubject("waiting"), again, 5*time.Second)
		if err != nil {
			return false
		}
		var resp messages.StartResponse
		require.NoError(t, json.Unmarshal(m.Data, &resp))
		return resp.Error == nil
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3, testenv.Summary(t, nc).Active, "the first, the other writer's and the second")
	require.Equal(t, saga.InProgress, testenv.Status(t, nc, "other").Status)
}

// TestCatchUpReadsTheRecordsOfAgentsBeforeTheLog: agents before the record
// log kept each record on its branch subject in the role's state stream. A
// restarted coordinator catches up from such a record when the log holds
// none. It reads the old subjects only for a role whose state stream holds
// any: once no such record is left, a recovery asks once per role, not
// once per saga.
func TestCatchUpReadsTheRecordsOfAgentsBeforeTheLog(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	commands := listen(t, nc, "saga.>")
	gets := listen(t, nc, "$JS.API.DIRECT.GET."+messages.StateStream("bank")+".>")
	opts := coordinator.Options{Definitions: []saga.Definition{twoSteps}}
	stop := runUntilStopped(t, url, opts)
	var ids []string
	for range 3 {
		ids = append(ids, testenv.Start(t, nc, "transfer", nil))
	}
	require.Eventually(t, func() bool { return commands.len() == 3 }, 10*time.Second, 5*time.Millisecond)
	stop()

	// The bank's state stream holds no old record: one read for the role.
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), participant.StreamConfig("bank", 1))
	require.NoError(t, err)
	stop = runUntilStopped(t, url, opts)
	stop()
	require.Eventually(t, func() bool { return gets.len() == 1 }, 10*time.Second, 5*time.Millisecond,
		"one read for the bank, none per saga: %d", gets.len())

	// The first saga's debit recorded on its old branch subject.
	debit := commands.commandOf(t, ids[0], "debit", messages.Execute)
	rec := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Output: messages.Context{}.MustSet("debited", 5), Seq: debit.Seq}}
	_, err = js.Publish(t.Context(), messages.BranchSubject("bank", ids[0], "debit"), mustJSON(t, rec))
	require.NoError(t, err)
	testenv.Coordinator(t, url, opts.Definitions)
	x := testenv.Status(t, nc, ids[0])
	require.Equal(t, []string{"debit"}, x.Completed, "caught up from the old record")
	require.Equal(t, "credit", twoSteps.Steps[x.Current].Name)
	for _, id := range ids[1:] {
		require.Empty(t, testenv.Status(t, nc, id).Completed, id)
	}
	require.Eventually(t, func() bool { return gets.len() == 1+1+3+1 }, 10*time.Second, 5*time.Millisecond,
		"the role's read, then each saga's step in flight, and the first saga's next: %d", gets.len())
}

// TestStatusOfASagaEndingMeanwhile: a status or retry request applied in
// the batch that ends its saga reads the bucket once that batch is
// committed; until then no store holds the saga's end. Neither is ever
// answered not_found: the status is the saga's, the retry is refused as
// for a saga that did not fail.
func TestStatusOfASagaEndingMeanwhile(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	commands := listen(t, nc, "saga.>")
	testenv.Coordinator(t, url, []saga.Definition{waiting})
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	for i := range 40 {
		id := testenv.Start(t, nc, "waiting", nil)
		require.Eventually(t, func() bool { return commands.len() == i+1 }, 10*time.Second, time.Millisecond)
		cmd := commands.commandOf(t, id, "wait", messages.Execute)
		reply := messages.ReplyTo(&cmd, messages.OK, "")
		status := mustJSON(t, messages.StatusRequest{V: messages.Version, SagaID: id})
		// The reply and the status request at once: often one batch.
		_, err := js.PublishAsync(reply.Subject(), mustJSON(t, reply))
		require.NoError(t, err)
		retries, err := nc.SubscribeSync(nats.NewInbox())
		require.NoError(t, err)
		require.NoError(t, nc.PublishRequest(messages.RetrySubject, retries.Subject, mustJSON(t, messages.RetryRequest{V: messages.Version, SagaID: id})))
		asks := make([]*nats.Msg, 0, 8)
		for range 8 {
			inbox := nats.NewInbox()
			sub, err := nc.SubscribeSync(inbox)
			require.NoError(t, err)
			require.NoError(t, nc.PublishRequest(messages.StatusSubject, inbox, status))
			m, err := sub.NextMsg(10 * time.Second)
			require.NoError(t, err)
			asks = append(asks, m)
			_ = sub.Unsubscribe()
		}
		for _, m := range asks {
			var resp messages.StatusResponse
			require.NoError(t, json.Unmarshal(m.Data, &resp))
			require.Nil(t, resp.Error, "saga %d", i)
		}
		m, err := retries.NextMsg(10 * time.Second)
		require.NoError(t, err)
		_ = retries.Unsubscribe()
		var retry messages.RetryResponse
		require.NoError(t, json.Unmarshal(m.Data, &retry))
		require.NotNil(t, retry.Error)
		require.Equal(t, messages.CodeConflict, retry.Error.Code, "saga %d: %s", i, retry.Error.Message)
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
}

// TestAbortNotStoredIsBusy: an abort whose batch the store refuses (another
// writer of the saga log was first, as a coordinator whose term is over
// would be) is answered busy, to be sent again, not conflict, which says
// the saga finished; sent again to the term that recovers, it applies.
func TestAbortNotStoredIsBusy(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	logs := newLogSink()
	runCoordinator(t, url, []saga.Definition{waiting}, slog.New(logs))
	id := testenv.Start(t, nc, "waiting", nil)

	writeAsAnother(t, nc, id)

	var resp messages.AbortResponse
	testenv.Request(t, nc, messages.AbortSubject, messages.AbortRequest{V: messages.Version, SagaID: id}, &resp)
	require.NotNil(t, resp.Error, "its commit is refused")
	require.Equal(t, messages.CodeBusy, resp.Error.Code, resp.Error.Message)
	require.Contains(t, resp.Error.Message, "abort of "+id+" not stored; send it again")
	require.Eventually(t, func() bool { return logs.count(slog.LevelInfo, "recovered", "") == 2 }, 10*time.Second, 5*time.Millisecond)

	again := mustJSON(t, messages.AbortRequest{V: messages.Version, SagaID: id})
	require.Eventually(t, func() bool {
		m, err := nc.Request(messages.AbortSubject, again, time.Second)
		resp = messages.AbortResponse{}
		return err == nil && json.Unmarshal(m.Data, &resp) == nil && resp.Error == nil
	}, 10*time.Second, 10*time.Millisecond, "sent again, it applies")
	require.Equal(t, string(saga.Compensating), resp.Status)
}
