package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// missingContractor is what floodsim says before the run when the agents
// it expects answer but none is a contractor.
const missingContractor = "no contractor agent answered (micro service natsaga-agent), though 3 agents did (-expect-agents)"

// noContractorQuery is its warning while the contractor's state query has
// no responder.
const noContractorQuery = "no contractor agent is answering its state query (is one running?)"

// TestNoAgentOfARole: -expect-agents is met, but no contractor agent runs
// at all. floodsim says so before the run, says plainly why the
// contractor's state query is not answered (once, not at every retry),
// and exits 1 with the role named once -agent-wait is spent, not a
// restart's minute later.
func TestNoAgentOfARole(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	startAgents(t, url, 1_000_000_00, true, flood.Household, flood.Government, flood.Insurer)
	// Asked again every queryRetry, it would be warned about 8 times
	// within the wait.
	wait := 2 * time.Second
	require.Less(t, wait, queryWarnInterval)
	var stdout, stderr bytes.Buffer
	began := time.Now()
	code := mainCode(append([]string{"-spawn=false", "-nats", url, "-expect-agents", "3", "-tick-wait", "3s",
		"-agent-wait", wait.String()}, small...), env(), &stdout, &stderr)
	took := time.Since(began)
	logs := stderr.String()
	require.Equal(t, 1, code, logs)
	require.True(t, strings.HasSuffix(logs, "\nfloodsim: flood.state.contractor: no contractor agent answered within 2s "+
		"(-agent-wait; is one running?): nats: no responders available for request\n"), logs)
	require.GreaterOrEqual(t, took, wait)
	require.Less(t, took, restartPatience/2, "waited for -agent-wait, not a restart's patience")
	require.Contains(t, logs, missingContractor)
	require.Equal(t, 1, strings.Count(logs, noContractorQuery), logs)
	require.Contains(t, logs, "patience=2s")
	require.Less(t, strings.Index(logs, missingContractor), strings.Index(logs, noContractorQuery), "said before the run")
	require.NotContains(t, stdout.String(), "tick ", "no tick ran")
}

// TestAgentOfARoleLate: a contractor agent that comes only once the run
// waits for its state query (as one restarting would) is waited for, and
// the run goes on as usual.
func TestAgentOfARoleLate(t *testing.T) {
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	sc, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1, Households: 40, Ticks: 10})
	require.NoError(t, err)
	startAgents(t, url, 0, true, flood.Household)
	for role, l := range map[string]int64{flood.Government: sc.GovernmentBudget, flood.Insurer: sc.InsurerFund} {
		startAgents(t, url, l, true, role)
	}
	c, err := parseFlags(append([]string{"-spawn=false", "-nats", url, "-expect-agents", "3"}, small...), env(), io.Discard)
	require.NoError(t, err)
	var stdout bytes.Buffer
	var stderr testenv.SyncBuffer
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), c, &stdout, &stderr) }()
	require.Eventually(t, func() bool {
		return len(done) > 0 || strings.Contains(stderr.String(), missingContractor) && strings.Contains(stderr.String(), noContractorQuery)
	}, 20*time.Second, 10*time.Millisecond, "stderr: %s", &stderr)
	require.Empty(t, done, "the run ended before the contractor came; stderr:\n%s", &stderr)
	startAgents(t, url, 0, true, flood.Contractor)
	select {
	case err := <-done:
		require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
	case <-time.After(time.Minute):
		t.Fatalf("the run did not end; stderr:\n%s", &stderr)
	}
	require.Contains(t, stdout.String(), "invariants: ok")
}

