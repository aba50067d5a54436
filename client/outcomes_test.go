package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestScanStored reads the saga bucket in one pass: the sagas keep
// accepts, each as Status returns it; a scan stopped early leaves the next
// one free; a value that is not the saga its key names is an error, unless
// keep refuses its key, since then it is never decoded.
func TestScanStored(t *testing.T) {
	c := newSystem(t, rejecting)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ids := []string{"a", "b", "c"}
	for _, id := range ids {
		_, err := c.Start(ctx, client.Start{Saga: "greet", ID: id})
		require.NoError(t, err)
	}
	want := map[string]saga.Execution{}
	for _, id := range ids {
		testenv.WaitStatus(t, c.Conn(), id, saga.RolledBack)
		x, err := c.Status(ctx, id)
		require.NoError(t, err)
		want[id] = x
	}
	delete(want, "b")

	// The outcome log of every saga but b is a's and c's.
	var log bytes.Buffer
	digest, n, err := c.WriteOutcomesOf(ctx, &log, func(id string) bool { return id != "b" })
	require.NoError(t, err)
	require.Equal(t, 2, n)
	wantLog, wantDigest, err := saga.OutcomeLog([]saga.Execution{want["a"], want["c"]})
	require.NoError(t, err)
	require.Equal(t, string(wantLog), log.String())
	require.Equal(t, wantDigest, digest)

	got := map[string]saga.Execution{}
	for x, err := range c.ScanStored(ctx, func(id string) bool { return id != "b" }) {
		require.NoError(t, err)
		got[x.ID] = x
	}
	require.Equal(t, want, got)

	// More sagas than the watcher holds undelivered: stopped at the first,
	// the scan returns, and so does the next.
	js, err := jetstream.New(c.Conn())
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	require.NoError(t, err)
	for i := range 300 {
		x := want["a"]
		x.ID = fmt.Sprintf("k%03d", i)
		data, err := json.Marshal(x)
		require.NoError(t, err)
		_, err = kv.Put(ctx, messages.SagaKey(x.ID), data)
		require.NoError(t, err)
	}
	n = 0
	for _, err := range c.ScanStored(ctx, nil) {
		require.NoError(t, err)
		n++
		break
	}
	require.Equal(t, 1, n)
	all, err := c.Stored(ctx, false)
	require.NoError(t, err)
	require.Len(t, all, 303)

	data, err := json.Marshal(want["a"])
	require.NoError(t, err)
	_, err = kv.Put(ctx, messages.SagaKey("z"), data)
	require.NoError(t, err)
	_, err = c.Stored(ctx, false)
	require.ErrorIs(t, err, client.ErrBadStored)
	require.ErrorContains(t, err, `holds saga "a"`)
	_, err = kv.Put(ctx, messages.SagaKey("y"), []byte("{"))
	require.NoError(t, err)
	n, err = scan(ctx, c, func(id string) bool { return id != "y" && id != "z" })
	require.NoError(t, err)
	require.Equal(t, 303, n)
	_, err = scan(ctx, c, func(id string) bool { return id == "y" })
	require.ErrorIs(t, err, client.ErrBadStored)

	cancelled, stop := context.WithCancel(ctx)
	stop()
	_, err = scan(cancelled, c, nil)
	require.ErrorIs(t, err, context.Canceled)
}

// TestScanKeepsTheOrderRead reads more sagas than a scan decodes at once
// on every core: they come in the order the bucket holds them, and a value
// that does not decode ends the scan right after the sagas stored before
// it, as a scan that decoded one value at a time would.
func TestScanKeepsTheOrderRead(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, kv := sagaBucket(t)
	const n, bad = 5000, 4321
	var want []string
	for i := range n {
		x := saga.Execution{ID: fmt.Sprintf("s%04d", n-i), Saga: "greet", Status: saga.Completed}
		data, err := json.Marshal(x)
		require.NoError(t, err)
		if i == bad {
			data = []byte(`{"saga_id":`)
		} else if i < bad {
			want = append(want, x.ID)
		}
		_, err = kv.Put(ctx, messages.SagaKey(x.ID), data)
		require.NoError(t, err)
	}
	c, err := client.New(nc, client.Options{})
	require.NoError(t, err)
	var got []string
	var last error
	for x, err := range c.ScanEnded(ctx, nil) {
		if err != nil {
			last = err
			break
		}
		got = append(got, x.ID)
	}
	require.Equal(t, want, got)
	require.ErrorIs(t, last, client.ErrBadStored)
	require.ErrorContains(t, last, fmt.Sprintf("s%04d", n-bad))
}

// TestScanEndsWithItsContext: a scan whose ctx ends yields no saga after,
// though it has many decoded: its next value is ctx's error.
func TestScanEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, kv := sagaBucket(t)
	for i := range 2000 {
		data, err := json.Marshal(saga.Execution{ID: fmt.Sprintf("s%04d", i), Saga: "greet", Status: saga.Completed})
		require.NoError(t, err)
		_, err = kv.Put(ctx, messages.SagaKey(fmt.Sprintf("s%04d", i)), data)
		require.NoError(t, err)
	}
	c, err := client.New(nc, client.Options{})
	require.NoError(t, err)
	scanCtx, stop := context.WithCancel(ctx)
	defer stop()
	n := 0
	var last error
	for _, err := range c.ScanEnded(scanCtx, nil) {
		if err != nil {
			last = err
			break
		}
		if n++; n == 10 {
			stop()
		}
	}
	require.Equal(t, 10, n, "no saga after ctx ended")
	require.ErrorIs(t, last, context.Canceled)
}

// sagaBucket runs a server holding the saga bucket alone, and returns a
// connection to it and the bucket.
func sagaBucket(t *testing.T) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	nc, js := testenv.JetStream(t)
	kv, err := js.CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: messages.SagaBucket})
	require.NoError(t, err)
	return nc, kv
}

// scan counts the sagas c.ScanStored yields with keep, and returns the
// error that ends it.
func scan(ctx context.Context, c *client.Client, keep func(string) bool) (int, error) {
	n := 0
	for _, err := range c.ScanStored(ctx, keep) {
		if err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
