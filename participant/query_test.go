package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// TestQueriesAnsweredSideBySide sends an agent's query endpoint four
// queries at once, whose answers each wait until all four are being
// answered: they are, so every one comes back. One query at a time, the
// first would wait for the others for ever.
func TestQueriesAnsweredSideBySide(t *testing.T) {
	const n = 4
	var mu sync.Mutex
	answering := 0
	all := make(chan struct{})
	answer := func(ctx context.Context, req []byte, read func(keys []string, value func(i int) any) ([]bool, error)) any {
		if string(req) == `"probe"` {
			return "up"
		}
		mu.Lock()
		if answering++; answering == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-ctx.Done():
			return map[string]string{"error": "alone"}
		}
		var count int
		if found, err := read([]string{"count"}, func(int) any { return &count }); err != nil || !found[0] {
			return map[string]any{"error": fmt.Sprint("read: ", found, err)}
		}
		return map[string]any{"q": string(req), "count": count}
	}
	nc, _ := serveTill(t, answer)

	var wg sync.WaitGroup
	answers := make([]map[string]any, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			m, err := nc.Request("till.query", []byte(`"q"`), 10*time.Second)
			if errs[i] = err; err == nil {
				errs[i] = json.Unmarshal(m.Data, &answers[i])
			}
		})
	}
	wg.Wait()
	for i, a := range answers {
		require.NoError(t, errs[i])
		require.Equal(t, map[string]any{"q": `"q"`, "count": 7.0}, a)
	}
}

// TestGetAllReadsManyValues reads 1,100 keys of a role's state, some
// twice, some without a value, across the 1,024 of one request: each key
// that has a value is decoded into its own place, the others are left as
// they were and reported absent.
func TestGetAllReadsManyValues(t *testing.T) {
	_, url := testenv.Server(t)
	ctx := context.Background()
	store, err := participant.OpenStore(ctx, testenv.Connect(t, url), "till", true, 1)
	require.NoError(t, err)
	var keys []string
	for i := range 1100 {
		keys = append(keys, fmt.Sprintf("k%d", i))
		if i%3 != 0 {
			_, err := store.Init(ctx, keys[i], i)
			require.NoError(t, err)
		}
	}
	keys = append(keys, "k2", "k3") // again
	got := make([]int, len(keys))
	for i := range got {
		got[i] = -1
	}
	found, err := store.GetAll(ctx, keys, func(i int) any { return &got[i] })
	require.NoError(t, err)
	for i, key := range keys {
		var n int
		_, _ = fmt.Sscanf(key, "k%d", &n)
		require.Equal(t, n%3 != 0, found[i], key)
		if found[i] {
			require.Equal(t, n, got[i], key)
		} else {
			require.Equal(t, -1, got[i], key)
		}
	}

	found, err = store.GetAll(ctx, []string{"k0", "none"}, func(i int) any { return &got[i] })
	require.NoError(t, err)
	require.Equal(t, []bool{false, false}, found, "no value at all")
}

