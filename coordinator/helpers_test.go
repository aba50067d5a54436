package coordinator_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// wire records every message seen on a subject pattern, in arrival order.
type wire struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

// listen subscribes nc (core NATS) to subject and records what arrives. The
// subscription is known to the server when listen returns.
func listen(t *testing.T, nc *nats.Conn, subject string) *wire {
	t.Helper()
	return listenTo(t, nc, subject, nil)
}

// listenStores records the coordinator's writes of sagas: to the saga
// log, and to the bucket. One subscription takes both, so they are
// recorded in the order the server delivered them.
func listenStores(t *testing.T, nc *nats.Conn) *wire {
	t.Helper()
	return listenTo(t, nc, ">", func(m *nats.Msg) bool {
		// A write, not a consumer's delivery of one.
		write := m.Subject == messages.SagaLogSubject || strings.HasPrefix(m.Subject, messages.BucketSubject(messages.SagaKeyPrefix))
		return write && !strings.HasPrefix(m.Reply, "$JS.ACK.")
	})
}

// listenTo records what arrives on subject that keep accepts (all when
// keep is nil).
func listenTo(t *testing.T, nc *nats.Conn, subject string, keep func(*nats.Msg) bool) *wire {
	t.Helper()
	w := &wire{}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if keep != nil && !keep(m) {
			return
		}
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())
	return w
}

// stored decodes the stored states of saga id, in order, from the saga
// log's messages and the bucket's writes a listenStores recorded.
func (w *wire) stored(t *testing.T, id string) []saga.Execution {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var xs []saga.Execution
	for _, m := range w.msgs {
		switch m.Subject {
		case messages.BucketSubject(messages.SagaKey(id)):
			var x saga.Execution
			require.NoError(t, json.Unmarshal(m.Data, &x))
			xs = append(xs, x)
		case messages.SagaLogSubject:
			es, err := kvlog.Decode(m.Data)
			require.NoError(t, err)
			for _, e := range es {
				if e.Key != id || string(e.Value) == `"ended"` {
					continue
				}
				var x saga.Execution
				require.NoError(t, json.Unmarshal(e.Value, &x))
				xs = append(xs, x)
			}
		}
	}
	return xs
}

// endedMarks counts the saga log's entries marking saga id ended.
func (w *wire) endedMarks(t *testing.T, id string) int {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.msgs {
		if m.Subject != messages.SagaLogSubject {
			continue
		}
		es, err := kvlog.Decode(m.Data)
		require.NoError(t, err)
		for _, e := range es {
			if e.Key == id && string(e.Value) == `"ended"` {
				n++
			}
		}
	}
	return n
}

// states lists the statuses of the stored writes of saga id, in order.
func (w *wire) states(t *testing.T, id string) string {
	t.Helper()
	var states []string
	for _, x := range w.stored(t, id) {
		states = append(states, string(x.Status))
	}
	return strings.Join(states, " ")
}

func (w *wire) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.msgs)
}

// sent is what the wire test compares of each command.
type sent struct {
	Subject string
	Action  messages.Action
	Attempt int
	Seq     int
	Tick    int64
}

// commands decodes the recorded commands of saga id, in order.
func (w *wire) commands(t *testing.T, id string) []sent {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []sent
	for _, m := range w.msgs {
		c, err := wirejson.DecodeCommand(m.Data)
		if err != nil || c.SagaID != id {
			continue
		}
		require.Equal(t, c.Subject(), m.Subject, "command published on the wrong subject")
		out = append(out, sent{Subject: m.Subject, Action: c.Action, Attempt: c.Attempt, Seq: c.Seq, Tick: c.Tick})
	}
	return out
}

// events decodes the recorded events of saga id and returns their statuses.
func (w *wire) events(t *testing.T, id string) []string {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.msgs {
		var ev messages.Event
		require.NoError(t, json.Unmarshal(m.Data, &ev))
		if ev.SagaID == id {
			require.Equal(t, messages.EventSubject(ev.Saga, ev.Status), m.Subject)
			out = append(out, ev.Status)
		}
	}
	return out
}

