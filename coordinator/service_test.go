package coordinator_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// control asks a micro control subject and decodes the one answer.
func control(t *testing.T, nc *nats.Conn, verb micro.Verb, name string, v any) {
	t.Helper()
	subj, err := micro.ControlSubject(verb, name, "")
	require.NoError(t, err)
	m, err := nc.Request(subj, nil, 5*time.Second)
	require.NoError(t, err, subj)
	require.NoError(t, json.Unmarshal(m.Data, v), string(m.Data))
}

// TestCoordinatorIsAMicroService finds the coordinator through NATS
// micro's $SRV subjects, as "nats micro ls/info/stats" do, and checks that
// its endpoints are the request API on its own subjects, that the
// statistics count the requests, and that an error answer carries micro's
// error headers besides the JSON body.
func TestCoordinatorIsAMicroService(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	nc := testenv.Connect(t, url)

	var ping micro.Ping
	control(t, nc, micro.PingVerb, messages.CoordinatorService, &ping)
	require.Equal(t, micro.PingResponseType, ping.Type)
	require.Equal(t, messages.CoordinatorService, ping.Name)
	require.Equal(t, messages.ServiceVersion, ping.Version)

	var info micro.Info
	control(t, nc, micro.InfoVerb, messages.CoordinatorService, &info)
	copyName := info.Metadata["copy"]
	require.NotEmpty(t, copyName)
	require.Equal(t, map[string]string{"definitions": "1", "state": "active", "copy": copyName, "pid": strconv.Itoa(os.Getpid())}, info.Metadata)
	// The lease names the coordinator as its micro service does, so that
	// a standby's log points at the active one.
	_, kv := sagaBucket(t, nc)
	lease, err := kv.Get(context.Background(), messages.LeaseKey)
	require.NoError(t, err)
	var holder struct {
		Copy string `json:"copy"`
	}
	require.NoError(t, json.Unmarshal(lease.Value(), &holder))
	require.Equal(t, copyName, holder.Copy)
	got := map[string]string{}
	for _, e := range info.Endpoints {
		got[e.Name] = e.Subject
	}
	require.Equal(t, map[string]string{
		"start": messages.StartSubjects, "starts": messages.StartBatchSubject, "tick": messages.TickSubject, "status": messages.StatusSubject,
		"summary": messages.SummarySubject, "list": messages.ListSubject, "retry": messages.RetrySubject, "register": messages.RegisterSubject,
		"abort": messages.AbortSubject,
	}, got)

	// Answers come as before, on the same subjects.
	id := testenv.Start(t, nc, twoSteps.Subject, messages.Context{})
	testenv.Summary(t, nc)
	testenv.Summary(t, nc)

	// A bad request: the error is in the body and in the headers.
	m, err := nc.Request(messages.StatusSubject, []byte("not json"), 5*time.Second)
	require.NoError(t, err)
	var resp messages.StatusResponse
	require.NoError(t, json.Unmarshal(m.Data, &resp))
	require.NotNil(t, resp.Error)
	require.Equal(t, messages.CodeBadRequest, resp.Error.Code)
	require.Equal(t, "400", m.Header.Get(micro.ErrorCodeHeader))
	require.Equal(t, resp.Error.Message, m.Header.Get(micro.ErrorHeader))

	// A saga nobody knows: 404 once the bucket was asked.
	req, _ := json.Marshal(messages.StatusRequest{V: messages.Version, SagaID: "nope"})
	m, err = nc.Request(messages.StatusSubject, req, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "404", m.Header.Get(micro.ErrorCodeHeader))

	// A good answer carries no error header.
	req, _ = json.Marshal(messages.StatusRequest{V: messages.Version, SagaID: id})
	m, err = nc.Request(messages.StatusSubject, req, 5*time.Second)
	require.NoError(t, err)
	require.Empty(t, m.Header.Get(micro.ErrorCodeHeader))

	// micro counts a request once its handler returns, which may be after
	// a read of the bucket has answered it: the counts are waited for.
	want := map[string]int{"start": 1, "starts": 0, "tick": 0, "status": 3, "summary": 2, "list": 0, "retry": 0, "abort": 0, "register": 0}
	subj, err := micro.ControlSubject(micro.StatsVerb, messages.CoordinatorService, "")
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		m, err := nc.Request(subj, nil, 5*time.Second)
		require.NoError(c, err)
		var stats micro.Stats
		require.NoError(c, json.Unmarshal(m.Data, &stats))
		require.Equal(c, micro.StatsResponseType, stats.Type)
		n := map[string]int{}
		for _, e := range stats.Endpoints {
			n[e.Name] = e.NumRequests
		}
		assert.Equal(c, want, n)
	}, 10*time.Second, 10*time.Millisecond)
}

