package participant_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/participant"
)

// TestQueriesAnsweredSideBySide sends an agent's query endpoint four
// queries at once, whose answers each wait until all four are being
// answered: they are, so every one comes back. One query at a time, the
// first would wait for the others for ever.
func TestQueriesAnsweredSideBySide(t *testing.T) {
	const n = 4
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := participant.OpenStore(ctx, nc, "till", true, 1)
	require.NoError(t, err)
	_, err = store.Init(ctx, "count", 7)
	require.NoError(t, err)

	var mu sync.Mutex
	answering := 0
	all := make(chan struct{})
	answer := func(ctx context.Context, req []byte, read func(key string, v any) (bool, error)) any {
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
		if ok, err := read("count", &count); err != nil || !ok {
			return map[string]any{"error": fmt.Sprint("read: ", ok, err)}
		}
		return map[string]any{"q": string(req), "count": count}
	}
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
