package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// oversized is more than messages.MaxPayload and less than the server's
// max_payload of 1 MiB.
var oversized = strings.Repeat("x", messages.MaxPayload+10_000)

// padded returns v encoded with an extra field that takes it over
// messages.MaxPayload, so that only its size is wrong.
func padded(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	out := append(data[:len(data)-1], []byte(`,"pad":"`+oversized+`"}`)...)
	require.Greater(t, len(out), messages.MaxPayload)
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	require.NoError(t, err)
	return data
}

// request sends data on subject and decodes the answer into resp.
func request(t *testing.T, nc *nats.Conn, subject string, data []byte, resp any) {
	t.Helper()
	m, err := nc.Request(subject, data, 10*time.Second)
	require.NoError(t, err, subject)
	require.NoError(t, json.Unmarshal(m.Data, resp), "%s answered %s", subject, m.Data)
}

// commandOf returns the first command recorded on the wire for saga id,
// step and action.
func (w *wire) commandOf(t *testing.T, id, step string, action messages.Action) messages.Command {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.msgs {
		c, err := wirejson.DecodeCommand(m.Data)
		if err == nil && c.SagaID == id && c.Step == step && c.Action == action {
			return c
		}
	}
	t.Fatalf("no %s %s command for saga %s on the wire", action, step, id)
	return messages.Command{}
}

