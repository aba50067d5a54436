package coordinator_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestAbortRollsBackAStuckSaga: a saga whose second step is never
// answered is aborted by an operator: the step in flight and the one
// completed are compensated, in that order, and it ends rolled back with
// the reason. An abort of a saga compensating already changes nothing, and
// those of a finished saga, of an unknown one and malformed ones are
// refused with their codes.
func TestAbortRollsBackAStuckSaga(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	obs := &endings{finished: map[string]int{}}
	testenv.CoordinatorWith(t, url, coordinator.Options{Definitions: parseDefs(t, jobV1), Observer: obs})
	f := newForeign(t, nc)
	abort := func(req messages.AbortRequest) messages.AbortResponse {
		t.Helper()
		req.V = messages.Version
		var resp messages.AbortResponse
		testenv.Request(t, nc, messages.AbortSubject, req, &resp)
		return resp
	}

	id := testenv.Start(t, nc, "job", messages.Context{})
	f.ok(t, f.next(t, id, "open"))
	file := f.next(t, id, "file")
	require.Equal(t, messages.Execute, file.Action)

	// Ten operators abort it at once, their requests likely in one batch
	// of the loop: one rollback, one compensation sent, one abort counted.
	var wg sync.WaitGroup
	answers := make(chan *nats.Msg, 10)
	failed := make(chan error, 10)
	req := mustJSON(t, messages.AbortRequest{V: messages.Version, SagaID: id, Reason: "the clerk left"})
	for range 10 {
		wg.Go(func() {
			m, err := nc.Request(messages.AbortSubject, req, 10*time.Second)
			if err != nil {
				failed <- err
				return
			}
			answers <- m
		})
	}
	wg.Wait()
	close(answers)
	close(failed)
	require.NoError(t, <-failed)
	changed := 0
	for m := range answers {
		var resp messages.AbortResponse
		require.NoError(t, json.Unmarshal(m.Data, &resp))
		require.Nil(t, resp.Error)
		require.Equal(t, string(saga.Compensating), resp.Status)
		if !resp.Unchanged {
			changed++
		}
	}
	require.Equal(t, 1, changed, "one abort changed the saga; the others say they changed nothing")
	undoFile := f.next(t, id, "file")
	require.Equal(t, messages.Compensate, undoFile.Action)
	require.Equal(t, file.Seq+1, undoFile.Seq)

	resp := abort(messages.AbortRequest{SagaID: id, Reason: "again"})
	require.Nil(t, resp.Error, "compensating already")
	require.Equal(t, messages.AbortResponse{V: messages.Version, Status: string(saga.Compensating), Unchanged: true}, resp)

	f.ok(t, undoFile)
	undoOpen := f.next(t, id, "open")
	require.Equal(t, messages.Compensate, undoOpen.Action)
	f.ok(t, undoOpen)
	x := testenv.WaitStatus(t, nc, id, saga.RolledBack)
	require.Equal(t, "aborted: the clerk left", x.Error)
	require.Equal(t, []string{"file", "open"}, x.Compensated)
	require.Empty(t, f.cmds, "nothing more was sent")
	require.Equal(t, 1, obs.abortedCount(), "the observer is told of the abort that rolled it back, not of the second")

	for _, c := range []struct {
		name string
		req  messages.AbortRequest
		code string
		says string
	}{
		{"finished", messages.AbortRequest{SagaID: id}, messages.CodeConflict, "status rolled_back"},
		{"unknown", messages.AbortRequest{SagaID: "no-such-saga"}, messages.CodeNotFound, "abort no-such-saga: unknown saga"},
		{"not an id", messages.AbortRequest{SagaID: "a.b"}, messages.CodeBadRequest, "identifier rule"},
		{"long reason", messages.AbortRequest{SagaID: id, Reason: strings.Repeat("r", messages.MaxReason+1)}, messages.CodeBadRequest, "reason of 1025 bytes"},
	} {
		resp := abort(c.req)
		require.NotNil(t, resp.Error, c.name)
		require.Equal(t, c.code, resp.Error.Code, "%s: %s", c.name, resp.Error.Message)
		require.Contains(t, resp.Error.Message, c.says, c.name)
	}
}
