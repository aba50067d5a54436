package coordinator_test

import (
	"encoding/json"
	"fmt"
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
