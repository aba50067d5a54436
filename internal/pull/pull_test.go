package pull_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/pull"
	"github.com/natsaga/natsaga/internal/testenv"
)

// TestLoopSurvivesALostConsumer deletes the consumer under a running loop
// and checks that the loop opens it again and goes on delivering.
func TestLoopSurvivesALostConsumer(t *testing.T) {
	_, url := testenv.Server(t)
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	ctx := context.Background()
	open, opened := workQueue(t, js)
	got := make(chan string, 10)
	loopCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		pull.Loop(loopCtx, loopCtx, testenv.Logger(t), pull.Options{Pause: 10 * time.Millisecond}, open, func(m jetstream.Msg) {
			_ = m.DoubleAck(context.Background())
			got <- string(m.Data())
		})
	}()
	next := func() string {
		select {
		case s := <-got:
			return s
		case <-time.After(10 * time.Second):
			t.Fatal("no message delivered")
			return ""
		}
	}
	<-opened
	_, err = js.Publish(ctx, "s.a", []byte("one"))
	require.NoError(t, err)
	require.Equal(t, "one", next())

	require.NoError(t, js.DeleteConsumer(ctx, "S", "c"))
	select {
	case <-opened:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop never opened the consumer again")
	}
	_, err = js.Publish(ctx, "s.a", []byte("two"))
	require.NoError(t, err)
	require.Equal(t, "two", next())

	stop()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the loop did not return after its context ended")
	}
}

// TestLoopStopsAtOnceWithTheServerGone: a loop whose context ends while
// its connection is down stops its iterator rather than drain it, which
// would wait for the server, and returns; hard, which would stop it, never
// ends here.
func TestLoopStopsAtOnceWithTheServerGone(t *testing.T) {
	s, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	open, opened := workQueue(t, js)
	loopCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pull.Loop(loopCtx, context.Background(), testenv.Logger(t), pull.Options{Pause: 10 * time.Millisecond, Connected: nc.IsConnected}, open, func(jetstream.Msg) {})
	}()
	<-opened
	s.Shutdown()
	require.Eventually(t, func() bool { return !nc.IsConnected() }, 10*time.Second, 5*time.Millisecond)
	stop()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop waited on a drain with the server gone")
	}
}

// workQueue creates the work-queue stream S on subjects s.>, and returns
// the opener of pull.Loop's iterator on its durable consumer c, which it
// creates, or creates again, each time, and a channel that receives once
// each time it does.
func workQueue(t *testing.T, js jetstream.JetStream) (pull.Open, <-chan struct{}) {
	t.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Retention: jetstream.WorkQueuePolicy})
	require.NoError(t, err)
	opened := make(chan struct{}, 10)
	return func(ctx context.Context) (jetstream.MessagesContext, error) {
		c, err := js.CreateOrUpdateConsumer(ctx, "S", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			return nil, err
		}
		opened <- struct{}{}
		return c.Messages(jetstream.PullExpiry(2*time.Second), jetstream.PullHeartbeat(500*time.Millisecond))
	}, opened
}

// TestLoopOpensAgainOnAServerThatLostTheConsumer restarts the server on
// its port with an empty store: the stream is made again, the consumer is
// not, and the iterator, which pulls from it, only misses heartbeats. The
// loop ends it, which Health is told, and opens it again, so the consumer
// is made, and delivers what the new stream holds.
func TestLoopOpensAgainOnAServerThatLostTheConsumer(t *testing.T) {
	s, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	nc := testenv.Connect(t, s.ClientURL())
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	open, opened := workQueue(t, js)
	var (
		mu     sync.Mutex
		health []error
	)
	got := make(chan string, 10)
	loopCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		pull.Loop(loopCtx, loopCtx, testenv.Logger(t), pull.Options{Pause: 10 * time.Millisecond, Health: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			health = append(health, err)
		}}, open, func(m jetstream.Msg) {
			_ = m.DoubleAck(context.Background())
			got <- string(m.Data())
		})
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	<-opened

	port := s.Addr().(*net.TCPAddr).Port
	s.Shutdown()
	s, err = embedded.Start(embedded.Options{Port: port, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(s.Shutdown)
	require.Eventually(t, func() bool { return nc.IsConnected() }, 10*time.Second, 5*time.Millisecond)
	// The request may time out on a loaded machine (the suite under
	// -race beside other work) while the new server settles: asked again.
	require.Eventually(t, func() bool {
		_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Retention: jetstream.WorkQueuePolicy})
		return err == nil
	}, 30*time.Second, 10*time.Millisecond, "the stream made again")
	_, err = js.Publish(context.Background(), "s.a", []byte("after"))
	require.NoError(t, err)
	select {
	case m := <-got:
		require.Equal(t, "after", m)
	case <-time.After(20 * time.Second):
		t.Fatal("nothing delivered from the new server")
	}
	mu.Lock()
	defer mu.Unlock()
	require.GreaterOrEqual(t, len(health), 3, "%v", health)
	require.NoError(t, health[0], "opened")
	require.ErrorIs(t, health[len(health)-2], jetstream.ErrNoHeartbeat, "%v", health)
	require.ErrorContains(t, health[len(health)-2], "3 heartbeats missed in a row")
	require.NoError(t, health[len(health)-1], "opened again")
}
