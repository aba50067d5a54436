package client_test

import (
	"context"
	"encoding/json"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// refusedDialer reports each dial that no server answered, as far as its
// channel has room.
type refusedDialer struct {
	d       net.Dialer
	refused chan struct{}
}

func (r *refusedDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	if err != nil {
		select {
		case r.refused <- struct{}{}:
		default:
		}
	}
	return c, err
}

// TestConnectWaitsForTheServer: a driver started before its server
// connects once the server is up, within its context.
func TestConnectWaitsForTheServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())

	dialer := &refusedDialer{refused: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		c   *client.Client
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := client.Connect(ctx, "nats://127.0.0.1:"+strconv.Itoa(port), client.Options{}, nats.SetCustomDialer(dialer))
		done <- result{c, err}
	}()
	<-dialer.refused // no server yet: refused, and tried again
	ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: port, StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	r := <-done
	require.NoError(t, r.err)
	r.c.Close()
}

// TestConnectGivesUpWithItsContext: with no server, Connect returns when
// its context ends, with the last attempt's error and no password.
func TestConnectGivesUpWithItsContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err = client.Connect(ctx, "nats://me:secret@127.0.0.1:"+strconv.Itoa(port), client.Options{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, nats.ErrNoServers)
	require.NotContains(t, err.Error(), "secret")
}

