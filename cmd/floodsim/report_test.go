package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestReportReadsTheBucket runs the small scenario twice against one
// system, so that the saga bucket holds the first run's sagas when the
// second report is made. Each report reads the final states from the
// bucket, with no status request but one for each saga the HTML
// timeline samples (for its whole history), and counts only the run's
// own sagas:
// its counts, outcomes and outcome log are those the coordinator gives
// when asked saga by saga.
func TestReportReadsTheBucket(t *testing.T) {
	c, url := inProcessSystem(t)
	dir := t.TempDir()
	c.conn.URL = url
	c.requireAll = false
	c.jsonPath, c.outcomesPath = filepath.Join(dir, "report.json"), filepath.Join(dir, "outcomes.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// A plain subscriber sees every status request the coordinator gets.
	nc := testenv.Connect(t, url)
	statuses, err := nc.SubscribeSync(messages.StatusSubject)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	cl, err := client.New(nc, client.Options{})
	require.NoError(t, err)

	planned := 0
	for round := 1; round <= 2; round++ {
		before, _, err := statuses.Pending()
		require.NoError(t, err)
		var stdout bytes.Buffer
		require.NoError(t, run(ctx, c, &stdout, io.Discard), "run %d:\n%s", round, &stdout)
		// Every request the run sent is queued here once the server has
		// answered this connection's flush.
		require.NoError(t, nc.Flush())
		after, _, err := statuses.Pending()
		require.NoError(t, err)

		data, err := os.ReadFile(c.jsonPath)
		require.NoError(t, err)
		var r report
		require.NoError(t, json.Unmarshal(data, &r))
		require.NotEmpty(t, r.Timeline)
		require.Equal(t, len(r.Timeline), after-before, "run %d: status requests, one for each saga of the timeline", round)
		for _, x := range r.Timeline {
			require.Greater(t, len(x.History), 1, "run %d: %s's whole history", round, x.ID)
		}
		require.True(t, r.Invariants.OK, "run %d: %v", round, r.Invariants.Violations)
		require.NotEmpty(t, r.PerTick)
		planned = total(r.Planned)

		// The run's sagas, asked one by one: their ids follow from the
		// seed, the tick the run began at and their ranks.
		base := r.PerTick[0].Tick - 1
		sagas := map[string]map[string]int{}
		outcomes := map[flood.Outcome]int{}
		var xs []saga.Execution
		for rank := int64(1); rank <= int64(planned); rank++ {
			x, err := cl.Status(ctx, sagaID(r.Seed, base, rank))
			require.NoError(t, err, "run %d, rank %d", round, rank)
			xs = append(xs, x)
			if sagas[x.Saga] == nil {
				sagas[x.Saga] = map[string]int{}
			}
			sagas[x.Saga][string(x.Status)]++
			outcomes[flood.Classify(&x)]++
		}
		log, digest, err := saga.OutcomeLog(xs)
		require.NoError(t, err)
		for typ, counts := range r.Sagas {
			for st, n := range counts {
				require.Equal(t, sagas[typ][st], n, "run %d: %s sagas %s", round, typ, st)
			}
		}
		for typ, counts := range sagas {
			require.Equal(t, total(counts), total(r.Sagas[typ]), "run %d: %s sagas", round, typ)
		}
		for o, n := range r.Outcomes {
			require.Equal(t, outcomes[o], n, "run %d: outcome %s", round, o)
		}
		require.Equal(t, digest, r.OutcomesSHA256, "run %d", round)
		written, err := os.ReadFile(c.outcomesPath)
		require.NoError(t, err)
		require.Equal(t, string(log), string(written), "run %d", round)
	}
	stored, err := cl.Stored(ctx, true)
	require.NoError(t, err)
	require.Len(t, stored, 2*planned, "the bucket holds both runs' sagas")
}

// TestFinalStatesAskTheRest: a saga stored as finished is taken from the
// bucket; one stored while still active, and one the bucket does not hold,
// are asked for one by one, and a saga the coordinator does not know is
// left out, as are the sagas of others in the bucket.
func TestFinalStatesAskTheRest(t *testing.T) {
	_, url := testenv.Server(t)
	defs := []saga.Definition{
		{Name: "quick", Subject: "quick", Steps: []saga.Step{{Name: "do", Role: "worker"}}},
		{Name: "idle", Subject: "idle", Steps: []saga.Step{{Name: "wait", Role: "nobody"}}},
	}
	testenv.Coordinator(t, url, defs)
	done := agent.Handler{
		Execute:    func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, nil },
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	testenv.Agent(t, url, participant.Options{Role: "worker", Steps: []agent.Step{{Saga: "quick", Name: "do", Handler: done}}})
	nc := testenv.Connect(t, url)
	cl, err := client.New(nc, client.Options{})
	require.NoError(t, err)
	ctx := t.Context()
	for _, st := range []client.Start{{Saga: "quick", ID: "finished"}, {Saga: "quick", ID: "other"}, {Saga: "idle", ID: "active"}} {
		_, err := cl.Start(ctx, st)
		require.NoError(t, err)
	}
	testenv.WaitStatus(t, nc, "finished", saga.Completed)
	testenv.WaitStatus(t, nc, "other", saga.Completed)
	want := map[string]saga.Execution{}
	for _, id := range []string{"finished", "active"} {
		x, err := cl.Status(ctx, id)
		require.NoError(t, err)
		want[id] = x
	}
	// Read from the bucket, the finished saga holds no step results and
	// only the last transition of its history.
	finished := want["finished"]
	finished.Results, finished.History = nil, finished.History[len(finished.History)-1:]
	want["finished"] = finished

	asked, err := nc.SubscribeSync(messages.StatusSubject)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	s := &sim{cl: cl, log: slog.New(slog.DiscardHandler)}
	final, err := s.finalStates(ctx, map[string]string{"finished": "quick", "active": "idle", "unknown": "quick"})
	require.NoError(t, err)
	require.Equal(t, want, final)
	// Every request finalStates sent is queued here once the server has
	// answered this connection's flush.
	require.NoError(t, nc.Flush())
	n, _, err := asked.Pending()
	require.NoError(t, err)
	var ids []string
	for range n {
		m, err := asked.NextMsg(0)
		require.NoError(t, err)
		var req messages.StatusRequest
		require.NoError(t, json.Unmarshal(m.Data, &req))
		ids = append(ids, req.SagaID)
	}
	require.ElementsMatch(t, []string{"active", "unknown"}, ids)
}

// TestLostSagasNameTheRetention: a report with lost sagas says how many,
// and that a -retention shorter than the run loses them so.
func TestLostSagasNameTheRetention(t *testing.T) {
	r := report{Sagas: map[string]map[string]int{flood.Subsidy: {"completed": 2, "lost": 3}},
		Invariants: invariants{Violations: []string{"saga s-1 (subsidy) lost: no final state"}}}
	var out bytes.Buffer
	r.print(&out)
	require.Contains(t, out.String(), "  LOST 3")
	require.Contains(t, out.String(), "(3 sagas lost: neither the bucket nor the coordinator holds them; a saga that ended is kept in the bucket "+
		"for the coordinator's -retention, 7 days by default")
}

// TestHouseholdsFullAreSaid: rollbacks of households at their most
// applications (a sweep of many runs on one server) are said beside the
// other rollbacks, with what to do.
func TestHouseholdsFullAreSaid(t *testing.T) {
	r := report{Sagas: map[string]map[string]int{}, Outcomes: map[flood.Outcome]int{flood.OutcomeRolledBackOther: 12}, HouseholdsFull: 9}
	var out bytes.Buffer
	r.print(&out)
	require.Contains(t, out.String(), "other 12\n  (9 of the other rollbacks: households that already kept 256 applications, the most they may;")
	r.HouseholdsFull = 0
	out.Reset()
	r.print(&out)
	require.NotContains(t, out.String(), "applications")
}