// pending returns the messages consumer has not yet disposed of: not
// delivered, or delivered and not acknowledged.
//
// The server acknowledges a publish before it tells the stream's consumers
// of the message, and a consumer's NumPending counts only what it was
// told: just after a publish, and for longer on a loaded machine, it can
// be 0 with nothing delivered. So a stored message of the consumer's
// subjects past what it delivered counts as pending too.
func pending(t *testing.T, js jetstream.JetStream, stream, consumer string) (uint64, int) {
	t.Helper()
	ctx := context.Background()
	cons, err := js.Consumer(ctx, stream, consumer)
	require.NoError(t, err)
	info, err := cons.Info(ctx)
	require.NoError(t, err)
	n := info.NumPending
	str, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" {
		filters = append(filters, info.Config.FilterSubject)
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	for _, f := range filters {
		last, err := str.GetLastMsgForSubject(ctx, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		if last.Sequence > info.Delivered.Stream {
			n = max(n, 1)
		}
	}
	return n, info.NumAckPending
}

// TestMalformedDuplicateLateAndStaleMessages sends bad messages on every
// subject the coordinator and the agents listen on, while a saga is in
// flight, and checks that each is answered with the right error or dropped
// with a logged error, and that no saga and no ledger is affected.
// ignoredReply is the coordinator's log message for a reply whose saga it
// does not hold.
const ignoredReply = "reply ignored: its saga is not active (it ended, or never started)"

func TestMalformedDuplicateLateAndStaleMessages(t *testing.T) {
	const (
		cost      = flood.DefaultSubsidyCost
		elevation = flood.DefaultElevationCost
		initial   = 3*cost + elevation
	)
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	commands := listen(t, nc, "saga.>")
	coordLog := newLogSink()
	runCoordinator(t, url, flood.Definitions(), slog.New(coordLog))
	agentLogs := map[string]*logSink{}
	agents := map[string]*participant.Agent{}
	for _, role := range []string{flood.Household, flood.Government, flood.Contractor} {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		agentLogs[role] = newLogSink()
		opts := participant.Options{Role: role, Steps: steps, AckWait: time.Minute, Logger: slog.New(agentLogs[role])}
		if role == flood.Government {
			opts.Init = flood.InitLedger(initial)
		}
		agents[role] = testenv.Agent(t, url, opts)
	}
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	// Before: one subsidy completed, one rolled back (its cost is beyond
	// the budget), and an elevation in flight, its contractor working until
	// tick 2.
	done := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-done"))
	testenv.WaitStatus(t, nc, done, saga.Completed)
	refused := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-refused").MustSet(flood.KeySubsidyCost, 100*initial))
	testenv.WaitStatus(t, nc, refused, saga.RolledBack)
	inflight := testenv.Start(t, nc, flood.Elevation, messages.Context{}.MustSet(flood.KeyHousehold, "h-elevate").MustSet(flood.KeyContractorTicks, 2))
	require.Eventually(t, func() bool {
		x := testenv.Status(t, nc, inflight)
		return x.Current == 2 && !x.Awaiting
	}, 10*time.Second, 5*time.Millisecond, "the contractor never answered working")
	x := testenv.Status(t, nc, inflight)
	require.Equal(t, 3, x.Seq)
	before := testenv.Summary(t, nc)
	require.Equal(t, messages.Summary{V: 1, Registered: 3, Active: 1, Completed: 1, RolledBack: 1, Answered: 9}, before)

	t.Run("requests", func(t *testing.T) {
		type answer struct {
			Error *messages.WireError `json:"error"`
		}
		for _, tc := range []struct {
			name, subject string
			data          []byte
			code          string
		}{
			{"start: not JSON", messages.StartSubject(flood.Subsidy), []byte("not json"), messages.CodeBadRequest},
			{"start: wrong types", messages.StartSubject(flood.Subsidy), []byte(`{"v":1,"context":["h-1"]}`), messages.CodeBadRequest},
			{"start: version as a string", messages.StartSubject(flood.Subsidy), []byte(`{"v":"1","context":{}}`), messages.CodeBadRequest},
			{"start: wrong version", messages.StartSubject(flood.Subsidy), []byte(`{"v":2,"context":{"household_id":"h-v2"}}`), messages.CodeBadRequest},
			{"start: no version", messages.StartSubject(flood.Subsidy), []byte(`{"context":{"household_id":"h-v0"}}`), messages.CodeBadRequest},
			{"start: saga id not a token", messages.StartSubject(flood.Subsidy), []byte(`{"v":1,"saga_id":"a.b","context":{}}`), messages.CodeBadRequest},
			{"start: unknown saga type", messages.StartSubject("no_such_saga"), []byte(`{"v":1,"context":{"household_id":"h-x"}}`), messages.CodeNotFound},
			{"start: oversized", messages.StartSubject(flood.Subsidy), padded(t, messages.StartRequest{V: 1, Context: messages.Context{}.MustSet(flood.KeyHousehold, "h-big")}), messages.CodeBadRequest},
			{"tick: not JSON", messages.TickSubject, []byte("{"), messages.CodeBadRequest},
			{"tick: wrong types", messages.TickSubject, []byte(`{"v":1,"tick":"50"}`), messages.CodeBadRequest},
			{"tick: wrong version", messages.TickSubject, []byte(`{"v":2,"tick":50}`), messages.CodeBadRequest},
			{"tick: oversized", messages.TickSubject, padded(t, messages.Tick{V: 1, Tick: 50}), messages.CodeBadRequest},
			{"status: not JSON", messages.StatusSubject, []byte("status please"), messages.CodeBadRequest},
			{"status: wrong types", messages.StatusSubject, []byte(`{"v":1,"saga_id":42}`), messages.CodeBadRequest},
			{"status: wrong version", messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 7, SagaID: inflight}), messages.CodeBadRequest},
			{"status: unknown saga", messages.StatusSubject, []byte(`{"v":1,"saga_id":"no-such-saga"}`), messages.CodeNotFound},
			{"status: saga id not a token", messages.StatusSubject, []byte(`{"v":1,"saga_id":"saga.>"}`), messages.CodeBadRequest},
			{"status: no saga id", messages.StatusSubject, []byte(`{"v":1}`), messages.CodeBadRequest},
			{"status: oversized", messages.StatusSubject, padded(t, messages.StatusRequest{V: 1, SagaID: inflight}), messages.CodeBadRequest},
			{"list: not JSON", messages.ListSubject, []byte("[]"), messages.CodeBadRequest},
			{"list: wrong types", messages.ListSubject, []byte(`{"v":1,"limit":"ten"}`), messages.CodeBadRequest},
			{"list: wrong version", messages.ListSubject, []byte(`{"v":0}`), messages.CodeBadRequest},
			{"list: unknown status", messages.ListSubject, []byte(`{"v":1,"status":"lost"}`), messages.CodeBadRequest},
			{"list: oversized", messages.ListSubject, padded(t, messages.ListRequest{V: 1}), messages.CodeBadRequest},
			{"retry: not JSON", messages.RetrySubject, []byte("retry!"), messages.CodeBadRequest},
			{"retry: wrong types", messages.RetrySubject, []byte(`{"v":1,"saga_id":["x"]}`), messages.CodeBadRequest},
			{"retry: wrong version", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 2, SagaID: refused}), messages.CodeBadRequest},
			{"abort: not JSON", messages.AbortSubject, []byte("abort!"), messages.CodeBadRequest},
			{"abort: wrong types", messages.AbortSubject, []byte(`{"v":1,"saga_id":"x","reason":7}`), messages.CodeBadRequest},
			{"abort: wrong version", messages.AbortSubject, mustJSON(t, messages.AbortRequest{V: 2, SagaID: refused}), messages.CodeBadRequest},
			{"retry: unknown saga", messages.RetrySubject, []byte(`{"v":1,"saga_id":"no-such-saga"}`), messages.CodeNotFound},
			{"retry: saga id not a token", messages.RetrySubject, []byte(`{"v":1,"saga_id":"a b"}`), messages.CodeBadRequest},
			{"retry: an active saga", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 1, SagaID: inflight}), messages.CodeConflict},
			{"retry: a completed saga", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 1, SagaID: done}), messages.CodeConflict},
			{"retry: a rolled back saga", messages.RetrySubject, mustJSON(t, messages.RetryRequest{V: 1, SagaID: refused}), messages.CodeConflict},
			{"retry: oversized", messages.RetrySubject, padded(t, messages.RetryRequest{V: 1, SagaID: refused}), messages.CodeBadRequest},
			{"register: not JSON", messages.RegisterSubject, []byte("register!"), messages.CodeBadRequest},
			{"register: wrong version", messages.RegisterSubject, []byte(`{"v":2,"definitions":[]}`), messages.CodeBadRequest},
			{"starts: not JSON", messages.StartBatchSubject, []byte("starts!"), messages.CodeBadRequest},
			// JSON, but not UTF-8: a raw context value would keep the bytes.
			{"start: not UTF-8", messages.StartSubject(flood.Subsidy), []byte("{\"v\":1,\"context\":{\"household_id\":\"h-\xff\"}}"), messages.CodeBadRequest},
			{"starts: not UTF-8", messages.StartBatchSubject, []byte("{\"v\":1,\"starts\":[{\"saga\":\"subsidy\",\"context\":{\"a\":\"\xff\"}}]}"), messages.CodeBadRequest},
			{"tick: not UTF-8", messages.TickSubject, []byte("{\"v\":1,\"tick\":0,\"x\":\"\xc3\"}"), messages.CodeBadRequest},
		} {
			t.Run(tc.name, func(t *testing.T) {
				m, err := nc.Request(tc.subject, tc.data, 10*time.Second)
				require.NoError(t, err)
				var a answer
				require.NoError(t, json.Unmarshal(m.Data, &a), "%s", m.Data)
				require.NotNil(t, a.Error, "no error answered")
				require.Equal(t, tc.code, a.Error.Code, a.Error.Message)
				require.NotEmpty(t, a.Error.Message)
				// And in NATS micro's headers, on every endpoint.
				require.Equal(t, messages.StatusCode(tc.code), m.Header.Get(micro.ErrorCodeHeader))
				require.Equal(t, a.Error.Message, m.Header.Get(micro.ErrorHeader))
			})
		}

		// Duplicate starts return the saga already there and start nothing.
		var resp messages.StartResponse
		request(t, nc, messages.StartSubject(flood.Elevation), mustJSON(t, messages.StartRequest{V: 1, SagaID: inflight,
			Context: messages.Context{}.MustSet(flood.KeyHousehold, "h-other")}), &resp)
		require.Equal(t, messages.StartResponse{V: 1, SagaID: inflight, Status: string(saga.InProgress), Existed: true}, resp)
		resp = messages.StartResponse{}
		request(t, nc, messages.StartSubject(flood.Subsidy), mustJSON(t, messages.StartRequest{V: 1, SagaID: done}), &resp)
		require.Equal(t, messages.StartResponse{V: 1, SagaID: done, Status: string(saga.Completed), Existed: true}, resp,
			"found in the bucket")

		// Late and repeated ticks change nothing.
		for _, tick := range []int64{0, -5, 0} {
			var ack messages.TickAck
			request(t, nc, messages.TickSubject, mustJSON(t, messages.Tick{V: 1, Tick: tick}), &ack)
			require.Nil(t, ack.Error)
			require.Zero(t, ack.Tick)
			require.Empty(t, ack.Expired)
		}

		// The summary takes no input: it answers whatever it is sent.
		for _, data := range [][]byte{nil, []byte("not json"), []byte(`{"v":9}`), []byte(oversized)} {
			var s messages.Summary
			request(t, nc, messages.SummarySubject, data, &s)
			require.Equal(t, before, s)
		}

		// So does every agent's statistics subject.
		inbox := nats.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		require.NoError(t, err)
		defer sub.Unsubscribe()
		require.NoError(t, nc.PublishRequest(messages.AgentStatsSubject, inbox, []byte("not json")))
		roles := map[string]bool{}
		for range agents {
			m, err := sub.NextMsg(10 * time.Second)
			require.NoError(t, err)
			var st messages.AgentStats
			require.NoError(t, json.Unmarshal(m.Data, &st))
			roles[st.Role] = true
		}
		require.Len(t, roles, 3)

		// The agents listen to ticks too, and ignored every bad one: the
		// first said, the others counted for the next said, a minute on.
		for role, log := range agentLogs {
			require.Eventually(t, func() bool { return log.count(slog.LevelWarn, "bad tick", "") == 1 },
				10*time.Second, 5*time.Millisecond, "%s: bad ticks logged", role)
		}
	})

	// publish stores data on subject in its stream, as anyone may.
	publish := func(t *testing.T, subject string, data []byte) {
		t.Helper()
		_, err := js.Publish(context.Background(), subject, data)
		require.NoError(t, err, subject)
	}

	t.Run("replies", func(t *testing.T) {
		// A reply for the in-flight saga's outstanding command, to vary.
		current := messages.Reply{V: 1, SagaID: inflight, Saga: flood.Elevation, Step: "contractor_elevates",
			Action: messages.Execute, Attempt: 1, Seq: 3, Outcome: messages.OK, Output: messages.Context{}.MustSet("forged", true)}
		vary := func(f func(r *messages.Reply)) []byte {
			r := current
			f(&r)
			return mustJSON(t, r)
		}
		contractorReplies := messages.ReplySubject(flood.Elevation, "contractor_elevates")
		malformed := []struct{ subject, data, err string }{
			{contractorReplies, "not json", "invalid literal"},
			{contractorReplies, `{"v":1,"saga_id":5,"saga":"elevation"}`, "number for a string"},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.V = 2 })), "version 2,"},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.V = 0 })), "version 0,"},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.Outcome = "maybe" })), `outcome "maybe"`},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.Outcome, r.Output = messages.Failed, nil })), "needs a reason"},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.Seq = 0 })), "seq 0 must be positive"},
			{contractorReplies, string(vary(func(r *messages.Reply) { r.SagaID = "" })), `saga_id ""`},
			{contractorReplies, string(padded(t, current)), "too large"},
			{contractorReplies, strings.Replace(string(mustJSON(t, current)), `"forged":true`, "\"forged\":\"\xff\"", 1), "not valid UTF-8"},
		}
		for _, m := range malformed {
			publish(t, m.subject, []byte(m.data))
		}
		// A well-formed reply on another step's subject.
		publish(t, messages.ReplySubject(flood.Subsidy, "household_applies"), mustJSON(t, current))
		// Unknown saga, step and saga type.
		publish(t, contractorReplies, vary(func(r *messages.Reply) { r.SagaID = "no-such-saga" }))
		publish(t, messages.ReplySubject(flood.Elevation, "no_such_step"), vary(func(r *messages.Reply) { r.Step = "no_such_step" }))
		publish(t, messages.ReplySubject("no_such_saga", "contractor_elevates"), vary(func(r *messages.Reply) { r.Saga = "no_such_saga" }))
		// Stale: an earlier sequence, another attempt, the other action,
		// an earlier step (a failure, which would roll the saga back if
		// it counted), and a second "working".
		publish(t, contractorReplies, vary(func(r *messages.Reply) { r.Seq = 2 }))
		publish(t, contractorReplies, vary(func(r *messages.Reply) { r.Attempt = 2 }))
		publish(t, contractorReplies, vary(func(r *messages.Reply) { r.Action = messages.Compensate }))
		publish(t, messages.ReplySubject(flood.Elevation, "government_approves"), vary(func(r *messages.Reply) {
			r.Step, r.Seq, r.Outcome, r.Reason, r.Output = "government_approves", 2, messages.Failed, "late refusal", nil
		}))
		publish(t, contractorReplies, vary(func(r *messages.Reply) { r.Outcome, r.Output = messages.Working, nil }))
		// Late: answers to every command of the finished sagas. (Their
		// agents answered through their barrier records.)
		commands.mu.Lock()
		var late []messages.Reply
		for _, m := range commands.msgs {
			if c, err := wirejson.DecodeCommand(m.Data); err == nil && (c.SagaID == done || c.SagaID == refused) {
				late = append(late, messages.ReplyTo(&c, messages.OK, ""))
			}
		}
		commands.mu.Unlock()
		require.Len(t, late, 3+3)
		for _, r := range late {
			publish(t, r.Subject(), mustJSON(t, r))
		}
		// A message of the contractor's records that is not one, and a
		// record whose key names no branch.
		publish(t, messages.RecordSubject(flood.Contractor), []byte(`{"entries":"x"}`))
		publish(t, messages.RecordSubject(flood.Contractor), logMessage(t, "no-branch", []byte(`{}`)))

		require.Eventually(t, func() bool {
			n, acks := pending(t, js, messages.ReplyStream, messages.ReplyConsumer)
			return n == 0 && acks == 0
		}, 10*time.Second, 5*time.Millisecond, "the coordinator left replies undisposed")
		// ignored counts the lines that said the late reply for id was
		// ignored, at either level.
		ignored := func(id string) int {
			return coordLog.countAttr(slog.LevelDebug, ignoredReply, "saga_id", id)
		}
		for _, m := range malformed {
			require.Equal(t, 1, coordLog.count(slog.LevelError, "dropping malformed reply", m.err), "%.80s", m.data)
		}
		require.Equal(t, len(malformed), coordLog.count(slog.LevelError, "dropping malformed reply", ""))
		require.Equal(t, 1, coordLog.count(slog.LevelError, "dropping reply on the wrong subject", ""))
		require.Equal(t, 1, ignored("no-such-saga"))
		// A reply naming a step its saga does not have, or the seq of the
		// command in flight with another action or a later attempt, is
		// refused as forged; one for an earlier command is only stale.
		require.Equal(t, 4, coordLog.count(slog.LevelWarn, "reply refused", ""))
		// Each is logged with the role its subject belongs to: none owns
		// the subjects of the unknown step and saga type.
		require.Equal(t, 2, coordLog.countAttr(slog.LevelWarn, "reply refused", "from_role", flood.Contractor))
		require.Equal(t, 2, coordLog.countAttr(slog.LevelWarn, "reply refused", "from_role", ""))
		require.Equal(t, 0, coordLog.count(slog.LevelWarn, "reply rejected", "bad reply"))
		require.Equal(t, 3, coordLog.count(slog.LevelDebug, "stale reply ignored", ""))
		require.Eventually(t, func() bool {
			n, acks := pending(t, js, messages.RecordStream(flood.Contractor), messages.RecordConsumer)
			return n == 0 && acks == 0
		}, 10*time.Second, 5*time.Millisecond, "the coordinator left records undisposed")
		require.Equal(t, 1, coordLog.count(slog.LevelError, "dropping a malformed message of records", ""))
		// The contractor, which reads its log too, skips it in its own log.
		require.Eventually(t, func() bool {
			return agentLogs[flood.Contractor].count(slog.LevelError, "skipping a log message that does not decode", "") == 1
		}, 10*time.Second, 5*time.Millisecond, "the contractor did not log the message its record log skipped")
		require.Equal(t, 1, coordLog.count(slog.LevelError, "dropping a record whose key names no branch", ""))
		// Finished sagas live in the bucket only: their late replies are
		// for sagas the coordinator does not hold.
		for _, id := range []string{done, refused} {
			require.Positive(t, ignored(id))
		}
		// Said at info once a minute, the others at debug: after a
		// restart there may be thousands.
		require.Equal(t, 1, coordLog.count(slog.LevelInfo, ignoredReply, ""))
		require.Greater(t, coordLog.count(slog.LevelDebug, ignoredReply, ""), 3)
		x := testenv.Status(t, nc, inflight)
		require.Equal(t, saga.InProgress, x.Status)
		require.Equal(t, 3, x.Seq)
		require.NotContains(t, x.Context, "forged")
	})

	t.Run("commands", func(t *testing.T) {
		applies := commands.commandOf(t, done, "household_applies", messages.Execute)
		appliesSubject := messages.ExecuteSubject(flood.Subsidy, "household_applies")
		vary := func(f func(c *messages.Command)) []byte {
			c := applies
			f(&c)
			return mustJSON(t, c)
		}
		// Malformed commands for the household.
		for _, data := range [][]byte{
			[]byte("not json"),
			[]byte(`{"v":1,"saga_id":"s","saga":"subsidy","step":"household_applies","action":"execute","attempt":"1","seq":1}`),
			vary(func(c *messages.Command) { c.V = 2 }),
			vary(func(c *messages.Command) { c.Attempt = 0 }),
			vary(func(c *messages.Command) { c.Action = "undo" }),
			padded(t, applies),
			[]byte(strings.Replace(string(mustJSON(t, applies)), `"household_id":"`, "\"household_id\":\"\xff", 1)),
		} {
			publish(t, appliesSubject, data)
		}
		// A well-formed command on a subject other than its own.
		publish(t, appliesSubject, vary(func(c *messages.Command) { c.Step = "household_files" }))
		// Malformed commands for the government.
		deduct := commands.commandOf(t, done, "budget_deducted", messages.Execute)
		deductSubject := messages.ExecuteSubject(flood.Subsidy, "budget_deducted")
		publish(t, deductSubject, []byte(`{"v":1`))
		bad := deduct
		bad.V = 3
		publish(t, deductSubject, mustJSON(t, bad))
		// Duplicates and late commands: the finished sagas' commands again.
		// The barrier answers each from its record, and refuses the
		// household's execute of the saga already compensated. A copy
		// decides a command on its record log as far as it has read it:
		// one that had not yet read the compensation would answer the
		// execute as a duplicate of its own earlier result (no effect
		// either way). Reading the branch brings the log to its end.
		for _, id := range []string{done, refused} {
			rec, _, err := agents[flood.Household].Store().Branch(context.Background(), id, "household_applies")
			require.NoError(t, err)
			require.Equal(t, id == refused, rec.Compensate.Done(), "%s: the household's compensation recorded", id)
		}
		publish(t, appliesSubject, mustJSON(t, applies))
		publish(t, deductSubject, mustJSON(t, deduct))
		publish(t, messages.ExecuteSubject(flood.Subsidy, "government_evaluates"),
			mustJSON(t, commands.commandOf(t, refused, "government_evaluates", messages.Execute)))
		publish(t, appliesSubject, mustJSON(t, commands.commandOf(t, refused, "household_applies", messages.Execute)))
		publish(t, messages.CompensateSubject(flood.Subsidy, "household_applies"),
			mustJSON(t, commands.commandOf(t, refused, "household_applies", messages.Compensate)))
		// A command for a saga no coordinator holds. Agents trust their
		// command stream (permissions keep others from writing to it), so
		// the household records it; the coordinator ignores the record,
		// and no saga or ledger changes.
		publish(t, appliesSubject, vary(func(c *messages.Command) {
			c.SagaID = "ghost"
			c.Context = messages.Context{}.MustSet(flood.KeyHousehold, "h-ghost")
		}))
		// Subjects of no known step: an unknown saga type and an unknown
		// step. The command stream does not take them: the publish is
		// refused and nothing is kept.
		for _, subject := range []string{messages.ExecuteSubject("no_such_saga", "household_applies"), messages.ExecuteSubject(flood.Subsidy, "no_such_step")} {
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			_, err := js.Publish(ctx, subject, vary(func(*messages.Command) {}))
			cancel()
			require.Error(t, err, "%s: no stream should acknowledge it", subject)
		}

		for _, role := range []string{flood.Household, flood.Government} {
			require.Eventually(t, func() bool {
				n, acks := pending(t, js, messages.CommandStream, messages.CommandConsumer(role))
				return n == 0 && acks == 0
			}, 10*time.Second, 5*time.Millisecond, "the %s agent left commands undisposed", role)
		}
		hh, gov := agents[flood.Household].Stats(), agents[flood.Government].Stats()
		require.Equal(t, int64(8), hh.Rejected)
		require.Equal(t, int64(2), gov.Rejected)
		require.Equal(t, 7, agentLogs[flood.Household].count(slog.LevelError, "dropping malformed command", ""))
		require.Equal(t, 1, agentLogs[flood.Household].count(slog.LevelError, "dropping malformed command", "not valid UTF-8"))
		require.Equal(t, 1, agentLogs[flood.Household].count(slog.LevelError, "dropping command on another step's subject", ""))
		require.Equal(t, 2, agentLogs[flood.Government].count(slog.LevelError, "dropping malformed command", ""))
		// A command whose store was unavailable for a moment (a slow
		// server under a loaded test run) is delivered again, and may come
		// back as a duplicate of what it recorded before the failure.
		retried := agentLogs[flood.Household].count(slog.LevelWarn, "store unavailable", "")
		if retried > 0 {
			t.Logf("household: %d commands delivered again after the store was unavailable", retried)
		}
		if hh.Duplicates != 2 {
			agentLogs[flood.Household].dump(t, slog.LevelInfo)
		}
		require.GreaterOrEqual(t, hh.Duplicates, int64(2), "the household's execute and compensation again")
		require.LessOrEqual(t, hh.Duplicates, int64(2+retried), "the household's execute and compensation again, and no other")
		require.Equal(t, int64(1), hh.Refused, "the household's execute after its compensation")
		require.Equal(t, int64(2), gov.Duplicates, "the deduction and the refused evaluation again")
		require.Zero(t, gov.Refused)
		st, err := js.Stream(context.Background(), messages.CommandStream)
		require.NoError(t, err)
		for _, subject := range []string{messages.ExecuteSubject("no_such_saga", "household_applies"), messages.ExecuteSubject(flood.Subsidy, "no_such_step")} {
			_, err := st.GetLastMsgForSubject(context.Background(), subject)
			require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "%s was kept", subject)
		}
		require.Eventually(t, func() bool {
			rec, _, err := agents[flood.Household].Store().Branch(context.Background(), "ghost", "household_applies")
			require.NoError(t, err)
			return rec.Execute.Done()
		}, 10*time.Second, 5*time.Millisecond, "the ghost's command was never recorded")
		require.Eventually(t, func() bool {
			n, acks := pending(t, js, messages.RecordStream(flood.Household), messages.RecordConsumer)
			return n == 0 && acks == 0
		}, 10*time.Second, 5*time.Millisecond, "the coordinator left the household's records undisposed")
	})

	// After all that: the in-flight saga finishes when its time comes, a new
	// saga runs, and every count and every ledger is exact.
	// Four replies refused as forged, and the one on the wrong subject.
	before.Refused = 5
	require.Equal(t, before, testenv.Summary(t, nc))
	require.Empty(t, testenv.Tick(t, nc, 1).Expired)
	require.Empty(t, testenv.Tick(t, nc, 2).Expired)
	x = testenv.WaitStatus(t, nc, inflight, saga.Completed)
	require.Equal(t, []string{"household_requests", "government_approves", "contractor_elevates"}, x.Completed)
	grant, err := x.Context.Int64(flood.KeyGrant)
	require.NoError(t, err)
	require.Equal(t, elevation, grant)
	require.NotContains(t, x.Context, "forged")
	after := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-after"))
	testenv.WaitStatus(t, nc, after, saga.Completed)
	require.Equal(t, messages.Summary{V: 1, Tick: 2, Registered: 3, Completed: 3, RolledBack: 1, Refused: 5, Answered: 13}, testenv.Summary(t, nc))

	var ledger flood.Ledger
	_, err = agents[flood.Government].Store().Get(context.Background(), flood.LedgerKey, &ledger)
	require.NoError(t, err)
	require.Equal(t, flood.Ledger{Initial: initial, Balance: initial - 2*cost - elevation,
		Spent: map[string]int64{flood.Subsidy: 2 * cost, flood.Elevation: elevation}}, ledger)
	for id, want := range map[string]string{done: "pending", refused: "cancelled", after: "pending"} {
		x := testenv.Status(t, nc, id)
		household, err := x.Context.String(flood.KeyHousehold)
		require.NoError(t, err)
		var house flood.House
		_, err = agents[flood.Household].Store().Get(context.Background(), flood.HouseKey(household), &house)
		require.NoError(t, err)
		require.Equal(t, map[string]string{id: want}, house.Applications, household)
	}
}