// TestListFinished lists sagas by a finished status, read from the bucket:
// the latest ones, oldest first, bounded by the limit.
func TestListFinished(t *testing.T) {
	_, url := testenv.Server(t)
	c := testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	var ids []string
	for range 5 {
		id := testenv.Start(t, nc, twoSteps.Subject, messages.Context{})
		testenv.WaitStatus(t, nc, id, saga.Completed)
		ids = append(ids, id)
	}
	list := func(status string, limit int, more bool) []string {
		var resp messages.ListResponse
		testenv.Request(t, nc, messages.ListSubject, messages.ListRequest{V: messages.Version, Status: status, Limit: limit}, &resp)
		require.Nil(t, resp.Error)
		require.Equal(t, more, resp.More, "%s, limit %d: more stored", status, limit)
		var got []string
		for _, raw := range resp.Sagas {
			var x saga.Execution
			require.NoError(t, json.Unmarshal(raw, &x))
			require.Equal(t, status, string(x.Status))
			got = append(got, x.ID)
		}
		return got
	}
	require.Equal(t, ids, list("completed", 0, false))
	require.Equal(t, ids[2:], list("completed", 3, true))
	require.Equal(t, ids[1:], list("completed", 4, true))
	require.Equal(t, ids, list("completed", 5, false))
	require.Empty(t, list("rolled_back", 0, false))
	// Each saga that ended is indexed as its end is stored, for the lists.
	var subjects []string
	for _, id := range ids {
		subjects = append(subjects, messages.BucketSubject(messages.SagaKey(id)))
	}
	latest, ok := coordinator.LatestEnded(c, saga.Completed, 5)
	require.True(t, ok)
	require.Equal(t, subjects, latest)
}

// TestListFinishedFitsThePayloadLimit lists finished sagas that would not
// all fit one answer: the page holds the latest that fit, oldest first,
// and the answer is within the server's payload limit.
func TestListFinishedFitsThePayloadLimit(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	limit := int(nc.MaxPayload())
	pad := strings.Repeat("p", limit/5)
	var ids []string
	for range 6 {
		id := testenv.Start(t, nc, twoSteps.Subject, messages.Context{}.MustSet("pad", pad))
		testenv.WaitStatus(t, nc, id, saga.Completed)
		ids = append(ids, id)
	}
	msg, err := nc.Request(messages.ListSubject, mustJSON(t, messages.ListRequest{V: messages.Version, Status: "completed"}), 10*time.Second)
	require.NoError(t, err)
	require.LessOrEqual(t, len(msg.Data), limit)
	var resp messages.ListResponse
	require.NoError(t, json.Unmarshal(msg.Data, &resp))
	require.Nil(t, resp.Error)
	require.Empty(t, resp.Next, "the finished sagas come in one page")
	require.True(t, resp.More, "two more are stored than fit")
	var got []string
	for _, raw := range resp.Sagas {
		var x saga.Execution
		require.NoError(t, json.Unmarshal(raw, &x))
		got = append(got, x.ID)
	}
	// Each saga is over a fifth of the limit: four fit.
	require.Equal(t, ids[2:], got)
}

// TestListFinishedReadsWhatItAnswers: a list of up to 1,000 finished
// sagas, each large, reads the bucket a few values at a time, not all it
// may answer at once: on a server that holds 8 MB pending for a
// connection, 60 sagas of 200 KB read in one batch cut the coordinator
// off as a slow consumer, and the list got no answer.
func TestListFinishedReadsWhatItAnswers(t *testing.T) {
	_, url := testenv.ServerWith(t, "max_pending: 8MB")
	testenv.Coordinator(t, url, []saga.Definition{twoSteps})
	bankAgent(t, url)
	nc := testenv.Connect(t, url)
	pad := strings.Repeat("p", 200_000)
	var ids []string
	for range 60 {
		ids = append(ids, testenv.Start(t, nc, twoSteps.Subject, messages.Context{}.MustSet("pad", pad)))
	}
	for _, id := range ids {
		testenv.WaitStatus(t, nc, id, saga.Completed)
	}
	msg, err := nc.Request(messages.ListSubject, mustJSON(t, messages.ListRequest{V: messages.Version, Status: "completed", Limit: 1000}), 10*time.Second)
	require.NoError(t, err, "answered")
	var resp messages.ListResponse
	require.NoError(t, json.Unmarshal(msg.Data, &resp))
	require.Nil(t, resp.Error)
	require.True(t, resp.More, "more are stored than fit one answer")
	require.NotEmpty(t, resp.Sagas)
}
