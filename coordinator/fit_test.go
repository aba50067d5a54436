package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestLargestSagaFitsASmallPayloadLimit runs, under a payload limit of
// 64 KiB, a saga as large as every bound allows at once: 61 steps of
// 64-character names, a start context near its quarter of the limit with
// characters JSON escapes six-fold, two outputs of 7,800 bytes and a
// failure whose 1,024-byte reason is escaped six-fold too. It rolls back
// and is stored, and the coordinator's term never ends for it (one such
// saga used to end every term, at every recovery).
func TestLargestSagaFitsASmallPayloadLimit(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: 64 << 10, NoSigs: true, NoLog: true})
	require.NoError(t, err)
	go ns.Start()
	t.Cleanup(ns.Shutdown)
	require.True(t, ns.ReadyForConnections(10*time.Second))
	url := ns.ClientURL()

	def := saga.Definition{Name: "big", Subject: "big"}
	for i := range 61 {
		name := fmt.Sprintf("s%03d", i) + strings.Repeat("y", 60)
		def.Steps = append(def.Steps, saga.Step{Name: name, Role: "probe", Compensation: "undo_" + name[:8]})
	}
	logs := newLogSink()
	runCoordinatorWith(t, url, coordinator.Options{Definitions: []saga.Definition{def}, Logger: slog.New(logs)})
	nc := testenv.Connect(t, url)
	_, kv := sagaBucket(t, nc)
	w := watchCommands(t, nc)

	id := strings.Repeat("L", 64)
	// Written by hand: encoding/json would escape the "<"s.
	start := fmt.Sprintf(`{"v":1,"saga_id":%q,"context":{"a":%q,"b":%q,"c":"%s"}}`, id,
		strings.Repeat("x", 7800), strings.Repeat("x", 7800), strings.Repeat("<", 120))
	msg, err := nc.Request(messages.StartSubject("big"), []byte(start), 10*time.Second)
	require.NoError(t, err)
	var resp messages.StartResponse
	require.NoError(t, json.Unmarshal(msg.Data, &resp))
	require.Nil(t, resp.Error)
	answer := func(r messages.Reply) {
		t.Helper()
		data, err := json.Marshal(r)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(r.Subject(), data))
	}
	for i := range 61 {
		w.next()
		c := w.last[id]
		r := messages.ReplyTo(&c, messages.OK, "")
		switch i {
		case 0:
			r.Output = messages.Context{}.MustSet("a", strings.Repeat("y", 7800))
		case 1:
			r.Output = messages.Context{}.MustSet("b", strings.Repeat("z", 7800))
		case 60:
			r.Outcome, r.Reason = messages.Failed, strings.Repeat("<", 1024)
		}
		answer(r)
	}
	for range 60 {
		w.next()
		c := w.last[id]
		require.Equal(t, messages.Compensate, c.Action)
		answer(messages.ReplyTo(&c, messages.OK, ""))
	}
	var x saga.Execution
	require.Eventually(t, func() bool {
		e, err := kv.Get(context.Background(), messages.SagaKey(id))
		return err == nil && json.Unmarshal(e.Value(), &x) == nil && x.Status == saga.RolledBack
	}, 10*time.Second, 10*time.Millisecond, "stored, rolled back")
	// What it shed, while it compensated: the history but its first, its
	// cause and its last (transitions were recorded after).
	require.Positive(t, x.HistoryDropped)
	require.Equal(t, saga.Pending, x.History[0].Status)
	require.Equal(t, saga.RolledBack, x.History[len(x.History)-1].Status)
	require.Contains(t, x.History[1].Note, "step "+def.Steps[60].Name+" failed: "+strings.Repeat("<", 1024))
	require.Len(t, x.Compensated, 60)
	require.Contains(t, x.Error, strings.Repeat("<", 900), "the error is kept")
	require.Positive(t, logs.count(slog.LevelWarn, "saga state too large for a message: dropping what it can do without", ""))
	require.Zero(t, logs.count(slog.LevelError, "coordinator term ended; standing by to start again", ""))
	require.Equal(t, 0, testenv.Summary(t, nc).Active)
}

// TestCopiesOfAnEarlyReplyAreNotHeld: a step answered working until tick
// 100, then 500 copies of its final answer, all early. The reply
// consumer, which every role shares, holds one of them, not 500, and
// another saga's reply is applied meanwhile; at tick 100 the held answer
// completes its saga, once.
func TestCopiesOfAnEarlyReplyAreNotHeld(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	def := saga.Definition{Name: "job", Subject: "job", TimeoutTicks: 1000, Steps: []saga.Step{{Name: "work", Role: "r", TimeoutTicks: 1000}}}
	runCoordinator(t, url, []saga.Definition{def}, nil)
	js, _ := sagaBucket(t, nc)
	w := watchCommands(t, nc)
	for _, id := range []string{"slow", "quick"} {
		testenv.Request(t, nc, messages.StartSubject("job"), messages.StartRequest{V: messages.Version, SagaID: id}, &messages.StartResponse{})
		w.next()
	}
	answer := func(r messages.Reply) {
		t.Helper()
		data, err := json.Marshal(r)
		require.NoError(t, err)
		require.NoError(t, nc.Publish(r.Subject(), data))
	}
	slow, quick := w.last["slow"], w.last["quick"]
	working := messages.ReplyTo(&slow, messages.Working, "")
	working.Until = 100
	answer(working)
	require.Eventually(t, func() bool { return testenv.Status(t, nc, "slow").Working }, 10*time.Second, 10*time.Millisecond)
	for range 500 {
		answer(messages.ReplyTo(&slow, messages.OK, ""))
	}
	answer(messages.ReplyTo(&quick, messages.OK, ""))
	require.Eventually(t, func() bool { return testenv.Status(t, nc, "quick").Status == saga.Completed }, 10*time.Second, 10*time.Millisecond)
	pending := func() int {
		cons, err := js.Consumer(context.Background(), messages.ReplyStream, messages.ReplyConsumer)
		require.NoError(t, err)
		return cons.CachedInfo().NumAckPending
	}
	require.Eventually(t, func() bool { return pending() == 1 }, 10*time.Second, 10*time.Millisecond, "one copy held, the rest dropped")
	require.Equal(t, saga.InProgress, testenv.Status(t, nc, "slow").Status)

	testenv.Tick(t, nc, 100)
	require.Eventually(t, func() bool { return testenv.Status(t, nc, "slow").Status == saga.Completed }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return pending() == 0 }, 10*time.Second, 10*time.Millisecond)
}