// logRecord is one captured log line.
type logRecord struct {
	Level slog.Level
	Msg   string
	Attrs map[string]string
}

// logSink is a slog.Handler that keeps every record, for tests that assert
// what was logged.
type logSink struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
}

func newLogSink() *logSink { return &logSink{mu: &sync.Mutex{}, recs: &[]logRecord{}} }

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }

func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Level: r.Level, Msg: r.Message, Attrs: map[string]string{}}
	for _, a := range s.attrs {
		rec.Attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value.String()
		return true
	})
	s.mu.Lock()
	*s.recs = append(*s.recs, rec)
	s.mu.Unlock()
	return nil
}

func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler {
	c := *s
	c.attrs = append(slices.Clone(s.attrs), as...)
	return &c
}

func (s *logSink) WithGroup(string) slog.Handler { return s }

// dump logs every record at level or above, for a failure's diagnosis.
func (s *logSink) dump(t *testing.T, level slog.Level) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range *s.recs {
		if r.Level >= level {
			t.Logf("%s %s %v", r.Level, r.Msg, r.Attrs)
		}
	}
}

// count returns how many records at level or above have a message starting
// with msg and, when substr is not empty, an "err" attribute containing it.
func (s *logSink) count(level slog.Level, msg, substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range *s.recs {
		if r.Level >= level && strings.HasPrefix(r.Msg, msg) && strings.Contains(r.Attrs["err"], substr) {
			n++
		}
	}
	return n
}

// countAttr returns how many records at level or above have a message
// starting with msg and the attribute key equal to value.
func (s *logSink) countAttr(level slog.Level, msg, key, value string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range *s.recs {
		if v, ok := r.Attrs[key]; ok && r.Level >= level && strings.HasPrefix(r.Msg, msg) && v == value {
			n++
		}
	}
	return n
}

// runUntilStopped runs a coordinator with opts on its own connection,
// waits until it is ready, and returns stop, which stops it as a process
// told to stop would be, and requires that it stopped cleanly.
func runUntilStopped(t *testing.T, url string, opts coordinator.Options) (stop func()) {
	t.Helper()
	c, err := coordinator.New(testenv.Connect(t, url), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.Ready()
	return func() {
		t.Helper()
		cancel()
		require.NoError(t, <-done)
	}
}

// runRefused runs a coordinator with opts on its own connection, which
// must stop by itself, refusing to run, within 20 seconds, and returns
// it and Run's error; what names it in the failure.
func runRefused(t *testing.T, url string, opts coordinator.Options, what string) (*coordinator.Coordinator, error) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testenv.Logger(t)
	}
	c, err := coordinator.New(testenv.Connect(t, url), opts)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- c.Run(t.Context()) }()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s kept running", what)
	}
	return c, err
}

// runCoordinator runs a coordinator with log on its own connection until
// the test ends, and waits until it is ready.
func runCoordinator(t *testing.T, url string, defs []saga.Definition, log *slog.Logger) {
	t.Helper()
	runCoordinatorWith(t, url, coordinator.Options{Definitions: defs, Logger: log})
}

// runCoordinatorWith is runCoordinator with opts.
func runCoordinatorWith(t *testing.T, url string, opts coordinator.Options) {
	t.Helper()
	c, err := coordinator.New(testenv.Connect(t, url), opts)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() {
		defer close(done)
		runErr = c.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		require.NoError(t, runErr)
	})
	select {
	case <-c.Ready():
	case <-done:
		t.Fatalf("coordinator stopped: %v", runErr)
	case <-time.After(10 * time.Second):
		t.Fatal("coordinator not ready")
	}
}

// sagaBucket opens, on nc, JetStream and the coordinator's bucket.
func sagaBucket(t *testing.T, nc *nats.Conn) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), messages.SagaBucket)
	require.NoError(t, err)
	return js, kv
}