// TestQueriesRefuseHostileRequests: a query asking its answer on a subject
// of the role's own state gets no answer, so the state value stays as it
// was; one that is not UTF-8 is answered bad_request, unread.
func TestQueriesRefuseHostileRequests(t *testing.T) {
	answer := func(context.Context, []byte, func(keys []string, value func(i int) any) ([]bool, error)) any {
		return map[string]int{"count": 7}
	}
	nc, store := serveTill(t, answer)
	ctx := context.Background()

	require.NoError(t, nc.PublishRequest("till.query", messages.DataSubject("till", "count"), []byte(`{}`)))
	m, err := nc.Request("till.query", []byte("\xff\xfe"), 5*time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{"v":1,"error":{"code":"bad_request","message":"request is not valid UTF-8"}}`, string(m.Data))
	var count int
	seq, err := store.Get(ctx, "count", &count)
	require.NoError(t, err)
	require.Equal(t, uint64(1), seq, "the count's value is the one Init stored")
	require.Equal(t, 7, count)
}

// serveTill serves answer on "till.query" for the role till, whose store
// holds count 7, until the test ends, once a "probe" query is answered;
// it returns the connection and the store.
func serveTill(t *testing.T, answer participant.QueryFunc) (*nats.Conn, *participant.Store) {
	t.Helper()
	_, url := testenv.Server(t)
	return serveTillOn(t, url, answer)
}

// serveTillOn is serveTill on the server at url.
func serveTillOn(t *testing.T, url string, answer participant.QueryFunc) (*nats.Conn, *participant.Store) {
	t.Helper()
	nc := testenv.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := participant.OpenStore(ctx, nc, "till", true, 1)
	require.NoError(t, err)
	_, err = store.Init(ctx, "count", 7)
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- participant.ServeQueries(ctx, nc, "till", "till.query", answer) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-served)
	})
	require.Eventually(t, func() bool {
		_, err := nc.Request("till.query", []byte(`"probe"`), 100*time.Millisecond)
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the endpoint is up")
	return nc, store
}

// TestQueryAnswerTooLargeForTheServer: an answer the server would not
// carry (over its 64 KiB payload limit here) is answered too_large,
// saying its size, not left unanswered for the asker to wait out.
func TestQueryAnswerTooLargeForTheServer(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536\n")
	nc, _ := serveTillOn(t, url, func(_ context.Context, req []byte, _ func([]string, func(int) any) ([]bool, error)) any {
		if string(req) == `"probe"` {
			return "ok"
		}
		return strings.Repeat("x", 70_000)
	})
	m, err := nc.Request("till.query", []byte(`"big"`), 10*time.Second)
	require.NoError(t, err)
	require.JSONEq(t, `{"v":1,"error":{"code":"too_large","message":"the answer takes 70002 bytes, more than the 64512 the server's payload limit leaves it: ask for less at once"}}`, string(m.Data))
}

// TestQueryAnswerThatDoesNotEncode: a model's answer that JSON cannot
// encode is answered internal, saying so, not left unanswered.
func TestQueryAnswerThatDoesNotEncode(t *testing.T) {
	nc, _ := serveTill(t, func(context.Context, []byte, func([]string, func(int) any) ([]bool, error)) any {
		return map[string]any{"ratio": math.NaN()}
	})
	m, err := nc.Request("till.query", []byte(`"q"`), 10*time.Second)
	require.NoError(t, err)
	var resp struct {
		Error *messages.WireError `json:"error"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &resp))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeInternal, resp.Error.Code)
	require.Contains(t, resp.Error.Message, "the answer does not encode")
}

// TestQueryAnswerThatPanics: a model's answer that panics is answered
// internal, naming where, and the agent answers the next query: one
// query never stops the process.
func TestQueryAnswerThatPanics(t *testing.T) {
	nc, _ := serveTill(t, func(_ context.Context, req []byte, _ func([]string, func(int) any) ([]bool, error)) any {
		if string(req) == `"boom"` {
			var m map[string]int
			m["x"] = 1 // assignment to entry in nil map
		}
		return "ok"
	})
	m, err := nc.Request("till.query", []byte(`"boom"`), 10*time.Second)
	require.NoError(t, err)
	var resp struct {
		Error *messages.WireError `json:"error"`
	}
	require.NoError(t, json.Unmarshal(m.Data, &resp))
	require.NotNil(t, resp.Error, string(m.Data))
	require.Equal(t, messages.CodeInternal, resp.Error.Code)
	require.Contains(t, resp.Error.Message, "the query's answer panicked at query_test.go:")
	require.Contains(t, resp.Error.Message, "assignment to entry in nil map")
	m, err = nc.Request("till.query", []byte(`"q"`), 10*time.Second)
	require.NoError(t, err)
	require.Equal(t, `"ok"`, string(m.Data))
}
