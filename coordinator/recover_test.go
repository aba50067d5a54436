package coordinator_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestRecoveryCountsFinishedSagasFromHeaders: a finished saga's entry in
// the bucket carries its status and last tick as headers, and a restarted
// coordinator counts such a saga from them, without reading its value; an
// entry without them (written before they were) is read as before.
func TestRecoveryCountsFinishedSagasFromHeaders(t *testing.T) {
	_, url := testenv.Server(t)
	opts := coordinator.Options{Definitions: []saga.Definition{twoSteps}}
	stop := runUntilStopped(t, url, opts)
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	var ids []string
	for range 3 {
		id := testenv.Start(t, nc, twoSteps.Subject, nil)
		ids = append(ids, id)
	}
	for _, id := range ids {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
	ctx := context.Background()
	js, kv := sagaBucket(t, nc)
	stream, err := js.Stream(ctx, "KV_"+messages.SagaBucket)
	require.NoError(t, err)
	for _, id := range ids {
		x := testenv.Status(t, nc, id)
		m, err := stream.GetLastMsgForSubject(ctx, messages.BucketSubject(messages.SagaKey(id)))
		require.NoError(t, err)
		require.Equal(t, "completed", m.Header.Get(messages.SagaStatusHeader))
		require.Equal(t, strconv.FormatInt(x.History[len(x.History)-1].Tick, 10), m.Header.Get(messages.SagaTickHeader))
	}
	stop()

	// The first saga's value made unreadable, its headers kept and its
	// tick moved ahead of the clock: counted from the headers alone.
	forged := nats.NewMsg(messages.BucketSubject(messages.SagaKey(ids[0])))
	forged.Data = []byte(`{"not":"a saga"}`)
	forged.Header.Set(messages.SagaStatusHeader, "completed")
	forged.Header.Set(messages.SagaTickHeader, "40")
	_, err = js.PublishMsg(ctx, forged)
	require.NoError(t, err)
	// A saga stored without the headers, as coordinators before them did:
	// its value is read.
	entry, err := kv.Get(ctx, messages.SagaKey(ids[1]))
	require.NoError(t, err)
	var legacy map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(entry.Value(), &legacy))
	legacy["saga_id"] = json.RawMessage(`"legacy-1"`)
	data, err := json.Marshal(legacy)
	require.NoError(t, err)
	_, err = kv.Put(ctx, messages.SagaKey("legacy-1"), data)
	require.NoError(t, err)

	opts.Logger = testenv.Logger(t)
	stop = runUntilStopped(t, url, opts)
	defer stop()
	sum := testenv.Summary(t, nc)
	require.Equal(t, 4, sum.Completed, "three counted from their headers, one from its value")
	require.Equal(t, int64(40), sum.Tick, "the clock at least at the last tick of a finished saga")
	require.Equal(t, saga.Completed, testenv.Status(t, nc, "legacy-1").Status)

	// A list of the completed sagas reads the values of those whose
	// headers say so, and of those without headers: the forged value is
	// left out, the legacy entry, the latest, is in.
	var list messages.ListResponse
	testenv.Request(t, nc, messages.ListSubject, messages.ListRequest{V: messages.Version, Status: "completed"}, &list)
	require.Nil(t, list.Error)
	var listed []string
	for _, raw := range list.Sagas {
		var x saga.Execution
		require.NoError(t, json.Unmarshal(raw, &x))
		listed = append(listed, x.ID)
	}
	require.Len(t, listed, 3)
	require.ElementsMatch(t, ids[1:], listed[:2])
	require.Equal(t, "legacy-1", listed[2])
}

// TestRecoveryKeepsTheStoredClock: a clock moved on past the last change
// of every saga is where a restarted coordinator takes it up, with no
// active saga to carry it (it went back to the last finished saga's tick,
// and a driver reading it would have sent ticks already applied).
func TestRecoveryKeepsTheStoredClock(t *testing.T) {
	_, url := testenv.Server(t)
	opts := coordinator.Options{Definitions: []saga.Definition{twoSteps}, Logger: testenv.Logger(t)}
	stop := runUntilStopped(t, url, opts)
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	testenv.Tick(t, nc, 3)
	id := testenv.Start(t, nc, twoSteps.Subject, nil)
	testenv.WaitStatus(t, nc, id, saga.Completed)
	for tick := int64(4); tick <= 7; tick++ {
		testenv.Tick(t, nc, tick)
	}
	require.Equal(t, int64(7), testenv.Summary(t, nc).Tick)
	stop()

	stop = runUntilStopped(t, url, opts)
	defer stop()
	sum := testenv.Summary(t, nc)
	require.Equal(t, int64(7), sum.Tick, "the stored clock")
	require.Equal(t, 1, sum.Completed)
	require.Zero(t, sum.Active)
}

