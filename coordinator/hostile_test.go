package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestIdentifierGrammarOnEveryRequest sends identifiers that break the
// grammar on each request that takes one: every one is answered
// bad_request naming the rule, and the coordinator serves on.
func TestIdentifierGrammarOnEveryRequest(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, flood.Definitions())
	long := strings.Repeat("x", 5000)
	type answer struct {
		Error *messages.WireError `json:"error"`
	}
	for _, tc := range []struct {
		name, subject string
		data          []byte
	}{
		{"start: long saga id", messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: long})},
		{"start: saga id of 65", messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: strings.Repeat("a", 65)})},
		{"start: saga id not a key", messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: "ÉTAT"})},
		{"start: saga id with a colon", messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: "a:b"})},
		{"start: saga type not a key", messages.StartSubject("ÉTAT"), mustJSON(t, messages.StartRequest{V: 1})},
		{"start: long saga type", messages.StartSubject(strings.Repeat("t", 200)), mustJSON(t, messages.StartRequest{V: 1})},
		{"status: long saga id", messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: long})},
		{"status: saga id not a key", messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: "a=b"})},
		{"retry: long saga id", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 1, SagaID: long})},
		{"retry: saga id not a key", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 1, SagaID: "a/b"})},
		{"abort: long saga id", messages.AbortSubject, mustJSON(t, messages.AbortRequest{V: 1, SagaID: long})},
		{"abort: saga id not a key", messages.AbortSubject, mustJSON(t, messages.AbortRequest{V: 1, SagaID: "a/b"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a answer
			request(t, nc, tc.subject, tc.data, &a)
			require.NotNil(t, a.Error, "no error answered")
			require.Equal(t, messages.CodeBadRequest, a.Error.Code, a.Error.Message)
			require.Contains(t, a.Error.Message, messages.TokenRule)
			require.Less(t, len(a.Error.Message), 400, "the answer quotes the identifier cut")
		})
	}
	// Still serving, with nothing started.
	require.Equal(t, messages.Summary{V: 1, Registered: len(flood.Definitions())}, testenv.Summary(t, nc))
	id := testenv.Start(t, nc, flood.Elevation, messages.Context{}.MustSet(flood.KeyHousehold, "h-1"))
	require.Equal(t, saga.InProgress, testenv.Status(t, nc, id).Status)
}

// TestRecoverySkipsBadStoredSagas stores, beside a good saga, entries the
// coordinator cannot take, in the bucket (where coordinators before the
// saga log stored active sagas) and in the saga log: a key that breaks the
// grammar, a value that is not a saga, a saga whose id is not its key's,
// one of an unknown definition, one compensating a step that is not
// there, an ended saga in the log, a log message
// that does not decode, and an unreadable clock. A coordinator started on
// them skips each with an error logged and recovers the good saga.
func TestRecoverySkipsBadStoredSagas(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	first := newLogSink()
	ctx, stop := context.WithCancel(context.Background())
	c := runUntil(t, ctx, url, slog.New(first))
	good := testenv.Start(t, nc, flood.Elevation, messages.Context{}.MustSet(flood.KeyHousehold, "h-good"))
	stop()
	<-c

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	x := loggedSaga(t, js, good)
	require.Equal(t, good, x.ID, "the good saga is in the log")
	// Written as raw publishes: the key-value client refuses some of
	// these keys, a server does not.
	put := func(key string, v []byte) {
		_, err := js.Publish(context.Background(), messages.BucketSubject(key), v)
		require.NoError(t, err)
	}
	long := strings.Repeat("L", messages.MaxTokenLen+1)
	other := x
	other.ID = long
	put(messages.SagaKey(long), mustJSON(t, other))
	put(messages.SagaKey("a=b"), mustJSON(t, x))
	put(messages.SagaKey("not-json"), []byte("{"))
	put(messages.SagaKey("not-its-key"), mustJSON(t, x))
	unknown := x
	unknown.ID = "unknown-def"
	unknown.Definition = "no_such_definition"
	put(messages.SagaKey(unknown.ID), mustJSON(t, unknown))
	put(messages.ClockKey, []byte("tomorrow"))
	// A saga compensating step -5, due to send it again: it stopped
	// every coordinator that recovered it.
	negative := x
	negative.ID, negative.Status, negative.Current, negative.Action = "step-minus-5", saga.Compensating, -5, messages.Compensate
	negative.RetryAt = time.Unix(1, 0)
	put(messages.SagaKey(negative.ID), mustJSON(t, negative))
	negativeInLog := negative
	negativeInLog.ID = "step-minus-5-in-log"

	ended := x
	ended.ID, ended.Status = "ended-in-log", saga.Completed
	unknownInLog := unknown
	unknownInLog.ID = "unknown-def-in-log"
	logged := kvlog.AppendMessage(nil, "", []kvlog.Entry{
		{Key: "a=b", Value: mustJSON(t, x)},
		{Key: "not-a-saga", Value: json.RawMessage(`[1]`)},
		{Key: "not-its-key-in-log", Value: mustJSON(t, x)},
		{Key: ended.ID, Value: mustJSON(t, ended)},
		{Key: unknownInLog.ID, Value: mustJSON(t, unknownInLog)},
		{Key: negativeInLog.ID, Value: mustJSON(t, negativeInLog)},
	})
	for _, data := range [][]byte{logged, []byte("{")} {
		_, err := js.Publish(context.Background(), messages.SagaLogSubject, data)
		require.NoError(t, err)
	}

	second := newLogSink()
	runCoordinator(t, url, flood.Definitions(), slog.New(second))
	require.Equal(t, 8, second.count(slog.LevelError, "stored saga skipped", ""), "one error per bad saga the engine refuses")
	require.Equal(t, 4, second.count(slog.LevelError, "saga log: a stored saga skipped", ""), "one error per bad entry of the log")
	require.Equal(t, 1, second.count(slog.LevelError, "saga log: a malformed message skipped", ""))
	require.Equal(t, 1, second.count(slog.LevelError, "stored clock unreadable", ""))
	require.Equal(t, saga.InProgress, testenv.Status(t, nc, good).Status)
	s := testenv.Summary(t, nc)
	require.Equal(t, 1, s.Active)
	require.Equal(t, 0, s.Completed+s.Failed+s.RolledBack+s.TimedOut)
	// The clock still moves, and is stored over the bad value.
	require.Equal(t, int64(3), testenv.Tick(t, nc, 3).Tick)
}

