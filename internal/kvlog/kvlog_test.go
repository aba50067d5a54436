package kvlog_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/testenv"
)

const (
	stream  = "LOG"
	subject = "log.records"
)

// server starts an embedded server with the log's stream and returns its
// URL.
func server(t testing.TB) string {
	t.Helper()
	_, url := testenv.Server(t)
	js := jsFor(t, url)
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: stream, Subjects: []string{subject}, Storage: jetstream.FileStorage, AllowDirect: true})
	require.NoError(t, err)
	return url
}

// jsFor connects to url, as a process of its own would.
func jsFor(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(testenv.Connect(t, url))
	require.NoError(t, err)
	return js
}

func open(t testing.TB, url string) *kvlog.Log {
	t.Helper()
	l, err := kvlog.Open(context.Background(), jsFor(t, url), kvlog.Options{Stream: stream, Subject: subject, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	return l
}

func put(t *testing.T, l *kvlog.Log, key, value string, rev uint64) (uint64, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return l.Put(ctx, kvlog.Entry{Key: key, Value: json.RawMessage(value), Rev: rev})
}

func catchUp(t *testing.T, l *kvlog.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, l.Sync(ctx))
}

// messages returns how many messages the log's stream holds.
func messages(t testing.TB, url string) uint64 {
	t.Helper()
	st, err := jsFor(t, url).Stream(context.Background(), stream)
	require.NoError(t, err)
	return st.CachedInfo().State.Msgs
}

func TestPutGetAndConflict(t *testing.T) {
	url := server(t)
	l := open(t, url)

	rev, err := put(t, l, "a", `{"n":1}`, 0)
	require.NoError(t, err)
	require.Equal(t, uint64(1), rev, "a revision is the sequence of the message that wrote it")
	v, got := value(t, l, "a")
	require.JSONEq(t, `{"n":1}`, string(v))
	require.Equal(t, rev, got)

	_, err = put(t, l, "a", `{"n":2}`, 0)
	require.ErrorIs(t, err, kvlog.ErrConflict, "the key has a value: expecting none is a conflict")
	rev2, err := put(t, l, "a", `{"n":2}`, rev)
	require.NoError(t, err)
	require.Equal(t, uint64(2), rev2)
	_, err = put(t, l, "a", `{"n":3}`, rev)
	require.ErrorIs(t, err, kvlog.ErrConflict, "a write expecting an old revision")

	v, got = value(t, l, "a")
	require.JSONEq(t, `{"n":2}`, string(v))
	require.Equal(t, rev2, got)
	v, got = value(t, l, "b")
	require.Nil(t, v)
	require.Zero(t, got)
	require.Equal(t, uint64(2), messages(t, url), "a conflict stores nothing")
}

// Two processes share one log: each sees the other's writes once it has
// synced, and a write checked against an old view fails at the server and
// is checked again against the new one.
func TestTwoProcesses(t *testing.T) {
	url := server(t)
	a, b := open(t, url), open(t, url)

	rev, err := put(t, a, "k", `"from a"`, 0)
	require.NoError(t, err)
	_, err = put(t, b, "k", `"from b"`, 0)
	require.ErrorIs(t, err, kvlog.ErrConflict, "b learns of a's write")
	catchUp(t, b)
	v, got := value(t, b, "k")
	require.Equal(t, `"from a"`, string(v))
	require.Equal(t, rev, got)

	rev, err = put(t, b, "k", `"from b"`, rev)
	require.NoError(t, err)
	catchUp(t, a)
	v, got = value(t, a, "k")
	require.Equal(t, `"from b"`, string(v))
	require.Equal(t, rev, got)

	// Writes to other keys are not refused by the other process's: the
	// Log reads on and commits them.
	_, err = put(t, a, "x", `1`, 0)
	require.NoError(t, err)
	_, err = put(t, b, "y", `2`, 0)
	require.NoError(t, err, "b's view was behind a's write of x; its own write of y still holds")
}

// Many goroutines in two processes race to write one key at revision 0:
// exactly one wins, whatever the timing.
func TestOneWinnerAcrossProcesses(t *testing.T) {
	url := server(t)
	logs := []*kvlog.Log{open(t, url), open(t, url)}
	for round := range 5 {
		key := fmt.Sprintf("race-%d", round)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				_, err := put(t, logs[i%2], key, fmt.Sprintf(`%d`, i), 0)
				if err == nil {
					wins.Add(1)
				} else {
					require.ErrorIs(t, err, kvlog.ErrConflict)
				}
			})
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load(), "round %d", round)
	}
}

