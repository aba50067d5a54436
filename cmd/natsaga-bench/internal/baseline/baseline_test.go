package baseline_test

import (
	"context"
	"encoding/json"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/cmd/natsaga-bench/internal/baseline"
	"github.com/natsaga/natsaga/internal/testenv"
)

// TestImportsNoNatsaga checks that the baseline is bare: nats.go, its
// jetstream package and the standard library only.
func TestImportsNoNatsaga(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			if !strings.Contains(strings.Split(path, "/")[0], ".") {
				continue // standard library
			}
			require.Contains(t, []string{"github.com/nats-io/nats.go", "github.com/nats-io/nats.go/jetstream"}, path,
				"%s: the baseline may use only nats.go and the standard library", name)
		}
	}
}

// TestSagasComplete runs sagas through the baseline and checks each went
// through its five stored transitions and its three steps.
func TestSagasComplete(t *testing.T) {
	_, url := testenv.Server(t)
	ctx, cancel := context.WithCancel(context.Background())
	co, err := baseline.NewCoordinator(testenv.Connect(t, url), baseline.CoordinatorOptions{Workers: 8})
	require.NoError(t, err)
	errc := make(chan error, 2)
	go func() { errc <- co.Run(ctx) }()
	go func() {
		errc <- baseline.RunAgent(ctx, testenv.Connect(t, url), baseline.AgentOptions{Name: "a1", Concurrency: 4})
	}()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-errc)
		require.NoError(t, <-errc)
	})
	select {
	case <-co.Ready():
	case err := <-errc:
		t.Fatal(err)
	}

	nc := testenv.Connect(t, url)
	done := make(chan baseline.Event, 16)
	_, err = nc.Subscribe(baseline.EventSubject, func(m *nats.Msg) {
		var ev baseline.Event
		if json.Unmarshal(m.Data, &ev) == nil {
			done <- ev
		}
	})
	require.NoError(t, err)
	ids := map[string]bool{}
	for i := range 5 {
		req, _ := json.Marshal(baseline.StartRequest{Context: baseline.Context{"n": json.RawMessage(strconv.Itoa(i))}})
		m, err := nc.Request(baseline.StartSubject, req, 5*time.Second)
		require.NoError(t, err)
		var resp baseline.StartResponse
		require.NoError(t, json.Unmarshal(m.Data, &resp))
		require.Empty(t, resp.Error)
		ids[resp.SagaID] = true
	}
	for range ids {
		select {
		case ev := <-done:
			require.True(t, ids[ev.SagaID], "event for an unknown saga %s", ev.SagaID)
			require.Equal(t, "completed", ev.Status)
		case <-time.After(30 * time.Second):
			// Generous: the whole suite shares two cores with this test,
			// and a reply or command the server was slow to store is sent
			// again only after the publish's own timeout.
			t.Fatal("a saga did not complete")
		}
	}

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), baseline.Bucket)
	require.NoError(t, err)
	for id := range ids {
		e, err := kv.Get(context.Background(), id)
		require.NoError(t, err)
		var st struct {
			Status  string                     `json:"status"`
			Context map[string]json.RawMessage `json:"context"`
		}
		require.NoError(t, json.Unmarshal(e.Value(), &st))
		require.Equal(t, "completed", st.Status)
		for _, k := range []string{"n", "s1_done", "s2_done", "s3_done"} {
			require.Contains(t, st.Context, k)
		}
	}
	// The bucket's stream holds one message per write: five per saga.
	st, err := js.Stream(context.Background(), "KV_"+baseline.Bucket)
	require.NoError(t, err)
	info, err := st.Info(context.Background())
	require.NoError(t, err)
	require.Equal(t, uint64(5*len(ids)), info.State.LastSeq)
}