// TestListFinishedFindsTheLatestFarBack: a list of finished sagas names
// the latest of their status from the coordinator's index, which its
// recovery fills from the bucket's headers; when the index cannot tell
// (an entry of an earlier coordinator, without the headers, or a saga it
// names gone), it reads the bucket's last messages, in a window that
// grows until it holds the page: a saga far behind many of other statuses
// is found, a key written again counts by its last write, and a deleted
// one is left out.
func TestListFinishedFindsTheLatestFarBack(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx := context.Background()
	// The bucket is made by a coordinator, and written here as one would.
	runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}})()
	js, kv := sagaBucket(t, nc)
	put := func(id string, status saga.Status, headers bool) {
		t.Helper()
		m := nats.NewMsg(messages.BucketSubject(messages.SagaKey(id)))
		m.Data = []byte(`{"saga_id":"` + id + `","status":"` + string(status) + `"}`)
		if headers {
			m.Header.Set(messages.SagaStatusHeader, string(status))
			m.Header.Set(messages.SagaTickHeader, "1")
		}
		_, err := js.PublishMsg(ctx, m)
		require.NoError(t, err)
	}
	put("far-back", saga.TimedOut, true)
	put("written-again", saga.TimedOut, true)
	put("deleted", saga.TimedOut, true)
	require.NoError(t, kv.Delete(ctx, messages.SagaKey("deleted")))
	put("legacy", saga.TimedOut, false)
	for i := range 2000 {
		put("done-"+strconv.Itoa(i), saga.Completed, true)
	}
	put("written-again", saga.Completed, true)
	// more is what the last list said of the sagas it left out.
	var more bool
	list := func(status saga.Status, limit int) []string {
		t.Helper()
		var resp messages.ListResponse
		testenv.Request(t, nc, messages.ListSubject, messages.ListRequest{V: messages.Version, Status: string(status), Limit: limit}, &resp)
		require.Nil(t, resp.Error)
		more = resp.More
		var ids []string
		for _, raw := range resp.Sagas {
			var x struct {
				ID string `json:"saga_id"`
			}
			require.NoError(t, json.Unmarshal(raw, &x))
			ids = append(ids, x.ID)
		}
		return ids
	}
	subject := func(id string) string { return messages.BucketSubject(messages.SagaKey(id)) }

	stop := runUntilStopped(t, url, coordinator.Options{Definitions: []saga.Definition{twoSteps}})
	// The legacy entry has no headers: the index cannot tell every timed
	// out saga, and the list of them reads the headers, and its value.
	require.Equal(t, []string{"far-back", "legacy"}, list(saga.TimedOut, 0))
	require.False(t, more)
	require.Equal(t, []string{"done-1998", "done-1999", "written-again"}, list(saga.Completed, 3))
	require.True(t, more)
	stop()

	// Without it, a coordinator started again knows every saga of each
	// status from the headers it recovers, and lists from its index.
	require.NoError(t, kv.Purge(ctx, messages.SagaKey("legacy")))
	c := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	latest := func(st saga.Status, n int) []string {
		t.Helper()
		subjects, ok := coordinator.LatestEnded(c, st, n)
		require.True(t, ok, "every entry has its headers")
		return subjects
	}
	require.Equal(t, []string{subject("far-back")}, latest(saga.TimedOut, 101),
		"all of them: written-again is completed now, and deleted is gone")
	require.Equal(t, []string{subject("done-1998"), subject("done-1999"), subject("written-again")}, latest(saga.Completed, 3))
	require.Equal(t, []string{"far-back"}, list(saga.TimedOut, 0))
	require.False(t, more)
	require.Equal(t, []string{"done-1998", "done-1999", "written-again"}, list(saga.Completed, 3))
	require.True(t, more)
	// One it names is gone: the headers say which are the latest.
	require.NoError(t, kv.Delete(ctx, messages.SagaKey("done-1999")))
	require.Equal(t, []string{"done-1997", "done-1998", "written-again"}, list(saga.Completed, 3))
	require.True(t, more, "more are stored")
}