// Writes sent together go out together, in one message when they fit.
func TestGroupCommit(t *testing.T) {
	url := server(t)
	l := open(t, url)
	es := make([]kvlog.Entry, 500)
	for i := range es {
		es[i] = kvlog.Entry{Key: fmt.Sprintf("k%d", i), Value: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
	}
	revs, errs := l.PutAll(context.Background(), es)
	for i := range es {
		require.NoError(t, errs[i])
		v, rev := value(t, l, es[i].Key)
		require.Equal(t, revs[i], rev)
		require.JSONEq(t, string(es[i].Value), string(v))
	}
	require.Equal(t, uint64(1), messages(t, url), "500 writes sent together, in one message")

	// A second process reads them all when it opens.
	other := open(t, url)
	for i := range es {
		v, rev := value(t, other, es[i].Key)
		require.Equal(t, revs[i], rev)
		require.JSONEq(t, string(es[i].Value), string(v))
	}
}

// A message that is not one of the log's is skipped; the ones after it
// are read.
func TestSkipsWhatDoesNotDecode(t *testing.T) {
	url := server(t)
	l := open(t, url)
	js := jsFor(t, url)
	ctx := context.Background()
	for _, bad := range []string{`not json`, `{"id":"x","entries":[{"key":"","value":1}]}`, `{"id":"x","entries":[{"key":"k","value":null}]}`} {
		_, err := js.Publish(ctx, subject, []byte(bad))
		require.NoError(t, err)
	}
	_, err := js.Publish(ctx, subject, []byte(`{"id":"y","entries":[{"key":"k","value":"v"}]}`))
	require.NoError(t, err)
	catchUp(t, l)
	v, rev := value(t, l, "k")
	require.Equal(t, `"v"`, string(v))
	require.Equal(t, uint64(4), rev)
	rev, err = put(t, l, "k", `"w"`, rev)
	require.NoError(t, err)
	require.Equal(t, uint64(5), rev)
}

func TestDecode(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		want       []kvlog.Entry
		err        string
	}{
		{"two", `{"id":"a","entries":[{"key":"x","value":1},{"key":"y","value":{"z":2}}]}`,
			[]kvlog.Entry{{Key: "x", Value: json.RawMessage(`1`)}, {Key: "y", Value: json.RawMessage(`{"z":2}`)}}, ""},
		{"none", `{"id":"a","entries":[]}`, []kvlog.Entry{}, ""},
		{"not JSON", `{`, nil, "kvlog message"},
		{"no key", `{"entries":[{"value":1}]}`, nil, "key of 0 bytes"},
		{"long key", `{"entries":[{"key":"` + strings.Repeat("k", 257) + `","value":1}]}`, nil, "key of 257 bytes"},
		{"no value", `{"entries":[{"key":"x"}]}`, nil, "no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kvlog.Decode([]byte(tc.data))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestRefusesBadWrites(t *testing.T) {
	l := open(t, server(t))
	_, err := put(t, l, "", `1`, 0)
	require.ErrorContains(t, err, "key of 0 bytes")
	_, err = put(t, l, "k", `{`, 0)
	require.ErrorContains(t, err, "not a JSON value")
	_, err = put(t, l, "k", `null`, 0)
	require.ErrorContains(t, err, "not a JSON value")
	_, err = put(t, l, "k", `"`+fmt.Sprintf("%0300000d", 0)+`"`, 0)
	require.ErrorContains(t, err, "over the")
}

func TestCloseDeletesItsConsumer(t *testing.T) {
	url := server(t)
	js := jsFor(t, url)
	consumers := func() int {
		st, err := js.Stream(context.Background(), stream)
		require.NoError(t, err)
		return st.CachedInfo().State.Consumers
	}
	for range 3 {
		l := open(t, url)
		require.Equal(t, 1, consumers(), "an open log follows with one consumer")
		l.Close()
		require.Zero(t, consumers(), "a closed log leaves no consumer for the server to keep")
	}
}

func TestCloseFailsWaitingWrites(t *testing.T) {
	l := open(t, server(t))
	l.Close()
	_, err := put(t, l, "k", `1`, 0)
	require.ErrorIs(t, err, kvlog.ErrClosed)
}

// Values whose messages expired are forgotten, as a Log opened then would
// not read them; the others are kept.
func TestForgetsExpiredValues(t *testing.T) {
	_, url := testenv.Server(t)
	js := jsFor(t, url)
	ctx := context.Background()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject},
		Storage: jetstream.FileStorage, MaxAge: time.Second})
	require.NoError(t, err)
	l, err := kvlog.Open(ctx, js, kvlog.Options{Stream: stream, Subject: subject, PruneEvery: time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(l.Close)
	_, err = put(t, l, "old", `1`, 0)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return messages(t, url) == 0 }, 10*time.Second, 20*time.Millisecond)
	_, err = put(t, l, "new", `2`, 0)
	require.NoError(t, err)
	catchUp(t, l)
	v, rev := value(t, l, "old")
	require.Nil(t, v)
	require.Zero(t, rev)
	v, _ = value(t, l, "new")
	require.Equal(t, `2`, string(v))
}

