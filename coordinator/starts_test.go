package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// endSaga starts an insurance claim with id, and returns its status once
// the household and insurer agents have ended it.
func endSaga(t *testing.T, url, id string) saga.Status {
	t.Helper()
	nc := testenv.Connect(t, url)
	var resp messages.StartResponse
	testenv.Request(t, nc, messages.StartSubject(flood.Insurance), messages.StartRequest{V: messages.Version, SagaID: id,
		Context: messages.Context{}.MustSet(flood.KeyHousehold, "h-"+id)}, &resp)
	require.Nil(t, resp.Error)
	var x saga.Execution
	require.Eventually(t, func() bool {
		x = testenv.Status(t, nc, id)
		return x.Status.Terminal()
	}, 20*time.Second, 5*time.Millisecond)
	return x.Status
}

// floodAgents runs a household and an insurer agent.
func floodAgents(t *testing.T, url string) {
	t.Helper()
	for _, role := range []string{flood.Household, flood.Insurer} {
		steps, err := flood.Steps(role)
		require.NoError(t, err)
		opts := participant.Options{Role: role, Steps: steps, Serial: flood.Serial(role)}
		if role == flood.Insurer {
			opts.Init = flood.InitLedger(1_000_000)
		}
		testenv.Agent(t, url, opts)
	}
}

// TestStartBatchAnswersEachStart sends one batch holding good starts, bad
// ones (a saga type or id that is not a token, an unknown saga type), a
// repeated id, a saga that ended before the
// coordinator restarted (only in the bucket) and one that ended since it
// did (still in its memory): each is answered at its place as a start
// alone would be, and the good ones are stored.
func TestStartBatchAnswersEachStart(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	first, stop := context.WithCancel(context.Background())
	done := runUntil(t, first, url, slog.New(slog.DiscardHandler))
	floodAgents(t, url)
	old := endSaga(t, url, "old")
	stop()
	<-done
	ctx, stop2 := context.WithCancel(context.Background())
	defer stop2()
	runUntil(t, ctx, url, slog.New(slog.DiscardHandler))
	recent := endSaga(t, url, "recent")

	before := testenv.Summary(t, nc).Active
	household := messages.Context{}.MustSet(flood.KeyHousehold, "h-1")
	starts := []messages.BatchedStart{
		{Saga: flood.Subsidy, SagaID: "a", Context: household},
		{Saga: "bad type!", Context: household},
		{Saga: "nope", SagaID: "n", Context: household},
		{Saga: flood.Subsidy, SagaID: "x y", Context: household},
		{Saga: flood.Subsidy, SagaID: "a", Context: household},
		{Saga: flood.Subsidy, Context: household},
		{Saga: flood.Insurance, SagaID: "old", Context: household},
		{Saga: flood.Insurance, SagaID: "recent", Context: household},
		{Saga: flood.Subsidy, SagaID: "old", Context: household},
		{Saga: flood.Insurance, SagaID: "a", Context: household},
		{Saga: "insurance_claim", SagaID: "old", Context: household},
	}
	var resp messages.StartBatchResponse
	testenv.Request(t, nc, messages.StartBatchSubject, messages.StartBatch{V: messages.Version, Starts: starts}, &resp)
	require.Nil(t, resp.Error)
	require.Len(t, resp.Results, len(starts))
	code := func(i int) string {
		if e := resp.Results[i].Error; e != nil {
			return e.Code
		}
		return ""
	}
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "a", Status: string(saga.InProgress)}, resp.Results[0])
	require.Equal(t, messages.CodeBadRequest, code(1), "a saga type that is not a token")
	require.Equal(t, messages.CodeNotFound, code(2), "an unknown saga type")
	require.Equal(t, messages.CodeBadRequest, code(3), "a saga id that is not a token")
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "a", Status: string(saga.InProgress)}, resp.Results[4], "the same id again: the same saga")
	require.Equal(t, string(saga.InProgress), resp.Results[5].Status)
	require.NotEmpty(t, resp.Results[5].SagaID, "an id made by the coordinator")
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "old", Status: string(old)}, resp.Results[6], "ended before the restart: from the bucket")
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "recent", Status: string(recent)}, resp.Results[7], "ended since: from the bucket")
	// An id is one saga's: a start of another type with it is refused,
	// whether the saga ended or is active; its type by name is its type.
	require.Equal(t, &messages.WireError{Code: messages.CodeConflict,
		Message: `start old as "subsidy": saga id taken by a saga of another type ("insurance")`}, resp.Results[8].Error)
	require.Equal(t, &messages.WireError{Code: messages.CodeConflict,
		Message: `start a as "insurance": saga id taken by a saga of another type ("subsidy")`}, resp.Results[9].Error)
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "old", Status: string(old)}, resp.Results[10])

	for _, id := range []string{"a", resp.Results[5].SagaID} {
		require.Equal(t, saga.InProgress, testenv.Status(t, nc, id).Status, "%s stored", id)
	}
	require.Equal(t, 2, testenv.Summary(t, nc).Active-before, "two sagas started, no more")
}

