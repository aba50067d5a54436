package participant

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// TestBatchSettledAsAWhole takes real batches from a real consumer apart
// and settles their commands one by one: the message is acknowledged,
// delivered again or terminated only once the last is settled, as its
// commands say, and settling one twice counts once.
func TestBatchSettledAsAWhole(t *testing.T) {
	nc := connectEmbedded(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: messages.CommandStream,
		Subjects: messages.StepCommandSubjects("pay", "spend"), Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "t", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	h := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	a, err := New(nc, Options{Role: "till", Steps: []agent.Step{{Saga: "pay", Name: "spend", Handler: h}}})
	require.NoError(t, err)

	publish := func() {
		var parts [][]byte
		for i := range 3 {
			c := messages.Command{V: messages.Version, SagaID: "s-" + strconv.Itoa(i), Saga: "pay", Step: "spend",
				Action: messages.Execute, Attempt: 1, Seq: 1}
			data, err := wirejson.AppendCommand(nil, &c)
			require.NoError(t, err)
			parts = append(parts, data)
		}
		m := nats.NewMsg(messages.ExecuteSubject("pay", "spend"))
		m.Data = wirejson.AppendCommandBatch(nil, parts)
		m.Header.Set(messages.BatchHeader, "3")
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	// take fetches the next message and takes it apart.
	take := func() ([]jetstream.Msg, uint64) {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		require.NoError(t, err)
		m := <-batch.Messages()
		require.NotNil(t, m, "a message delivered")
		md, err := m.Metadata()
		require.NoError(t, err)
		var cmds []jetstream.Msg
		a.expand(m, func(c jetstream.Msg) { cmds = append(cmds, c) })
		require.Len(t, cmds, 3)
		return cmds, md.NumDelivered
	}
	pending := func() int {
		info, err := cons.Info(ctx)
		require.NoError(t, err)
		return info.NumAckPending
	}
	stored := func() uint64 {
		info, err := stream.Info(ctx)
		require.NoError(t, err)
		return info.State.Msgs
	}
	inHand := func() int {
		a.mu.Lock()
		defer a.mu.Unlock()
		return len(a.inHand)
	}

	// Acknowledged with its last command.
	publish()
	cmds, delivered := take()
	require.Equal(t, uint64(1), delivered)
	require.Equal(t, 1, inHand())
	require.NoError(t, cmds[0].Ack())
	require.NoError(t, cmds[0].Ack(), "settled twice, counted once")
	require.NoError(t, cmds[1].Term())
	require.Equal(t, 1, pending(), "not acknowledged before its last command")
	require.Equal(t, 1, inHand())
	require.NoError(t, cmds[2].DoubleAck(ctx))
	require.Eventually(t, func() bool { return pending() == 0 && stored() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, inHand())

	// Delivered again when one of its commands asks.
	publish()
	cmds, _ = take()
	require.NoError(t, cmds[0].Ack())
	require.NoError(t, cmds[1].NakWithDelay(10*time.Millisecond))
	require.NoError(t, cmds[2].Ack())
	cmds, delivered = take()
	require.Equal(t, uint64(2), delivered, "the whole batch comes again")

	// Terminated when all its commands are: the server says so.
	terms, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + messages.CommandStream + ".t")
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	for i, c := range cmds {
		require.NoError(t, c.Term())
		if i < len(cmds)-1 {
			require.Equal(t, 1, pending(), "not terminated before its last command")
		}
	}
	_, err = terms.NextMsg(5 * time.Second)
	require.NoError(t, err, "the message is terminated")
	require.Eventually(t, func() bool { return pending() == 0 && stored() == 0 }, 5*time.Second, 5*time.Millisecond)
	require.Zero(t, inHand())
}

// TestTemporary sorts set-up errors into those Run waits out and those it
// returns.
func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"cluster electing its leaders", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{"request timed out", fmt.Errorf("agent consumer: %w", context.DeadlineExceeded), true},
		{"no reply", nats.ErrTimeout, true},
		{"no responders yet", nats.ErrNoResponders, true},
		{"reconnecting", nats.ErrConnectionReconnecting, true},
		{"overlapping filters", &jetstream.APIError{Code: 400, ErrorCode: 10136, Description: "filtered consumer not unique on workqueue stream"}, false},
		{"no leader yet", &jetstream.APIError{Code: 500, ErrorCode: 10009, Description: "JetStream cluster can not handle request"}, true},
		{"a stream just made, not found yet", fmt.Errorf("records of household: %w: log: %w", ErrUnavailable, jetstream.ErrStreamNotFound), true},
		{"replicas on a single server", &jetstream.APIError{Code: 500, ErrorCode: 10074, Description: "replicas > 1 not supported in non-clustered mode"}, false},
		{"JetStream not enabled", &jetstream.APIError{Code: 503, ErrorCode: 10076, Description: "JetStream not enabled"}, false},
		{"no JetStream", fmt.Errorf("open store: %w: %w", ErrNoJetStream, nats.ErrNoResponders), false},
		{"connection closed", nats.ErrConnectionClosed, false},
		{"init failed", errors.New("agent init: ledger mismatch"), false},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, temporary(tc.err)) })
	}
}