// A process behind the log publishes expecting the sequence it read last:
// the server refuses the message, the process reads on to the sequence the
// server named, checks its writes again and publishes them.
func TestRefusedMessageReadsOn(t *testing.T) {
	url := server(t)
	a, b := open(t, url), open(t, url)
	release := b.Hold()
	defer release()
	rev, err := put(t, a, "x", `1`, 0)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		_, err := put(t, b, "y", `2`, 0)
		done <- err
	}()
	require.Eventually(t, func() bool { return b.Conflicts() == 1 }, 10*time.Second, 5*time.Millisecond,
		"b's message, expecting the log empty, was not refused")
	release()
	require.NoError(t, <-done, "y was not written since b read the log")
	v, got := value(t, b, "x")
	require.Equal(t, `1`, string(v))
	require.Equal(t, rev, got)
	require.Equal(t, int64(1), b.Conflicts())
	require.Equal(t, uint64(2), messages(t, url))
}

// A message appended by AppendMessage decodes to its entries, with keys
// that need escaping as with those that do not, and its id leads it.
func TestAppendMessageDecodes(t *testing.T) {
	es := []kvlog.Entry{
		{Key: "s-1/apply", Value: json.RawMessage(`{"execute":{"outcome":"ok","seq":1}}`)},
		{Key: "quote\"back\\slash<tag>&é\n", Value: json.RawMessage(`[1,"two"]`)},
	}
	data := kvlog.AppendMessage(nil, "NbU3j88k8WXdZJGjAHIKnY", es)
	require.True(t, json.Valid(data), "%s", data)
	require.True(t, strings.HasPrefix(string(data), `{"id":"NbU3j88k8WXdZJGjAHIKnY",`))
	got, err := kvlog.Decode(data)
	require.NoError(t, err)
	require.Equal(t, es, got)
}

// sink keeps what an allocation test makes from being optimised away.
var sink []byte

// AppendMessage takes the room for a message at once.
func TestAppendMessageAllocatesOnce(t *testing.T) {
	es := []kvlog.Entry{
		{Key: "s-1/apply", Value: json.RawMessage(`{"execute":{"outcome":"ok","seq":1}}`)},
		{Key: "s-2/apply", Value: json.RawMessage(`{"compensate":{"outcome":"ok","seq":2}}`)},
	}
	data := kvlog.AppendMessage(nil, "NbU3j88k8WXdZJGjAHIKnY", es)
	// One copy of the message, counted the same way (the race detector
	// adds its own allocations to both).
	once := testing.AllocsPerRun(100, func() { sink = append([]byte(nil), data...) })
	require.Equal(t, once, testing.AllocsPerRun(100, func() {
		sink = kvlog.AppendMessage(nil, "NbU3j88k8WXdZJGjAHIKnY", es)
	}))
}

// value returns key's value in l, and its revision, read from the server
// when l let it go.
func value(t *testing.T, l *kvlog.Log, key string) (json.RawMessage, uint64) {
	t.Helper()
	v, rev, err := l.Value(t.Context(), key)
	require.NoError(t, err)
	return v, rev
}