// runUntil runs a coordinator on the flood definitions until ctx ends and
// returns a channel closed when it has stopped; it waits until it is ready.
func runUntil(t *testing.T, ctx context.Context, url string, log *slog.Logger) <-chan struct{} {
	t.Helper()
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions(), Logger: log})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
	return done
}

// TestForgedAnswersRefused sends, while the hotel holds its step, answers
// it never gave: its step's record in the airline's state stream, a record
// of its own with a sequence number never sent, and replies naming a seq,
// action or attempt not in flight. Each is refused and counted, and the
// saga waits on for the hotel.
func TestForgedAnswersRefused(t *testing.T) {
	env := newTripEnv(t)
	id := testenv.Start(t, env.nc, trip, messages.Context{}.MustSet(keyHotelMute, true))
	require.Equal(t, id, <-env.muted)
	held := testenv.Status(t, env.nc, id)
	require.Equal(t, 1, held.Current)
	cmd := messages.Command{V: 1, SagaID: id, Saga: trip, Step: "reserve_hotel", Action: messages.Execute, Attempt: held.Attempt, Seq: held.Seq}
	record := func(seq int) []byte {
		r := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Seq: seq, At: time.Now(),
			Output: messages.Context{}.MustSet("reserve_hotel_ref", "forged")}}
		data, err := json.Marshal(r)
		require.NoError(t, err)
		return data
	}
	js, err := jetstream.New(env.nc)
	require.NoError(t, err)
	forge := func(subject string, data []byte) {
		t.Helper()
		_, err := js.Publish(context.Background(), subject, data)
		require.NoError(t, err)
	}
	reply := func(mod func(*messages.Reply)) []byte {
		r := messages.ReplyTo(&cmd, messages.OK, "")
		mod(&r)
		data, err := json.Marshal(r)
		require.NoError(t, err)
		return data
	}
	forged := []struct {
		subject string
		data    []byte
	}{
		{messages.RecordSubject("airline"), logMessage(t, messages.RecordKey(id, "reserve_hotel"), record(cmd.Seq))},
		{messages.RecordSubject("hotel"), logMessage(t, messages.RecordKey(id, "reserve_hotel"), record(cmd.Seq+1))},
		{messages.ReplySubject(trip, "reserve_hotel"), reply(func(r *messages.Reply) { r.Seq++ })},
		{messages.ReplySubject(trip, "reserve_hotel"), reply(func(r *messages.Reply) { r.Action = messages.Compensate })},
		{messages.ReplySubject(trip, "reserve_hotel"), reply(func(r *messages.Reply) { r.Attempt++ })},
	}
	for i, f := range forged {
		forge(f.subject, f.data)
		require.Eventually(t, func() bool { return env.coord.Refused() == int64(i+1) }, 10*time.Second, 5*time.Millisecond,
			"answer %d on %s not refused", i, f.subject)
	}
	// The hotel's own record of a failure with no reason, which no reply
	// may say either, is dropped: once the hotel's forged record after it
	// is refused, it was read, and the saga did not roll back.
	noReason, err := json.Marshal(messages.Record{Execute: &messages.Result{Outcome: messages.Failed, Seq: cmd.Seq, At: time.Now()}})
	require.NoError(t, err)
	forge(messages.RecordSubject("hotel"), logMessage(t, messages.RecordKey(id, "reserve_hotel"), noReason))
	forge(forged[1].subject, forged[1].data)
	require.Eventually(t, func() bool { return env.coord.Refused() == int64(len(forged)+1) }, 10*time.Second, 5*time.Millisecond)
	x := testenv.Status(t, env.nc, id)
	require.Equal(t, saga.InProgress, x.Status)
	require.Equal(t, []string{"reserve_flight"}, x.Completed)
	require.Equal(t, 1, x.Current, "still on the hotel")
	require.True(t, x.Awaiting)
	require.Equal(t, int64(len(forged)+1), testenv.Summary(t, env.nc).Refused)
	require.Len(t, env.commands.commands(t, id), 2, "no command after the hotel's")
}

