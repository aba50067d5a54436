package coordinator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
)

// answerSink subscribes to replies under one prefix, so that a test can
// send many requests at once and read each answer as it comes.
type answerSink struct {
	prefix string
	sub    *nats.Subscription
}

func newAnswerSink(t *testing.T, nc *nats.Conn) *answerSink {
	t.Helper()
	prefix := nc.NewInbox()
	sub, err := nc.SubscribeSync(prefix + ".*")
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return &answerSink{prefix: prefix, sub: sub}
}

// send sends data on subject, answered to the sink under the reply i.
func (s *answerSink) send(t *testing.T, nc *nats.Conn, subject string, data []byte, i int) {
	t.Helper()
	require.NoError(t, nc.PublishRequest(subject, fmt.Sprintf("%s.%d", s.prefix, i), data))
}

// next returns the next answer's reply subject and error (nil: none).
func (s *answerSink) next(t *testing.T) (string, *messages.WireError) {
	t.Helper()
	m, err := s.sub.NextMsg(10 * time.Second)
	require.NoError(t, err, "a request was not answered")
	var a struct {
		Error *messages.WireError `json:"error"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &a), "answer %s", m.Data)
	return m.Subject, a.Error
}

// readGoroutines returns the stacks of the goroutines that run one of the
// coordinator's reads of the bucket for a request.
func readGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var reads []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "coordinator.(*bucketReads).start.func") {
			reads = append(reads, g)
		}
	}
	return reads
}

// runHooked runs a coordinator of the flood sagas whose reads of the
// bucket call hook first, until the test ends, and waits until it is
// ready. Run's error comes on the channel returned.
func runHooked(t *testing.T, url string, hook func(context.Context)) (*coordinator.Coordinator, <-chan error) {
	t.Helper()
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions()})
	require.NoError(t, err)
	coordinator.SetReadHook(c, hook)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, receive(t, done, "Run to return"))
	})
	receive(t, c.Ready(), "the coordinator to be ready")
	return c, done
}

// TestRunWaitsForBucketReads stops a coordinator while a status request
// reads the bucket: the stop cancels the read, Run returns only once the
// read has returned, no read's goroutine is left, and the request is
// answered busy, to be asked again of the next coordinator.
func TestRunWaitsForBucketReads(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	c, err := coordinator.New(testenv.Connect(t, url), coordinator.Options{Definitions: flood.Definitions()})
	require.NoError(t, err)
	entered := make(chan struct{}, 1)
	stopped := make(chan struct{})
	var early atomic.Bool
	coordinator.SetReadHook(c, func(ctx context.Context) {
		entered <- struct{}{}
		<-ctx.Done()
		// The read takes a moment to return once cancelled, as a read of
		// a loaded server may: Run must wait for it all the same.
		select {
		case <-stopped:
			early.Store(true)
		case <-time.After(500 * time.Millisecond):
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := c.Run(ctx)
		close(stopped)
		done <- err
	}()
	receive(t, c.Ready(), "the coordinator to be ready")

	// A saga the coordinator does not hold is looked for in the bucket.
	answers := newAnswerSink(t, nc)
	answers.send(t, nc, messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: "gone"}), 0)
	receive(t, entered, "the status request's read of the bucket")
	cancel()
	require.NoError(t, receive(t, done, "Run to return"))
	require.False(t, early.Load(), "Run returned while a read of the bucket was in flight")
	require.Empty(t, readGoroutines(), "a read of the bucket outlived Run")
	_, werr := answers.next(t)
	require.NotNil(t, werr)
	require.Equal(t, messages.CodeBusy, werr.Code, werr.Message)
	require.Contains(t, werr.Message, "term ended")
}

// TestLostLeaseCutsBucketReads takes a coordinator's lease from it while a
// status request reads the bucket: the term that ends cancels the read,
// whose request is answered busy, and the coordinator stands by, then
// serves again, bucket reads included, once the lease is free.
func TestLostLeaseCutsBucketReads(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	entered := make(chan struct{}, 1)
	var held atomic.Bool
	c, done := runHooked(t, url, func(ctx context.Context) {
		if held.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-ctx.Done()
		}
	})

	answers := newAnswerSink(t, nc)
	answers.send(t, nc, messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: "gone"}), 0)
	receive(t, entered, "the status request's read of the bucket")
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), messages.SagaBucket)
	require.NoError(t, err)
	_, err = kv.Put(context.Background(), messages.LeaseKey, []byte(`{"id":"another coordinator"}`))
	require.NoError(t, err)

	_, werr := answers.next(t)
	require.NotNil(t, werr)
	require.Equal(t, messages.CodeBusy, werr.Code, werr.Message)
	require.Contains(t, werr.Message, "term ended")
	require.Eventually(t, func() bool { return !c.Active() }, 10*time.Second, 10*time.Millisecond, "the coordinator does not stand by")
	select {
	case err := <-done:
		t.Fatalf("Run returned after a lost lease: %v", err)
	default:
	}

	require.NoError(t, kv.Delete(context.Background(), messages.LeaseKey))
	require.Eventually(t, c.Active, 10*time.Second, 10*time.Millisecond, "the coordinator does not take the lease again")
	var resp messages.StatusResponse
	request(t, nc, messages.StatusSubject, mustJSON(t, messages.StatusRequest{V: 1, SagaID: "gone"}), &resp)
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeNotFound, resp.Error.Code, resp.Error.Message)
}

// TestBucketReadsFlood holds the reads of the bucket in flight and sends
// more requests that need one than the limit allows: those beyond it are
// answered busy at once, saying which limit, and once the reads go on the
// others are answered too. Every request gets exactly one answer.
func TestBucketReadsFlood(t *testing.T) {
	for _, tc := range []struct {
		name    string
		subject string
		request any
		limit   int
		busy    string
		after   string // the code the held requests are answered with; "" for none
	}{
		{"lists of finished sagas", messages.ListSubject, messages.ListRequest{V: 1, Status: "completed"},
			coordinator.MaxFinishedLists, fmt.Sprintf("list completed: %d lists of finished sagas at once, the limit; ask again", coordinator.MaxFinishedLists), ""},
		{"status of sagas not in memory", messages.StatusSubject, messages.StatusRequest{V: 1, SagaID: "gone"},
			coordinator.MaxBucketReads, fmt.Sprintf("%d reads of the bucket at once, the limit; ask again", coordinator.MaxBucketReads), messages.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, url := testenv.Server(t)
			nc := testenv.Connect(t, url)
			n := tc.limit + 16
			entered := make(chan struct{}, n)
			release := make(chan struct{})
			runHooked(t, url, func(ctx context.Context) {
				entered <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
			})

			answers := newAnswerSink(t, nc)
			data := mustJSON(t, tc.request)
			for i := range n {
				answers.send(t, nc, tc.subject, data, i)
			}
			for range tc.limit {
				receive(t, entered, "a read of the bucket")
			}
			seen := map[string]bool{}
			answer := func() *messages.WireError {
				reply, werr := answers.next(t)
				require.False(t, seen[reply], "%s answered twice", reply)
				seen[reply] = true
				return werr
			}
			// The held reads cannot answer: the first answers are the
			// requests refused.
			for range n - tc.limit {
				werr := answer()
				require.NotNil(t, werr)
				require.Equal(t, messages.CodeBusy, werr.Code, werr.Message)
				require.Contains(t, werr.Message, tc.busy)
			}
			require.Empty(t, entered, "a read started beyond the limit")
			close(release)
			for range tc.limit {
				werr := answer()
				if tc.after == "" {
					require.Nil(t, werr)
				} else {
					require.NotNil(t, werr)
					require.Equal(t, tc.after, werr.Code, werr.Message)
				}
			}
			require.Len(t, seen, n)
		})
	}
}