// TestBadRequestsSaidOnce floods the coordinator with requests anyone
// allowed may send, each bad: each is answered with its error, and the
// coordinator's log says the first of each kind and stays quiet about the
// others for a minute.
func TestBadRequestsSaidOnce(t *testing.T) {
	_, url := testenv.Server(t)
	var logs testenv.SyncBuffer
	runCoordinator(t, url, flood.Definitions(), slog.New(slog.NewTextHandler(&logs, nil)))
	nc := testenv.Connect(t, url)
	bad := []struct{ subject, data, msg string }{
		{messages.TickSubject, "not a tick", "bad tick"},
		{messages.TickSubject, `{"v":1,"tick":999999999999}`, "tick refused"},
		{messages.StartSubject(flood.Subsidy), "not a start", "bad start request"},
		{messages.StartBatchSubject, "not a batch", "bad start batch"},
		{messages.StartBatchSubject, `{"v":1,"starts":[{"saga":"nope"}]}`, "start refused"},
		{messages.RegisterSubject, `{"v":1,"definitions":{"roles":["r"],"sagas":[{"name":"subsidy_application","subject":"subsidy","version":1,"steps":[{"name":"x","role":"r"}]}]}}`, "register refused"},
	}
	// A registration that does not decode is said too, as the first of
	// its kind (the refused definition below is then not said again).
	msg, err := nc.Request(messages.RegisterSubject, []byte("not a registration"), 10*time.Second)
	require.NoError(t, err)
	require.Contains(t, string(msg.Data), `"error"`)
	require.Contains(t, logs.String(), `msg="register refused"`)
	for _, b := range bad {
		for range 50 {
			msg, err := nc.Request(b.subject, []byte(b.data), 10*time.Second)
			require.NoError(t, err, b.msg)
			require.Contains(t, string(msg.Data), `"error"`, "%s: answered with its error", b.msg)
		}
	}
	for _, b := range bad {
		require.Equal(t, 1, strings.Count(logs.String(), `msg="`+b.msg+`"`), "%s\n%s", b.msg, logs.String())
	}
}