// TestHugeTickRefused sends ticks at the int64 edge: each is answered
// bad_request with the clock where it was, and the clock moves on after,
// also across a restart.
func TestHugeTickRefused(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx, stop := context.WithCancel(context.Background())
	done := runUntil(t, ctx, url, nil)
	id := testenv.Start(t, nc, flood.Elevation, messages.Context{}.MustSet(flood.KeyHousehold, "h-1"))
	for _, tick := range []int64{math.MaxInt64, math.MaxInt64 - 1, messages.MaxTickJump + 1} {
		var ack messages.TickAck
		request(t, nc, messages.TickSubject, mustJSON(t, messages.Tick{V: 1, Tick: tick}), &ack)
		require.NotNil(t, ack.Error, "tick %d", tick)
		require.Equal(t, messages.CodeBadRequest, ack.Error.Code)
		require.Zero(t, ack.Tick)
	}
	require.Equal(t, int64(messages.MaxTickJump), testenv.Tick(t, nc, messages.MaxTickJump).Tick)
	// A tick that does not decode is answered with the clock too.
	for _, data := range []string{"", "x", `{"v":1,"tick":"7"}`, `{"v":2,"tick":9}`} {
		var ack messages.TickAck
		request(t, nc, messages.TickSubject, []byte(data), &ack)
		require.NotNil(t, ack.Error, "tick %q", data)
		require.Equal(t, messages.CodeBadRequest, ack.Error.Code)
		require.Equal(t, int64(messages.MaxTickJump), ack.Tick, "tick %q", data)
	}
	stop()
	<-done
	runCoordinator(t, url, flood.Definitions(), nil)
	// The step in flight timed out at the jump (with no agent running, its
	// compensation waits); the clock goes on.
	testenv.WaitStatus(t, nc, id, saga.Compensating)
	require.Equal(t, int64(messages.MaxTickJump+1), testenv.Tick(t, nc, messages.MaxTickJump+1).Tick)
}

// TestAdmissionLimit runs a coordinator that admits two sagas in flight:
// a third start is answered busy at once and starts nothing, and once the
// two have finished a start is admitted again.
func TestAdmissionLimit(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions(), MaxActive: 2})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		require.NoError(t, <-done)
	})
	<-c.Ready()

	household := messages.Context{}.MustSet(flood.KeyHousehold, "h-1")
	a := testenv.Start(t, nc, flood.Subsidy, household)
	b := testenv.Start(t, nc, flood.Subsidy, household)
	for _, req := range []messages.StartRequest{{V: 1, Context: household}, {V: 1, SagaID: "chosen-id", Context: household}} {
		var resp messages.StartResponse
		request(t, nc, messages.StartSubject(flood.Subsidy), mustJSON(t, req), &resp)
		require.NotNil(t, resp.Error)
		require.Equal(t, messages.CodeBusy, resp.Error.Code, resp.Error.Message)
		require.Empty(t, resp.SagaID)
	}
	s := testenv.Summary(t, nc)
	require.Equal(t, 2, s.Active)

	testenv.SubsidyAgents(t, url)
	testenv.WaitStatus(t, nc, a, saga.Completed)
	testenv.WaitStatus(t, nc, b, saga.Completed)
	require.Eventually(t, func() bool {
		var resp messages.StartResponse
		request(t, nc, messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: "chosen-id", Context: household}), &resp)
		return resp.Error == nil && resp.SagaID == "chosen-id"
	}, 10*time.Second, 10*time.Millisecond, "a start is not admitted again")
	testenv.WaitStatus(t, nc, "chosen-id", saga.Completed)
}

// listAll reads the list of status in pages of limit, following the
// cursor, and returns the ids in order and the number of pages.
func listAll(t *testing.T, nc *nats.Conn, status string, limit int) ([]string, int) {
	t.Helper()
	var ids []string
	req := messages.ListRequest{V: 1, Status: status, Limit: limit}
	for pages := 1; ; pages++ {
		var resp messages.ListResponse
		request(t, nc, messages.ListSubject, mustJSON(t, req), &resp)
		require.Nil(t, resp.Error)
		for _, raw := range resp.Sagas {
			var x saga.Execution
			require.NoError(t, json.Unmarshal(raw, &x))
			ids = append(ids, x.ID)
		}
		if resp.Next == "" {
			return ids, pages
		}
		require.NotEmpty(t, resp.Sagas, "a page with a cursor and no saga")
		req.After = resp.Next
	}
}

// TestListPages reads the active sagas in pages: every saga once, oldest
// first, and limits and cursors outside the rules are bad requests.
func TestListPages(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, flood.Definitions())
	var want []string
	for i := range 7 {
		id := fmt.Sprintf("s-%d", 9-i) // ids out of order; the clock orders them
		var resp messages.StartResponse
		request(t, nc, messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: id}), &resp)
		require.Nil(t, resp.Error)
		want = append(want, id)
		testenv.Tick(t, nc, int64(i+1))
	}
	for _, tc := range []struct{ limit, pages int }{{1, 7}, {2, 4}, {3, 3}, {7, 1}, {0, 1}, {messages.MaxListPage, 1}} {
		ids, pages := listAll(t, nc, "", tc.limit)
		require.Equal(t, want, ids, "limit %d", tc.limit)
		require.Equal(t, tc.pages, pages, "limit %d", tc.limit)
	}
	for _, req := range []messages.ListRequest{
		{V: 1, Limit: messages.MaxListPage + 1},
		{V: 1, Limit: -1},
		{V: 1, After: "no-cursor"},
		{V: 1, After: "1:" + strings.Repeat("x", 100)},
		{V: 1, After: "x:s-1"},
	} {
		var resp messages.ListResponse
		request(t, nc, messages.ListSubject, mustJSON(t, req), &resp)
		require.NotNil(t, resp.Error, "%+v", req)
		require.Equal(t, messages.CodeBadRequest, resp.Error.Code)
	}
}

