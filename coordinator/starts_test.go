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
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "a", Status: string(saga.InProgress), Existed: true}, resp.Results[4], "the same id again: the same saga")
	require.Equal(t, string(saga.InProgress), resp.Results[5].Status)
	require.NotEmpty(t, resp.Results[5].SagaID, "an id made by the coordinator")
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "old", Status: string(old), Existed: true}, resp.Results[6], "ended before the restart: from the bucket")
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "recent", Status: string(recent), Existed: true}, resp.Results[7], "ended since: from the bucket")
	// An id is one saga's: a start of another type with it is refused,
	// whether the saga ended or is active; its type by name is its type.
	require.Equal(t, &messages.WireError{Code: messages.CodeConflict,
		Message: `start old as "subsidy": saga id taken by a saga of another type ("insurance")`}, resp.Results[8].Error)
	require.Equal(t, &messages.WireError{Code: messages.CodeConflict,
		Message: `start a as "insurance": saga id taken by a saga of another type ("subsidy")`}, resp.Results[9].Error)
	require.Equal(t, messages.StartResponse{V: 1, SagaID: "old", Status: string(old), Existed: true}, resp.Results[10])

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

// TestStartBatchAnswerFits: a batch's answer always reaches the client, so
// the ids of the sagas it started are never lost. Under a 64 KiB payload
// limit: refusals whose messages would overflow the answer have them cut;
// starts whose results would not fit are answered busy, not started, and
// go through when sent again; a batch of more starts than the answer could
// hold is refused whole, with nothing started.
func TestStartBatchAnswerFits(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_payload: 65536\n")
	nc := testenv.Connect(t, url)
	long := strings.Repeat("n", 60)
	var defs []saga.Definition
	for i := range 8 {
		name := fmt.Sprintf("%s%d", long, i)
		defs = append(defs, saga.Definition{Name: name, Subject: name, Steps: []saga.Step{{Name: "s", Role: "clerk"}}})
	}
	defs = append(defs, saga.Definition{Name: "j", Subject: "j", Steps: []saga.Step{{Name: "s", Role: "clerk"}}})
	testenv.Coordinator(t, url, defs)
	most := messages.MaxStartsFor(nc.MaxPayload())
	require.Equal(t, 682, most)
	send := func(starts []messages.BatchedStart) messages.StartBatchResponse {
		t.Helper()
		var resp messages.StartBatchResponse
		request(t, nc, messages.StartBatchSubject, mustJSON(t, messages.StartBatch{V: 1, Starts: starts}), &resp)
		return resp
	}

	// 20 starts without an id, then unknown types whose not_found
	// messages, which name every known type, could not all fit.
	starts := make([]messages.BatchedStart, most)
	for i := range starts {
		starts[i] = messages.BatchedStart{Saga: "nosuch"}
		if i < 20 {
			starts[i] = messages.BatchedStart{Saga: defs[0].Subject}
		}
	}
	resp := send(starts)
	require.Nil(t, resp.Error)
	require.Len(t, resp.Results, most)
	for i, r := range resp.Results {
		if i < 20 {
			require.Nil(t, r.Error)
			require.Equal(t, saga.InProgress, testenv.Status(t, nc, r.SagaID).Status, "started and answered")
			continue
		}
		require.Equal(t, messages.CodeNotFound, r.Error.Code)
		require.Equal(t, "message cut: the answer had no room for it", r.Error.Message)
	}

	// Unknown types, then 300 ids of 64 bytes: the results of all would
	// not fit. Those that do are started; the others are busy, and start
	// when sent again.
	mixed := make([]messages.BatchedStart, most)
	for i := range mixed {
		mixed[i] = messages.BatchedStart{Saga: "nosuch"}
		if i >= most-300 {
			mixed[i] = messages.BatchedStart{Saga: "j", SagaID: fmt.Sprintf("%s%04d", long, i)}
		}
	}
	started := map[string]bool{}
	for pending := mixed; len(pending) > 0; {
		resp := send(pending)
		require.Nil(t, resp.Error)
		var busy []messages.BatchedStart
		for i, r := range resp.Results {
			switch {
			case pending[i].Saga == "nosuch":
				require.Equal(t, messages.CodeNotFound, r.Error.Code)
			case r.Error != nil:
				require.Equal(t, messages.CodeBusy, r.Error.Code, r.Error.Message)
				busy = append(busy, pending[i])
			default:
				require.Equal(t, pending[i].SagaID, r.SagaID)
				started[r.SagaID] = true
			}
		}
		if len(pending) == most {
			require.NotEmpty(t, busy, "no room for some")
		}
		require.Less(t, len(busy), len(pending), "some start each time")
		pending = busy
	}
	require.Len(t, started, 300)
	require.Equal(t, 320, testenv.Summary(t, nc).Active)

	resp = send(append(starts, messages.BatchedStart{Saga: "j"}))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code, resp.Error.Message)
	require.Empty(t, resp.Results)
	require.Equal(t, 320, testenv.Summary(t, nc).Active, "nothing started")
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