// TestMalformedAnswerToACompensation: an answer the coordinator cannot
// take (a reply over an eighth of the payload limit, or that fails its
// checks; a record of a failure with no reason) to a compensation, which has no timeout, is that
// compensation's error: it is sent again, then the saga fails naming why,
// where it waited for ever before. The test is the agents: it answers on
// the wire, as an agent in another language does.
func TestMalformedAnswerToACompensation(t *testing.T) {
	for _, tc := range []struct {
		name, says string
		answer     func(t *testing.T, cmd messages.Command) (subject string, data []byte)
	}{
		{"a reply too large", "answer of", func(t *testing.T, cmd messages.Command) (string, []byte) {
			// Over an eighth of 1 MiB, within what a reply may be.
			r := messages.ReplyTo(&cmd, messages.OK, "")
			r.Output = messages.Context{}.MustSet("pad", strings.Repeat("x", 140_000))
			return r.Subject(), mustJSON(t, r)
		}},
		{"a reply of an outcome no agent gives", `reply outcome "maybe"`, func(t *testing.T, cmd messages.Command) (string, []byte) {
			r := messages.ReplyTo(&cmd, "maybe", "")
			return r.Subject(), mustJSON(t, r)
		}},
		{"a reply of a failure with no reason", "a failed reply needs a reason", func(t *testing.T, cmd messages.Command) (string, []byte) {
			r := messages.ReplyTo(&cmd, messages.Failed, "")
			return r.Subject(), mustJSON(t, r)
		}},
		{"a record of a failure with no reason", "a failed result needs a reason", func(t *testing.T, cmd messages.Command) (string, []byte) {
			r := messages.Record{Compensate: &messages.Result{Outcome: messages.Failed, Seq: cmd.Seq, At: time.Now()}}
			return messages.RecordSubject("first"), logMessage(t, messages.RecordKey(cmd.SagaID, cmd.Step), mustJSON(t, r))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := testenv.Server(t)
			nc := testenv.Connect(t, url)
			twice := saga.RetryPolicy{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond}
			testenv.Coordinator(t, url, []saga.Definition{{Name: "pair", Subject: "pair", CompensationRetry: twice, Steps: []saga.Step{
				{Name: "one", Role: "first", TimeoutTicks: 100},
				{Name: "two", Role: "second", TimeoutTicks: 100},
			}}})
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			// The record stream its agents would make.
			_, err = js.CreateStream(context.Background(), participant.RecordStreamConfig("first", 1))
			require.NoError(t, err)
			commands := make(chan messages.Command, 16)
			sub, err := nc.Subscribe("saga.pair.>", func(m *nats.Msg) {
				cmd, err := wirejson.DecodeCommand(m.Data)
				require.NoError(t, err)
				commands <- cmd
			})
			require.NoError(t, err)
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			next := func(step string, action messages.Action, attempt int) messages.Command {
				t.Helper()
				select {
				case cmd := <-commands:
					require.Equal(t, []any{step, action, attempt}, []any{cmd.Step, cmd.Action, cmd.Attempt})
					return cmd
				case <-time.After(10 * time.Second):
					t.Fatalf("no %s of %s, attempt %d", action, step, attempt)
				}
				return messages.Command{}
			}
			answer := func(subject string, data []byte) {
				t.Helper()
				_, err := js.Publish(context.Background(), subject, data)
				require.NoError(t, err)
			}
			reply := func(cmd messages.Command, o messages.Outcome, reason string) {
				t.Helper()
				r := messages.ReplyTo(&cmd, o, reason)
				answer(r.Subject(), mustJSON(t, r))
			}

			id := testenv.Start(t, nc, "pair", nil)
			reply(next("one", messages.Execute, 1), messages.OK, "")
			reply(next("two", messages.Execute, 1), messages.Failed, "no")
			answer(tc.answer(t, next("one", messages.Compensate, 1)))
			answer(tc.answer(t, next("one", messages.Compensate, 2)))
			x := testenv.WaitStatus(t, nc, id, saga.Failed)
			require.Contains(t, x.Error, "its agent's answer was malformed")
			require.Contains(t, x.Error, tc.says)
			require.Empty(t, commands, "nothing sent after the second attempt")
		})
	}
}
