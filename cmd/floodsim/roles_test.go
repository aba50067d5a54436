package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
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