// TestAnswersFitThePayloadLimit stores large sagas, then serves them from
// a server restarted with a smaller payload limit: a list is cut into
// pages that fit, and a saga too large for any answer is answered with
// too_large, by list and by status, never with silence. A start whose
// context could outgrow a message is refused.
func TestAnswersFitThePayloadLimit(t *testing.T) {
	store := t.TempDir()
	boot := func(limit int32) (*server.Server, string) {
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: store,
			MaxPayload: limit, NoSigs: true, NoLog: true})
		require.NoError(t, err)
		go ns.Start()
		require.True(t, ns.ReadyForConnections(10*time.Second))
		return ns, ns.ClientURL()
	}
	start := func(nc *nats.Conn, id string, size int) *messages.WireError {
		t.Helper()
		ctx := messages.Context{}.MustSet("pad", strings.Repeat("p", size))
		var resp messages.StartResponse
		request(t, nc, messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: id, Context: ctx}), &resp)
		return resp.Error
	}

	ns, url := boot(256 << 10)
	nc := testenv.Connect(t, url)
	ctx, stop := context.WithCancel(context.Background())
	done := runUntil(t, ctx, url, nil)
	var want []string
	for i := range 4 {
		id := fmt.Sprintf("big-%d", i)
		require.Nil(t, start(nc, id, 25<<10))
		want = append(want, id)
	}
	require.Nil(t, start(nc, "huge", 50<<10))
	tooBig := start(nc, "too-big", 64<<10)
	require.NotNil(t, tooBig, "a start of more than a quarter of the payload limit")
	require.Equal(t, messages.CodeBadRequest, tooBig.Code, tooBig.Message)
	stop()
	<-done
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns, url = boot(40 << 10)
	t.Cleanup(ns.Shutdown)
	nc = testenv.Connect(t, url)
	runCoordinator(t, url, flood.Definitions(), nil)
	var ids []string
	req := messages.ListRequest{V: 1}
	for len(ids) < len(want) {
		var resp messages.ListResponse
		request(t, nc, messages.ListSubject, mustJSON(t, req), &resp)
		require.Nil(t, resp.Error)
		require.Len(t, resp.Sagas, 1, "one saga of 25 KiB a page under 40 KiB")
		var x saga.Execution
		require.NoError(t, json.Unmarshal(resp.Sagas[0], &x))
		ids = append(ids, x.ID)
		require.NotEmpty(t, resp.Next)
		req.After = resp.Next
	}
	require.Equal(t, want, ids)
	var list messages.ListResponse
	request(t, nc, messages.ListSubject, mustJSON(t, req), &list)
	require.NotNil(t, list.Error, "the next saga is too large")
	require.Equal(t, messages.CodeTooLarge, list.Error.Code, list.Error.Message)
	var status messages.StatusResponse
	request(t, nc, messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: "huge"}), &status)
	require.NotNil(t, status.Error)
	require.Equal(t, messages.CodeTooLarge, status.Error.Code, status.Error.Message)
	// An error whose message quotes a long field still fits: the copy
	// in micro's error header is clipped.
	field := strings.Repeat("f", 30<<10)
	msg, err := nc.Request(messages.RegisterSubject, []byte(`{"v":1,"definitions":{"roles":["clerk"],"sagas":[{"name":"job","subject":"job","`+
		field+`":1,"steps":[{"name":"a","role":"clerk"}]}]}}`), 10*time.Second)
	require.NoError(t, err, "answered")
	var reg messages.RegisterResponse
	require.NoError(t, json.Unmarshal(msg.Data, &reg))
	require.NotNil(t, reg.Error)
	require.Equal(t, messages.CodeBadRequest, reg.Error.Code)
	require.Contains(t, reg.Error.Message, field, "the body's message is whole")
	require.LessOrEqual(t, len(msg.Header.Get(micro.ErrorHeader)), 1024)
	// Still serving.
	require.Equal(t, 5, testenv.Summary(t, nc).Active)
}

// TestTickAnswerFits times out more sagas in one tick than an answer
// lists: the answer names the first MaxListPage and counts them all.
func TestTickAnswerFits(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, flood.Definitions())
	n := messages.MaxListPage + 5
	for range n {
		testenv.Start(t, nc, flood.Subsidy, nil)
	}
	ack := testenv.Tick(t, nc, 5)
	require.Len(t, ack.Expired, messages.MaxListPage)
	require.Equal(t, n, ack.ExpiredCount)
}

// logMessage is a message of a role's record log holding one record,
// value, under key.
func logMessage(t *testing.T, key string, value []byte) []byte {
	t.Helper()
	return kvlog.AppendMessage(nil, "forged", []kvlog.Entry{{Key: key, Value: value}})
}