// TestHousesGiveUpTogether: a role with no agent fails the query of every
// household within one -agent-wait, however many rounds of queries the
// scenario needs: the first query that fails ends the others, rather than
// each round waiting its own.
func TestHousesGiveUpTogether(t *testing.T) {
	_, url := testenv.Server(t)
	cl, err := client.New(testenv.Connect(t, url), client.Options{RequestTimeout: requestTimeout, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	// Three rounds of participant.QueryConcurrency queries.
	households := 2*participant.QueryConcurrency*flood.MaxQueryHouseholds + 1
	sc, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1, Households: households, Ticks: 1})
	require.NoError(t, err)
	require.Len(t, sc.Homes, households)
	wait := time.Second
	var logs testenv.SyncBuffer
	s := &sim{cfg: &config{agentWait: wait}, sc: sc, cl: cl, log: slog.New(slog.NewTextHandler(&logs, nil))}
	began := time.Now()
	_, err = s.houses(context.Background(), flood.Contractor)
	require.EqualError(t, err, "flood.state.contractor: no contractor agent answered within 1s "+
		"(-agent-wait; is one running?): nats: no responders available for request")
	require.Less(t, time.Since(began), 2*wait, "one wait, not one a round")
	require.Equal(t, 1, strings.Count(logs.String(), noContractorQuery), "warned once for all the queries: %s", &logs)

	// A run stopped before the queries fails with its cause.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.houses(ctx, flood.Contractor)
	require.ErrorIs(t, err, context.Canceled)
}

// TestHousesAskedInPartsWhenTooLarge: a household's record grows with each
// of its sagas, run after run on one server; once a query's answer is too
// large (answered too_large by an agent, or past what floodsim reads), its
// households are asked again in halves, down to one, and every household
// is read. A household whose record alone is too large is named.
func TestHousesAskedInPartsWhenTooLarge(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	cl, err := client.New(testenv.Connect(t, url), client.Options{RequestTimeout: requestTimeout, Logger: testenv.Logger(t)})
	require.NoError(t, err)
	sc, err := flood.NewScenario(flood.ScenarioOptions{Seed: 1, Households: 40, Ticks: 1})
	require.NoError(t, err)
	// The agent: an answer of more than 20 households is too large for the
	// server; one of more than 10 is larger than floodsim reads; hh-0013's
	// record alone is too large.
	var asked atomic.Int64
	sub, err := nc.Subscribe(flood.StateSubject(flood.Household), func(m *nats.Msg) {
		asked.Add(1)
		var q flood.StateQuery
		require.NoError(t, json.Unmarshal(m.Data, &q))
		a := flood.StateAnswer{V: messages.Version, Households: flood.Houses{}}
		switch {
		case len(q.Households) > 20 || slices.Contains(q.Households, "hh-0013"):
			a = flood.StateAnswer{V: messages.Version, Error: &messages.WireError{Code: messages.CodeTooLarge, Message: "ask for less"}}
		case len(q.Households) > 10:
			_ = m.Respond([]byte(`{"v":1,"households":{"pad":"` + strings.Repeat("x", messages.MaxPayload) + `"}}`))
			return
		default:
			for _, id := range q.Households {
				a.Households[id] = flood.House{Applications: map[string]string{"s-" + id: "ok"}}
			}
		}
		data, err := json.Marshal(a)
		require.NoError(t, err)
		_ = m.Respond(data)
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	s := &sim{cfg: &config{agentWait: time.Minute}, sc: sc, cl: cl, log: slog.New(slog.DiscardHandler)}
	_, err = s.houses(context.Background(), flood.Household)
	require.ErrorContains(t, err, "household hh-0013: its household record alone is too large for a state answer")
	require.ErrorContains(t, err, "too_large: ask for less")

	sc.Homes = slices.DeleteFunc(sc.Homes, func(h flood.Home) bool { return h.ID == "hh-0013" })
	asked.Store(0)
	hs, err := s.houses(context.Background(), flood.Household)
	require.NoError(t, err)
	require.Len(t, hs, 39, "every household read")
	for _, h := range sc.Homes {
		require.Equal(t, "ok", hs[h.ID].Applications["s-"+h.ID], h.ID)
	}
	// 39 households: 39 (too large for the server) → 19 and 20 (too
	// large to read) → 9, 10, 10 and 10 (answered): 1 + 2 + 4 queries.
	require.Equal(t, int64(7), asked.Load())
}