// TestValuesBeyondMaxValuesLetGo: a Log holding two values (by their
// number, or by their bytes: each value here is 7 bytes) lets the first
// written go, keeps its revision, and reads it from the server when asked;
// so does a Log that reads the same messages from another process. Each
// message is then deleted from the stream: a value let go is gone with
// it, a value held is not.
func TestValuesBeyondMaxValuesLetGo(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts kvlog.Options
	}{
		{"two values", kvlog.Options{MaxValues: 2}},
		{"16 bytes", kvlog.Options{MaxValueBytes: 16}},
	} {
		t.Run(tc.name, func(t *testing.T) { valuesLetGo(t, tc.opts) })
	}
}

func valuesLetGo(t *testing.T, opts kvlog.Options) {
	url := server(t)
	ctx := context.Background()
	openHolding := func() *kvlog.Log {
		o := opts
		o.Stream, o.Subject, o.Logger = stream, subject, testenv.Logger(t)
		l, err := kvlog.Open(ctx, jsFor(t, url), o)
		require.NoError(t, err)
		t.Cleanup(l.Close)
		return l
	}
	l := openHolding()
	for i, k := range []string{"a", "b", "c"} {
		_, err := put(t, l, k, fmt.Sprintf(`{"n":%d}`, i), 0)
		require.NoError(t, err)
	}
	_, err := put(t, l, "b", `{"n":4}`, 2)
	require.NoError(t, err, "b written again: its value at 4 is held, c's at 3 too")
	other := openHolding()
	for _, lg := range []*kvlog.Log{l, other} {
		v, rev := value(t, lg, "a")
		require.JSONEq(t, `{"n":0}`, string(v), "a, let go, read from the server")
		require.Equal(t, uint64(1), rev)
		require.Equal(t, uint64(1), lg.Rev("a"))
	}

	st, err := jsFor(t, url).Stream(ctx, stream)
	require.NoError(t, err)
	for seq := uint64(1); seq <= 4; seq++ {
		require.NoError(t, st.DeleteMsg(ctx, seq))
	}
	for _, lg := range []*kvlog.Log{l, other} {
		v, rev := value(t, lg, "a")
		require.Nil(t, v, "let go, and gone from the server")
		require.Zero(t, rev)
		v, _ = value(t, lg, "b")
		require.JSONEq(t, `{"n":4}`, string(v), "held")
		v, _ = value(t, lg, "c")
		require.JSONEq(t, `{"n":2}`, string(v), "held")
	}
}

// TestScanEndsWhereTheLogEnds: Scan reads to the message that was last
// when it began; if that message is gone by then (deleted, or the stream
// purged), the end of the log ends the scan rather than a wait for ever.
func TestScanEndsWhereTheLogEnds(t *testing.T) {
	url := server(t)
	l := open(t, url)
	for i := range 3 {
		_, err := put(t, l, fmt.Sprintf("k%d", i), `1`, 0)
		require.NoError(t, err)
	}
	js := jsFor(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var seqs []uint64
	require.NoError(t, kvlog.Scan(ctx, js, stream, subject, func(seq uint64, _ []kvlog.Entry, err error) {
		require.NoError(t, err)
		seqs = append(seqs, seq)
	}))
	require.Equal(t, []uint64{1, 2, 3}, seqs)

	// As if the last had been a fourth message, deleted since.
	seqs = nil
	require.NoError(t, kvlog.ScanTo(ctx, js, stream, subject, 4, func(seq uint64, _ []kvlog.Entry, _ error) { seqs = append(seqs, seq) }))
	require.Equal(t, []uint64{1, 2, 3}, seqs)

	// And with every message gone since.
	st, err := js.Stream(ctx, stream)
	require.NoError(t, err)
	require.NoError(t, st.Purge(ctx))
	seqs = nil
	require.NoError(t, kvlog.ScanTo(ctx, js, stream, subject, 3, func(seq uint64, _ []kvlog.Entry, _ error) { seqs = append(seqs, seq) }))
	require.Empty(t, seqs)
	require.NoError(t, ctx.Err())
}