// TestContextHeldToWhatAgentsRead: every command carries its saga's
// context, and an agent drops a command over messages.MaxPayload. A start
// whose context would make its commands too large for the agents is
// refused, though the request itself is within the limits; a saga whose
// step's output would grow its context past the bound is rolled back,
// not left waiting for commands that can never be delivered.
func TestContextHeldToWhatAgentsRead(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	runCoordinator(t, url, flood.Definitions(), nil)
	testenv.SubsidyAgents(t, url)
	sized := func(n int) messages.Context {
		c := messages.Context{}.MustSet(flood.KeyHousehold, "h-1").MustSet("pad", "")
		c = c.MustSet("pad", strings.Repeat("x", n-c.EncodedLen()))
		require.Equal(t, n, c.EncodedLen())
		return c
	}

	// Within the quarter of the server's payload limit, but its commands
	// would not fit an agent's: refused.
	req := mustJSON(t, messages.StartRequest{V: 1, Context: sized(messages.MaxContext + 1)})
	require.Less(t, len(req), messages.MaxPayload)
	var resp messages.StartResponse
	request(t, nc, messages.StartSubject(flood.Subsidy), req, &resp)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code)
	require.Contains(t, resp.Error.Message, "every command carries it")
	require.Zero(t, testenv.Summary(t, nc).Active)

	// With room for the steps' outputs: completes.
	done := testenv.Start(t, nc, flood.Subsidy, sized(messages.MaxContext-1000))
	testenv.WaitStatus(t, nc, done, saga.Completed)

	// At the bound: the household's step runs, its output would pass the
	// bound, and the saga is rolled back, its step undone.
	full := testenv.Start(t, nc, flood.Subsidy, sized(messages.MaxContext))
	x := testenv.WaitStatus(t, nc, full, saga.RolledBack)
	require.Contains(t, x.Error, "its output would make the context")
	require.Equal(t, []string{"household_applies"}, x.Compensated)
}

// TestAnswersNeverWrittenIntoNatsagasOwnSubjects sends requests, and
// micro's PING, INFO and STATS, asking their answers on the coordinator's
// lease key, its saga log and a command subject: none is answered there,
// so the lease stays the coordinator's, it stays active, and the streams
// hold nothing new.
func TestAnswersNeverWrittenIntoNatsagasOwnSubjects(t *testing.T) {
	_, url := testenv.Server(t)
	co := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)
	js, kv := sagaBucket(t, nc)
	lease, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	summary := []byte(`{}`)
	for _, reply := range []string{messages.BucketSubject(messages.LeaseKey), "natsaga.sagas", "saga.transfer.debit", "$JS.API.STREAM.DELETE.NATSAGA_COMMANDS"} {
		require.NoError(t, nc.PublishRequest(messages.SummarySubject, reply, summary))
	}
	// Answered in turn: once this summary is, the four were handled.
	testenv.Summary(t, nc)
	// Micro's discovery, which the coordinator answers too.
	for _, verb := range []micro.Verb{micro.PingVerb, micro.InfoVerb, micro.StatsVerb} {
		subject, err := micro.ControlSubject(verb, messages.CoordinatorService, "")
		require.NoError(t, err)
		require.NoError(t, nc.PublishRequest(subject, messages.BucketSubject(messages.LeaseKey), nil))
		_, err = nc.Request(subject, nil, 5*time.Second)
		require.NoError(t, err)
	}
	now, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	require.Equal(t, lease.Value(), now.Value(), "the lease holds the coordinator's holder, renewed")
	require.NoError(t, co.Health())
	_, err = js.Stream(context.Background(), messages.CommandStream)
	require.NoError(t, err, "the command stream is still there")
}