// TestStartSentAgainOnlyWithAnID: a start whose answer does not come in
// time is sent again only when it names its saga's id; without one, a
// second would start a second saga, so the error says it may have started.
// The "coordinator" here takes requests and never answers.
func TestStartSentAgainOnlyWithAnID(t *testing.T) {
	_, url := testenv.Server(t)
	silent := testenv.Connect(t, url)
	single, err := silent.SubscribeSync(messages.StartSubject("greet"))
	require.NoError(t, err)
	batch, err := silent.SubscribeSync(messages.StartBatchSubject)
	require.NoError(t, err)
	retries, err := silent.SubscribeSync(messages.RetrySubject)
	require.NoError(t, err)
	require.NoError(t, silent.Flush())
	nc := testenv.Connect(t, url)
	c, err := client.New(nc, client.Options{RequestTimeout: 50 * time.Millisecond, Attempts: 3})
	require.NoError(t, err)
	ctx := context.Background()
	received := func(sub *nats.Subscription) int {
		t.Helper()
		require.NoError(t, nc.Flush())
		require.NoError(t, silent.Flush())
		n, _, err := sub.Pending()
		require.NoError(t, err)
		require.NoError(t, sub.Drain())
		return n
	}

	_, err = c.Start(ctx, client.Start{Saga: "greet"})
	require.ErrorContains(t, err, "not sent again: it may have taken effect")
	_, err = c.Start(ctx, client.Start{Saga: "greet", ID: "g-1"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "natsaga.start.greet: no answer in 3 attempts (3 not answered within 50ms, 0 heard by nobody): what answers it (the coordinator, or the role's agents for a query) is there, and slow")
	require.Equal(t, 1+3, received(single))

	// Apart from the one without an id, the one with an id is sent
	// again, as it would be alone.
	_, errs := c.StartMany(ctx, []client.Start{{Saga: "greet", ID: "g-2"}, {Saga: "greet"}}, 0)
	require.ErrorContains(t, errs[0], "no answer in 3 attempts")
	require.ErrorContains(t, errs[1], "not sent again")
	require.Equal(t, 3+1, received(batch))

	_, err = c.Retry(ctx, "g-3")
	require.ErrorContains(t, err, "not sent again")
	require.Equal(t, 1, received(retries))

	// The caller's context ending while the start is out says so too.
	again, err := silent.SubscribeSync(messages.StartSubject("greet"))
	require.NoError(t, err)
	defer again.Unsubscribe()
	require.NoError(t, silent.Flush())
	patient, err := client.New(nc, client.Options{RequestTimeout: time.Minute})
	require.NoError(t, err)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = patient.Start(short, client.Start{Saga: "greet"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "it may have taken effect")
}

// TestNobodyListeningSpendsNoAttempt: a request sent while nobody listens
// (a coordinator restarting) spends none of its attempts, so one that is
// then lost (a coordinator that took it and died) is sent again, and
// answered by the next, with two attempts allowed.
func TestNobodyListeningSpendsNoAttempt(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	c, err := client.New(nc, client.Options{RequestTimeout: 200 * time.Millisecond, Attempts: 2})
	require.NoError(t, err)
	asked := nc.Stats().OutMsgs
	answered := make(chan error, 1)
	go func() {
		_, err := c.Summary(context.Background())
		answered <- err
	}()
	// Sent once at least, to nobody.
	require.Eventually(t, func() bool { return nc.Stats().OutMsgs > asked }, 10*time.Second, time.Millisecond)

	other := testenv.Connect(t, url)
	lost, err := other.SubscribeSync(messages.SummarySubject)
	require.NoError(t, err)
	require.NoError(t, lost.AutoUnsubscribe(1))
	require.NoError(t, other.Flush())
	_, err = lost.NextMsg(10 * time.Second)
	require.NoError(t, err, "the request taken, and never answered")
	_, err = other.Subscribe(messages.SummarySubject, func(m *nats.Msg) { _ = m.Respond([]byte(`{"v":1,"active":7}`)) })
	require.NoError(t, err)
	require.NoError(t, <-answered)
}

// TestTickWaitsForACoordinatorRestarting: agents hear ticks and answer
// none, so a tick with no coordinator is never "heard by nobody" by the
// server's word; the client asks the summary, which only a coordinator
// answers, and so waits for one as long as its patience, and says then
// that none runs, not that it is slow.
func TestTickWaitsForACoordinatorRestarting(t *testing.T) {
	_, url := testenv.Server(t)
	hears := testenv.Connect(t, url)
	_, err := hears.Subscribe(messages.TickSubject, func(*nats.Msg) {})
	require.NoError(t, err)
	require.NoError(t, hears.Flush())
	c, err := client.New(testenv.Connect(t, url), client.Options{RequestTimeout: 100 * time.Millisecond, Attempts: 2,
		RestartPatience: 600 * time.Millisecond})
	require.NoError(t, err)
	_, err = c.Tick(context.Background(), 5)
	require.ErrorContains(t, err, "natsaga.tick: no answer in 2 attempts (0 not answered within 100ms, 2 heard by nobody): is what answers it (the coordinator")
	require.ErrorIs(t, err, nats.ErrNoResponders)

	// A coordinator that comes within the patience answers it.
	done := make(chan error, 1)
	patient, err := client.New(testenv.Connect(t, url), client.Options{RequestTimeout: 100 * time.Millisecond, Attempts: 2,
		RestartPatience: time.Minute})
	require.NoError(t, err)
	go func() {
		_, err := patient.Tick(context.Background(), 5)
		done <- err
	}()
	testenv.Coordinator(t, url, nil)
	require.NoError(t, <-done)
}

// TestConnectWaitsForANameToResolve: a server name that does not resolve
// yet (a container not up) is tried again until the context ends, as a
// refused connection is; an address no dial can use is an error at once.
func TestConnectWaitsForANameToResolve(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	_, err := client.Connect(ctx, "nats://natsaga-not-up-yet.invalid:4222", client.Options{})
	require.ErrorIs(t, err, context.DeadlineExceeded)

	for _, url := range []string{"nats://127.0.0.1:99999", "nats://a b:4222", "http://127.0.0.1:4222", "ftp://x:4222"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := client.Connect(ctx, url, client.Options{})
		require.Error(t, err, url)
		require.NoError(t, ctx.Err(), "%s: said at once", url)
		cancel()
	}
}

// TestConnectGivesTheLastCause: a port that takes connections and speaks
// no NATS, answering the first and then nothing: the error when the
// context ends during an attempt says what the attempt before it met.
func TestConnectGivesTheLastCause(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		var held []net.Conn
		for n := 0; ; n++ {
			c, err := l.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			if n == 0 {
				_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
				c.Close()
				continue
			}
			held = append(held, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = client.Connect(ctx, "nats://"+l.Addr().String(), client.Options{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "last attempt")
}

// TestConnectionReconnectedForEver: the connection Connect made outlives
// an outage longer than nats.go's default of 60 attempts (the test spaces
// them 5 ms apart), and a request during the outage says the server is
// out of reach, not that no coordinator runs.
func TestConnectionReconnectedForEver(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	store := t.TempDir()
	boot := func() *server.Server {
		ns, err := embedded.Start(embedded.Options{Host: "127.0.0.1", Port: port, StoreDir: store})
		require.NoError(t, err)
		return ns
	}
	ns := boot()
	dialer := &refusedDialer{refused: make(chan struct{}, 100)}
	c, err := client.Connect(context.Background(), ns.ClientURL(), client.Options{RequestTimeout: 100 * time.Millisecond, Attempts: 1},
		nats.SetCustomDialer(dialer), nats.ReconnectWait(5*time.Millisecond), nats.ReconnectJitter(0, 0))
	require.NoError(t, err)
	t.Cleanup(c.Close)

	ns.Shutdown()
	ns.WaitForShutdown()
	require.Eventually(t, func() bool { return len(dialer.refused) == cap(dialer.refused) }, 10*time.Second, time.Millisecond,
		"100 attempts to reconnect")
	_, err = c.Summary(context.Background())
	require.ErrorContains(t, err, "the NATS connection is RECONNECTING, the server out of reach")
	require.False(t, c.Conn().IsClosed(), "the connection was given up")

	ns = boot()
	t.Cleanup(ns.Shutdown)
	require.Eventually(t, c.Conn().IsConnected, 10*time.Second, 10*time.Millisecond)
}

// TestReadsAskAgainWhileBusy: a status or a list the coordinator answers
// "busy" (at its limit of bucket reads, or between two terms) is asked
// again after a backoff until it is answered otherwise; when ctx ends
// first, the error says both. The "coordinator" here answers each subject
// busy twice, then with a saga.
func TestReadsAskAgainWhileBusy(t *testing.T) {
	_, url := testenv.Server(t)
	coord := testenv.Connect(t, url)
	busy := &messages.WireError{Code: messages.CodeBusy, Message: "the coordinator's term ended; ask again"}
	saved := json.RawMessage(`{"id":"s-1","saga":"greet","status":"completed"}`)
	asked := map[string]int{}
	var mu sync.Mutex
	for subject, answer := range map[string]any{
		messages.StatusSubject: messages.StatusResponse{V: 1, Saga: saved},
		messages.ListSubject:   messages.ListResponse{V: 1, Sagas: []json.RawMessage{saved}},
	} {
		_, err := coord.Subscribe(subject, func(m *nats.Msg) {
			mu.Lock()
			asked[subject]++
			n := asked[subject]
			mu.Unlock()
			var data []byte
			if n <= 2 {
				data, _ = json.Marshal(map[string]any{"v": 1, "error": busy})
			} else {
				data, _ = json.Marshal(answer)
			}
			_ = m.Respond(data)
		})
		require.NoError(t, err)
	}
	require.NoError(t, coord.Flush())
	c, err := client.New(testenv.Connect(t, url), client.Options{})
	require.NoError(t, err)
	ctx := context.Background()

	x, err := c.Status(ctx, "s-1")
	require.NoError(t, err)
	require.Equal(t, saga.Completed, x.Status)
	xs, err := c.List(ctx, saga.Completed, 10)
	require.NoError(t, err)
	require.Len(t, xs, 1)
	mu.Lock()
	require.Equal(t, map[string]int{messages.StatusSubject: 3, messages.ListSubject: 3}, asked)
	asked[messages.StatusSubject] = -1000 // busy from now on
	mu.Unlock()

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = c.Status(short, "s-1")
	require.ErrorIs(t, err, client.ErrBusy)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}