// TestStartBatchRefusedWhole sends batches that cannot be looked at: each is
// refused whole, bad_request, with no result, and the coordinator serves on.
func TestStartBatchRefusedWhole(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	testenv.Coordinator(t, url, flood.Definitions())
	one := messages.BatchedStart{Saga: flood.Subsidy, Context: messages.Context{}}
	many := make([]messages.BatchedStart, messages.MaxStarts+1)
	for i := range many {
		many[i] = one
	}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not JSON", []byte("{")},
		{"starts not a list", []byte(`{"v":1,"starts":{}}`)},
		{"another version", mustJSON(t, messages.StartBatch{V: 2, Starts: []messages.BatchedStart{one}})},
		{"no start", mustJSON(t, messages.StartBatch{V: 1})},
		{"over 256 KiB", mustJSON(t, messages.StartBatch{V: 1, Starts: []messages.BatchedStart{
			{Saga: flood.Subsidy, Context: messages.Context{}.MustSet("pad", strings.Repeat("x", 300<<10))}}})},
		{fmt.Sprintf("%d starts", len(many)), mustJSON(t, messages.StartBatch{V: 1, Starts: many})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var resp messages.StartBatchResponse
			request(t, nc, messages.StartBatchSubject, tc.data, &resp)
			require.NotNil(t, resp.Error)
			require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
			require.Empty(t, resp.Results)
		})
	}
	require.Zero(t, testenv.Summary(t, nc).Active, "nothing started")
	var resp messages.StartBatchResponse
	request(t, nc, messages.StartBatchSubject, mustJSON(t, messages.StartBatch{V: 1, Starts: []messages.BatchedStart{one}}), &resp)
	require.Nil(t, resp.Error)
	require.Equal(t, string(saga.InProgress), resp.Results[0].Status)
}

// TestDeletedKeys: a key of the saga bucket deleted by an operator leaves
// a marker. A start naming a deleted saga's id is refused, since its
// agents' records could answer for the new saga, unless that saga still
// runs; and a saga whose key was deleted while it ran (a marker where it
// had no value yet) is stored when it ends, over the marker, not refused
// for ever as another writer's.
func TestDeletedKeys(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	opts := coordinator.Options{Definitions: flood.Definitions(), Logger: testenv.Logger(t)}
	stop := runUntilStopped(t, url, opts)
	start := func(id string) *messages.WireError {
		var resp messages.StartResponse
		testenv.Request(t, nc, messages.StartSubject(flood.Insurance), messages.StartRequest{V: messages.Version, SagaID: id,
			Context: messages.Context{}.MustSet(flood.KeyHousehold, "h-"+id)}, &resp)
		return resp.Error
	}
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	kv, err := js.KeyValue(context.Background(), messages.SagaBucket)
	require.NoError(t, err)

	// Held: no agent runs yet. Its key is deleted before it has a value.
	require.Nil(t, start("held"))
	require.NoError(t, kv.Delete(context.Background(), messages.SagaKey("held")))
	require.Nil(t, start("held"), "a start sent again of a saga that runs is answered with it")
	floodAgents(t, url)
	testenv.WaitStatus(t, nc, "held", saga.RolledBack) // no damage: under the deductible
	require.Eventually(t, func() bool {
		e, err := kv.Get(context.Background(), messages.SagaKey("held"))
		return err == nil && e != nil
	}, 10*time.Second, 5*time.Millisecond, "the end of held is stored over the marker")

	// Ended, then deleted; a coordinator started since does not hold it.
	require.Equal(t, saga.RolledBack, endSaga(t, url, "gone"))
	require.NoError(t, kv.Delete(context.Background(), messages.SagaKey("gone")))
	stop()
	stop = runUntilStopped(t, url, opts)
	defer stop()
	refused := start("gone")
	require.NotNil(t, refused)
	require.Equal(t, messages.CodeConflict, refused.Code)
	require.Equal(t, "start gone: the saga id was a saga's whose state was deleted or has expired, and whose agents' records may still answer for it: use another id", refused.Message)
	require.Equal(t, saga.RolledBack, endSaga(t, url, "new"), "the coordinator runs on")
}
