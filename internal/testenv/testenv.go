// Package testenv boots natsaga's parts inside a test: an embedded
// nats-server with JetStream, the coordinator, agents, and a client that
// speaks the protocol. Every helper registers its own cleanup.
package testenv

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// Server starts an embedded nats-server with JetStream in a temporary
// directory and returns it with its URL.
func Server(t testing.TB) (*server.Server, string) {
	t.Helper()
	ns, err := embedded.Start(embedded.Options{StoreDir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	return ns, ns.ClientURL()
}

// ServerWith starts an embedded nats-server with JetStream, configured by
// the nats-server configuration conf (its text), shut down at cleanup, and
// returns it and its client URL.
func ServerWith(t testing.TB, conf string) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "nats.conf")
	require.NoError(t, os.WriteFile(file, []byte(conf), 0o600))
	ns, err := embedded.Start(embedded.Options{StoreDir: filepath.Join(dir, "js"), Config: file})
	require.NoError(t, err)
	t.Cleanup(ns.Shutdown)
	return ns, ns.ClientURL()
}

// Connect returns a connection to url, closed at cleanup.
func Connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// JetStream runs an embedded server for the test and returns a connection
// to it and its JetStream.
func JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	_, url := Server(t)
	nc := Connect(t, url)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// Logger returns a logger that writes to the test log when NATSAGA_TEST_LOG
// is set, and discards otherwise.
func Logger(t testing.TB) *slog.Logger {
	if os.Getenv("NATSAGA_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Coordinator runs a coordinator on its own connection to url until the
// test ends, and waits until it is ready.
func Coordinator(t testing.TB, url string, defs []saga.Definition) *coordinator.Coordinator {
	t.Helper()
	return CoordinatorWith(t, url, coordinator.Options{Definitions: defs})
}

// CoordinatorWith is [Coordinator] with opts; a nil opts.Logger logs as
// [Logger] does.
func CoordinatorWith(t testing.TB, url string, opts coordinator.Options) *coordinator.Coordinator {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	c, err := coordinator.New(Connect(t, url), opts)
	require.NoError(t, err)
	run(t, c.Run)
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
	return c
}

// Agent runs an agent on its own connection to url until the test ends.
func Agent(t testing.TB, url string, opts participant.Options) *participant.Agent {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	a, err := participant.New(Connect(t, url), opts)
	require.NoError(t, err)
	run(t, a.Run)
	return a
}

// run runs fn until the test ends, and fails the test if fn returns an
// error.
func run(t testing.TB, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := fn(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

// ServiceMetadata waits until the one running instance of the natsaga
// micro service name answers an INFO request, and returns its metadata.
func ServiceMetadata(t testing.TB, nc *nats.Conn, name string) map[string]string {
	t.Helper()
	subject, err := micro.ControlSubject(micro.InfoVerb, name, "")
	require.NoError(t, err)
	var info micro.Info
	require.Eventually(t, func() bool {
		m, err := nc.Request(subject, nil, time.Second)
		return err == nil && json.Unmarshal(m.Data, &info) == nil && info.Name == name
	}, 10*time.Second, 10*time.Millisecond, "no INFO answer from %s", name)
	return info.Metadata
}

// Request sends req on subject and decodes the answer into resp.
func Request(t testing.TB, nc *nats.Conn, subject string, req, resp any) {
	t.Helper()
	data, err := json.Marshal(req)
	require.NoError(t, err)
	m, err := nc.Request(subject, data, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(m.Data, resp), string(m.Data))
}

// DeliverFromStream stores data in a stream of its own and has a push
// consumer deliver it to subject, as a user allowed a consumer may aim
// one at any subject, whatever it may publish: the message arrives with a
// JetStream delivery's reply subject, $JS.ACK.PLANTED.planter.…
func DeliverFromStream(t testing.TB, nc *nats.Conn, subject string, data []byte) {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "PLANTED", Subjects: []string{"planted"}})
	require.NoError(t, err)
	_, err = js.Publish(t.Context(), "planted", data)
	require.NoError(t, err)
	_, err = js.CreateOrUpdatePushConsumer(t.Context(), "PLANTED", jetstream.ConsumerConfig{
		Durable: "planter", DeliverSubject: subject, AckPolicy: jetstream.AckNonePolicy})
	require.NoError(t, err)
}

// Start starts a saga and returns its id.
func Start(t testing.TB, nc *nats.Conn, sagaType string, ctx messages.Context) string {
	t.Helper()
	var resp messages.StartResponse
	Request(t, nc, messages.StartSubject(sagaType), messages.StartRequest{V: messages.Version, Context: ctx}, &resp)
	require.Nil(t, resp.Error)
	require.NotEmpty(t, resp.SagaID)
	return resp.SagaID
}

// Tick advances the clock and returns the coordinator's acknowledgement.
func Tick(t testing.TB, nc *nats.Conn, tick int64) messages.TickAck {
	t.Helper()
	var ack messages.TickAck
	Request(t, nc, messages.TickSubject, messages.Tick{V: messages.Version, Tick: tick}, &ack)
	require.Nil(t, ack.Error)
	return ack
}

// Status returns a saga's stored state.
func Status(t testing.TB, nc *nats.Conn, id string) saga.Execution {
	t.Helper()
	var resp messages.StatusResponse
	Request(t, nc, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id}, &resp)
	require.Nil(t, resp.Error)
	var x saga.Execution
	require.NoError(t, json.Unmarshal(resp.Saga, &x))
	return x
}

// Summary returns the coordinator's summary.
func Summary(t testing.TB, nc *nats.Conn) messages.Summary {
	t.Helper()
	var s messages.Summary
	Request(t, nc, messages.SummarySubject, struct{}{}, &s)
	return s
}

// WaitStatus waits until saga id has status. Requests that fail on the
// way (a coordinator or server restarting) are retried.
func WaitStatus(t testing.TB, nc *nats.Conn, id string, want saga.Status) saga.Execution {
	t.Helper()
	var x saga.Execution
	req, err := json.Marshal(messages.StatusRequest{V: messages.Version, SagaID: id})
	require.NoError(t, err)
	// The status last seen is named when the wait fails: require.Eventually
	// formats its message when called, before any status is seen.
	var mu sync.Mutex
	if !assert.Eventually(t, func() bool {
		m, err := nc.Request(messages.StatusSubject, req, time.Second)
		if err != nil {
			return false
		}
		var resp messages.StatusResponse
		if json.Unmarshal(m.Data, &resp) != nil || resp.Error != nil {
			return false
		}
		var seen saga.Execution
		if json.Unmarshal(resp.Saga, &seen) != nil {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		x = seen
		return x.Status == want
	}, 30*time.Second, 10*time.Millisecond) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("saga %s never reached %s (last seen %q)", id, want, x.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	return x
}
