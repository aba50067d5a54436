package coordinator_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestRankedRoundsOnTheWire starts ranked sagas out of rank order,
// scheduled for tick 1, answers them out of order, and checks the exact
// commands published and their order: each round goes out whole, in rank
// order, once the round before it is answered; an answer that comes early
// is held back until its time.
func TestRankedRoundsOnTheWire(t *testing.T) {
	_, url := testenv.Server(t)
	def := saga.Definition{Name: "pay", Subject: "pay", Steps: []saga.Step{
		{Name: "ask", Role: "asker"}, {Name: "spend", Role: "treasury", TimeoutTicks: 3},
	}}
	testenv.Coordinator(t, url, []saga.Definition{def})
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)

	cmds := make(chan messages.Command, 16)
	sub, err := nc.Subscribe("saga.>", func(m *nats.Msg) {
		var c messages.Command
		if json.Unmarshal(m.Data, &c) == nil {
			cmds <- c
		}
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	last := map[string]messages.Command{}
	next := func(n int) []string {
		t.Helper()
		var got []string
		for range n {
			select {
			case c := <-cmds:
				got = append(got, c.SagaID+"/"+c.Step)
				last[c.SagaID] = c
			case <-time.After(10 * time.Second):
				require.FailNow(t, "command not published", "have %v", got)
			}
		}
		return got
	}
	none := func() {
		t.Helper()
		require.NoError(t, nc.Flush())
		select {
		case c := <-cmds:
			require.FailNow(t, "command published before its round", "%s/%s", c.SagaID, c.Step)
		case <-time.After(200 * time.Millisecond):
		}
	}
	answer := func(id string, o messages.Outcome, until int64) {
		t.Helper()
		c := last[id]
		r := messages.ReplyTo(&c, o, "")
		r.Until = until
		data, err := json.Marshal(r)
		require.NoError(t, err)
		_, err = js.Publish(t.Context(), r.Subject(), data)
		require.NoError(t, err)
	}

	for _, s := range []struct {
		id   string
		rank int64
	}{{"c", 3}, {"a", 1}, {"b", 2}} {
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject("pay"), messages.StartRequest{V: messages.Version, SagaID: s.id, Rank: s.rank, Tick: 1}, &resp)
		require.Nil(t, resp.Error)
		require.Equal(t, string(saga.Pending), resp.Status)
	}
	none()
	testenv.Tick(t, nc, 1)
	require.Equal(t, []string{"a/ask", "b/ask", "c/ask"}, next(3))

	answer("c", messages.OK, 0)
	answer("a", messages.OK, 0)
	// Their next commands wait for b: due still counts them.
	require.Eventually(t, func() bool {
		return testenv.Status(t, nc, "a").Current == 1 && testenv.Status(t, nc, "c").Current == 1
	}, 10*time.Second, 5*time.Millisecond)
	none()
	require.Equal(t, 3, testenv.Summary(t, nc).Due)
	answer("b", messages.OK, 0)
	require.Equal(t, []string{"a/spend", "b/spend", "c/spend"}, next(3))

	// b works until tick 3; a and c finish now. b's answer at tick 2 is
	// early: it waits for tick 3.
	answer("b", messages.Working, 3)
	answer("a", messages.OK, 0)
	answer("c", messages.OK, 0)
	require.Eventually(t, func() bool { return testenv.Summary(t, nc).Due == 0 }, 10*time.Second, 5*time.Millisecond)
	testenv.Tick(t, nc, 2)
	answer("b", messages.OK, 0)
	require.Never(t, func() bool { return testenv.Status(t, nc, "b").Status == saga.Completed }, 300*time.Millisecond, 20*time.Millisecond,
		"an answer before the declared tick is held back")
	require.Equal(t, 0, testenv.Summary(t, nc).Due)
	ack := testenv.Tick(t, nc, 3)
	require.NotNil(t, ack.Summary)
	testenv.WaitStatus(t, nc, "b", saga.Completed)
	require.Equal(t, 0, testenv.Summary(t, nc).Due)
	none()

	// d works until tick 4 and answers early; a tick that jumps past
	// spend's timeout (sent at 3, timeout 3: it expires at 7) does not
	// time out the answer in hand.
	var resp messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject("pay"), messages.StartRequest{V: messages.Version, SagaID: "d", Rank: 4}, &resp)
	require.Nil(t, resp.Error)
	require.Equal(t, []string{"d/ask"}, next(1))
	answer("d", messages.OK, 0)
	require.Equal(t, []string{"d/spend"}, next(1))
	answer("d", messages.Working, 4)
	require.Eventually(t, func() bool { return testenv.Status(t, nc, "d").Working }, 10*time.Second, 5*time.Millisecond)
	answer("d", messages.OK, 0)
	require.Never(t, func() bool { return testenv.Status(t, nc, "d").Status == saga.Completed }, 300*time.Millisecond, 20*time.Millisecond,
		"an answer before the declared tick is held back")
	ack = testenv.Tick(t, nc, 10)
	require.Empty(t, ack.Expired)
	testenv.WaitStatus(t, nc, "d", saga.Completed)
	none()
}