// TestLeaseKeyHoldingNoLeaseIsTakenBack writes, as a hostile answer could,
// a micro INFO into the lease key with no expiry: the coordinator, whose
// renewal then fails, takes the key back instead of standing by for ever.
func TestLeaseKeyHoldingNoLeaseIsTakenBack(t *testing.T) {
	_, url := testenv.Server(t)
	co := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)
	_, kv := sagaBucket(t, nc)
	_, err := kv.Put(context.Background(), messages.LeaseKey, []byte(`{"name":"natsaga-coordinator","id":"X","version":"3.0.0","type":"io.nats.micro.v1.info_response"}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		e, err := kv.Get(context.Background(), messages.LeaseKey)
		if err != nil {
			return false
		}
		var h struct {
			ID  string `json:"id"`
			PID int    `json:"pid"`
		}
		return json.Unmarshal(e.Value(), &h) == nil && h.PID > 0 && co.Health() == nil
	}, 30*time.Second, 10*time.Millisecond, "the coordinator took its lease back")
	require.Eventually(t, func() bool {
		_, err := nc.Request(messages.SummarySubject, []byte(`{}`), time.Second)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the coordinator serves again")
}

// TestBucketEntryThatIsNoSagaIsSaidSo writes, as only something other than
// a coordinator could, values that are not a saga's state under a saga's
// key: status and retry of that id are answered internal, saying which key
// to repair, instead of not at all or with the bytes; a start naming it is
// refused, not started under a key it could never write.
func TestBucketEntryThatIsNoSagaIsSaidSo(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)
	_, kv := sagaBucket(t, nc)
	for id, value := range map[string]string{"garbage": "not json", "wrong": `{"id":5}`, "other": `{"saga_id":"OTHER","status":"completed"}`} {
		_, err := kv.Put(context.Background(), messages.SagaKey(id), []byte(value))
		require.NoError(t, err)
		want := &messages.WireError{Code: messages.CodeInternal, Message: "saga " + id + ": its entry in the bucket is not a saga's state (an operator must repair or delete key s." + id + "): "}
		cut := func(e *messages.WireError) *messages.WireError {
			if e != nil && len(e.Message) > len(want.Message) {
				e.Message = e.Message[:len(want.Message)]
			}
			return e
		}

		var status messages.StatusResponse
		request(t, nc, messages.StatusSubject, []byte(fmt.Sprintf(`{"v":1,"saga_id":%q}`, id)), &status)
		require.Nil(t, status.Saga, id)
		require.Equal(t, want, cut(status.Error), id)

		var retry messages.RetryResponse
		request(t, nc, messages.RetrySubject, []byte(fmt.Sprintf(`{"v":1,"saga_id":%q}`, id)), &retry)
		require.Equal(t, want, cut(retry.Error), id)

		var start messages.StartResponse
		request(t, nc, messages.StartSubject(twoSteps.Subject), []byte(fmt.Sprintf(`{"v":1,"saga_id":%q,"context":{}}`, id)), &start)
		require.Equal(t, want, cut(start.Error), id)
		require.Equal(t, 0, testenv.Summary(t, nc).Active, "nothing started")
	}
	// Nor are they listed as the sagas they claim to be.
	var list messages.ListResponse
	request(t, nc, messages.ListSubject, []byte(`{"v":1,"status":"completed"}`), &list)
	require.Nil(t, list.Error)
	require.Empty(t, list.Sagas)
}

// TestLeaseOfAnEarlierTermIsTakenBack leaves in the lease key a lease of
// this very coordinator with another id, as a term that ended while its
// server was out of reach leaves its own: the term that follows takes it
// back at once, rather than stand by behind itself until it expires.
func TestLeaseOfAnEarlierTermIsTakenBack(t *testing.T) {
	_, url := testenv.Server(t)
	co := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)
	_, kv := sagaBucket(t, nc)
	e, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.Unmarshal(e.Value(), &h))
	h["id"] = "an-earlier-term"
	old, err := json.Marshal(h)
	require.NoError(t, err)
	// No TTL: only taking it back frees it.
	_, err = kv.Put(context.Background(), messages.LeaseKey, old)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		e, err := kv.Get(context.Background(), messages.LeaseKey)
		if err != nil {
			return false
		}
		var now map[string]any
		return json.Unmarshal(e.Value(), &now) == nil && now["id"] != "an-earlier-term" && now["copy"] == h["copy"] && co.Health() == nil
	}, 30*time.Second, 10*time.Millisecond, "the coordinator took its lease back")
	require.Eventually(t, func() bool {
		_, err := nc.Request(messages.SummarySubject, []byte(`{}`), time.Second)
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the coordinator serves again")
}

// TestLeaseWithoutTTLIsTakenOver writes, as only a hand with the bucket's
// write permission could, a lease of another coordinator with no TTL, so
// that it never expires: a coordinator started then stands by for a TTL of
// its own, finds that the lease has not moved and was written without a
// TTL, which no coordinator does, and takes it over.
func TestLeaseWithoutTTLIsTakenOver(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	stop := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}})
	stop()
	_, kv := sagaBucket(t, nc)
	forged := `{"id":"forged","copy":"coordinator-elsewhere","pid":4242,"host":"nowhere"}`
	_, err := kv.Put(t.Context(), messages.LeaseKey, []byte(forged))
	require.NoError(t, err)

	log := newLogSink()
	// Ready within runCoordinatorWith's wait, or it stood by behind a
	// lease that never expires.
	runCoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps},
		LeaseTTL: time.Second, Logger: slog.New(log)})
	require.Equal(t, 1, log.count(slog.LevelWarn, "the lease key holds a lease written without a TTL", ""))
	e, err := kv.Get(t.Context(), messages.LeaseKey)
	require.NoError(t, err)
	require.NotEqual(t, forged, string(e.Value()), "the lease is the coordinator's own")
}

// summaries records the last summary an Observer is told.
type summaries struct {
	mu   sync.Mutex
	last messages.Summary
}

func (o *summaries) Committed(_ []messages.Command, _ []messages.Event, sum messages.Summary) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.last = sum
}
func (o *summaries) Answered(messages.Command, messages.Outcome, int64, time.Duration) {}

func (o *summaries) get() messages.Summary {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.last
}

// TestCoordinatorThatLostItsLeaseReportsNoSagas: a coordinator whose
// lease another took stands by and tells its observer it holds no saga
// and no clock, as a standby does: its gauges kept the sagas and the tick
// of its term, counted twice beside the holder's.
func TestCoordinatorThatLostItsLeaseReportsNoSagas(t *testing.T) {
	_, url := testenv.Server(t)
	obs := &summaries{}
	co := testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}, Observer: obs})
	nc := testenv.Connect(t, url)
	testenv.Tick(t, nc, 5)
	testenv.Start(t, nc, twoSteps.Subject, nil) // no agent: it stays active
	require.Eventually(t, func() bool { s := obs.get(); return s.Active == 1 && s.Tick == 5 },
		10*time.Second, 10*time.Millisecond, "%+v", obs.get())

	_, kv := sagaBucket(t, nc)
	e, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	var h map[string]any
	require.NoError(t, json.Unmarshal(e.Value(), &h))
	h["id"], h["copy"] = "another-term", "another-coordinator"
	other, err := json.Marshal(h)
	require.NoError(t, err)
	// No TTL: the lease stays the other's for the rest of the test.
	_, err = kv.Put(context.Background(), messages.LeaseKey, other)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		s := obs.get()
		return !co.Active() && s.Active == 0 && s.Awaiting == 0 && s.Due == 0 && s.Tick == 0
	},
		30*time.Second, 10*time.Millisecond, "%+v", obs.get())
}

// TestCommandTakenByTheWrongRoleIsSentAgain runs an agent of role b that
// serves, by mistake, step x of role a, and so takes its command: its
// record is refused, and its reply to the command sent again. Once the right agents serve the steps, the command,
// sent again, reaches role a's agent and the saga completes, without a
// restart of the coordinator.
func TestCommandTakenByTheWrongRoleIsSentAgain(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "s", Subject: "s", Steps: []saga.Step{{Name: "x", Role: "a"}, {Name: "y", Role: "b"}}}
	coord := testenv.Coordinator(t, url, []saga.Definition{def})
	step := func(name string) agent.Step {
		return agent.Step{Saga: "s", Name: name, Handler: agent.Handler{
			Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}}
	}
	wrong, err := participant.New(testenv.Connect(t, url), participant.Options{Role: "b", Steps: []agent.Step{step("x"), step("y")},
		Logger: testenv.Logger(t)})
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	stopped := make(chan error, 1)
	go func() { stopped <- wrong.Run(ctx) }()
	require.Eventually(t, func() bool { return wrong.Health() == nil }, 10*time.Second, 5*time.Millisecond)

	nc := testenv.Connect(t, url)
	id := testenv.Start(t, nc, "s", messages.Context{})
	require.Eventually(t, func() bool { return coord.Refused() > 0 }, 10*time.Second, 5*time.Millisecond,
		"the wrong role's record of x is refused")
	// Sent again, the command goes to the wrong agent again, which
	// answers it from its record, with a reply naming its role: refused
	// too, and x is still not done.
	require.Eventually(t, func() bool { return coord.Refused() > 1 }, 10*time.Second, 5*time.Millisecond,
		"the wrong role's reply to the command sent again is refused")
	require.Empty(t, testenv.Status(t, nc, id).Completed)
	stop()
	require.NoError(t, <-stopped)
	// A right copy of b narrows the role's consumer to y, which lets a's
	// take x.
	right := testenv.Agent(t, url, participant.Options{Role: "b", Steps: []agent.Step{step("y")}})
	require.Eventually(t, func() bool { return right.Health() == nil }, 10*time.Second, 5*time.Millisecond)
	testenv.Agent(t, url, participant.Options{Role: "a", Steps: []agent.Step{step("x")}})
	x := testenv.WaitStatus(t, nc, id, saga.Completed)
	require.Equal(t, []string{"x", "y"}, x.Completed)
}

// TestRecoverySaysAClockFarAhead stores a saga whose last transition is
// at a tick no tick request reached: recovery takes the clock from it, as
// it must from a saga whose commit kept it while the clock's write was
// lost, and says so at warn, since every tick a driver sends is now
// ignored.
func TestRecoverySaysAClockFarAhead(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx, stop := context.WithCancel(context.Background())
	c := runUntil(t, ctx, url, slog.New(newLogSink()))
	good := testenv.Start(t, nc, flood.Elevation, messages.Context{}.MustSet(flood.KeyHousehold, "h-good"))
	require.Equal(t, int64(3), testenv.Tick(t, nc, 3).Tick)
	stop()
	<-c

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	x := loggedSaga(t, js, good)
	const far = int64(1) << 62
	x.ID = "far-ahead"
	x.History[len(x.History)-1].Tick = far
	_, err = js.Publish(t.Context(), messages.BucketSubject(messages.SagaKey(x.ID)), mustJSON(t, x))
	require.NoError(t, err)

	logs := newLogSink()
	runCoordinator(t, url, flood.Definitions(), slog.New(logs))
	said := "the clock recovered from the stored sagas is far ahead of the clock stored: a saga in the bucket or the saga log holds a tick no tick reached"
	require.Equal(t, 1, logs.countAttr(slog.LevelWarn, said, "recovered_clock", strconv.FormatInt(far, 10)))
	require.Equal(t, 1, logs.countAttr(slog.LevelWarn, said, "stored_clock", "3"))
}

// loggedSaga returns saga id as the saga log holds it last.
func loggedSaga(t *testing.T, js jetstream.JetStream, id string) saga.Execution {
	t.Helper()
	var x saga.Execution
	require.NoError(t, kvlog.Scan(t.Context(), js, messages.SagaLogStream, messages.SagaLogSubject, func(_ uint64, es []kvlog.Entry, err error) {
		require.NoError(t, err)
		for _, e := range es {
			if e.Key == id {
				require.NoError(t, json.Unmarshal(e.Value, &x))
			}
		}
	}))
	return x
}

// TestRecordsOfOneMessageSaidTenTimes: one message of records can hold
// tens of thousands of forged records; the coordinator refuses and counts
// each, says the first ten at warn and the others at debug, and then how
// many it did not say.
func TestRecordsOfOneMessageSaidTenTimes(t *testing.T) {
	_, url := testenv.Server(t)
	var logs testenv.SyncBuffer
	runCoordinator(t, url, flood.Definitions(), slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	testenv.SubsidyAgents(t, url)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var es []kvlog.Entry
	for i := range 30 {
		es = append(es, kvlog.Entry{Key: messages.RecordKey(fmt.Sprintf("k%d", i), "not_a_step"), Value: []byte(`{}`)})
	}
	_, err = js.Publish(t.Context(), messages.RecordSubject(flood.Household), kvlog.AppendMessage(nil, "forged", es))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return testenv.Summary(t, nc).Refused == 30 }, 10*time.Second, 5*time.Millisecond)
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "not_said=20") }, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, 10, strings.Count(logs.String(), `level=WARN msg="record refused`), logs.String())
	require.Equal(t, 20, strings.Count(logs.String(), `level=DEBUG msg="record refused`))
	require.Equal(t, 1, strings.Count(logs.String(), `msg="records of one message refused or dropped beyond those said (each said at debug)" role=household not_said=20`))
}

// TestStreamsCutByHandAreSaid: an operator who cuts the saga log's limits,
// or deletes the saga log of a system that ran, has lost the sagas they
// removed; a coordinator starting on such a server says so at error,
// naming the stream and the cut, and sets the stream back.
func TestStreamsCutByHandAreSaid(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	log := newLogSink()
	opts := coordinator.Options{Definitions: []saga.Definition{twoSteps}, Logger: slog.New(log)}
	stop := runUntilStopped(t, url, opts)
	testenv.Tick(t, nc, 3) // the bucket holds the clock
	stop()
	require.Zero(t, log.count(slog.LevelError, "", ""), "a new system's streams are not cut")
	js, _ := sagaBucket(t, nc)

	st, err := js.Stream(t.Context(), messages.SagaLogStream)
	require.NoError(t, err)
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 1
	_, err = js.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
	log = newLogSink()
	opts.Logger = slog.New(log)
	stop = runUntilStopped(t, url, opts)
	stop()
	require.Equal(t, 1, log.countAttr(slog.LevelError, "a stream's limits were cut by hand", "cut", "max_msgs 1, not unlimited"))
	require.Equal(t, 1, log.countAttr(slog.LevelError, "a stream's limits were cut by hand", "stream", messages.SagaLogStream))
	st, err = js.Stream(t.Context(), messages.SagaLogStream)
	require.NoError(t, err)
	require.Equal(t, int64(-1), st.CachedInfo().Config.MaxMsgs, "set back")

	require.NoError(t, js.DeleteStream(t.Context(), messages.SagaLogStream))
	log = newLogSink()
	opts.Logger = slog.New(log)
	stop = runUntilStopped(t, url, opts)
	testenv.Start(t, nc, twoSteps.Subject, messages.Context{}) // held in the saga log: no agent runs
	stop()
	require.Equal(t, 1, log.countAttr(slog.LevelError, "the saga log is not on the server, though sagas ran on it", "stream", messages.SagaLogStream))
	require.Zero(t, log.count(slog.LevelError, "a stream's limits were cut by hand", ""))

	require.NoError(t, js.DeleteKeyValue(t.Context(), messages.SagaBucket))
	log = newLogSink()
	opts.Logger = slog.New(log)
	stop = runUntilStopped(t, url, opts)
	stop()
	require.Equal(t, 1, log.countAttr(slog.LevelError, "the saga bucket is not on the server, though sagas ran on it", "bucket", messages.SagaBucket))
	require.Zero(t, log.count(slog.LevelError, "the saga log is not on the server", ""), "the saga log is there")
}

// TestRequestsDeliveredByAConsumerAreNotApplied: a user allowed to make a
// consumer on any stream may have it deliver what the stream holds to a
// request subject, a tick or a register, which the server does not check
// against the user's publish rights. Such a message carries a JetStream
// delivery's reply subject ($JS.ACK.…): the coordinator applies it not,
// nor any request whose answer it could not send, and says so.
func TestRequestsDeliveredByAConsumerAreNotApplied(t *testing.T) {
	_, url := testenv.Server(t)
	log := newLogSink()
	runCoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}, Logger: slog.New(log)})
	nc := testenv.Connect(t, url)
	testenv.DeliverFromStream(t, nc, messages.TickSubject, []byte(`{"v":1,"tick":500}`))
	require.Eventually(t, func() bool {
		return log.count(slog.LevelWarn, "request refused, not applied", "$JS.ACK.PLANTED.planter") == 1
	},
		10*time.Second, 5*time.Millisecond)
	require.Equal(t, int64(0), testenv.Summary(t, nc).Tick, "the delivered tick is not applied")

	// Nor is a request that asks its answer inside natsaga's subjects; the
	// tick a client asks for after it, on the same subscription, is.
	require.NoError(t, nc.PublishRequest(messages.TickSubject, messages.DataSubject("bank", "balance"), []byte(`{"v":1,"tick":7}`)))
	require.Equal(t, int64(1), testenv.Tick(t, nc, 1).Tick, "the clock is at the client's tick, not 7")
}
