// Package foreign_test proves docs/protocol.md is enough to write an agent:
// the household agent in agent_test.go uses bare nats.go and no natsaga
// package, and serves real subsidy sagas run by natsaga's coordinator and
// government agent.
package foreign_test

import (
	"context"
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

func TestForeignAgentImportsNoNatsaga(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "agent_test.go", nil, parser.ImportsOnly)
	require.NoError(t, err)
	for _, imp := range f.Imports {
		path, err := strconv.Unquote(imp.Path.Value)
		require.NoError(t, err)
		if !strings.Contains(strings.Split(path, "/")[0], ".") {
			continue // standard library
		}
		require.Contains(t, []string{"github.com/nats-io/nats.go", "github.com/nats-io/nats.go/jetstream"}, path,
			"the foreign agent may use only nats.go and the standard library")
	}
}

func TestForeignAgentServesSubsidySagas(t *testing.T) {
	const cost = flood.DefaultSubsidyCost
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, []saga.Definition{flood.SubsidySaga()})
	gov := testenv.Agent(t, url, participant.Options{Role: flood.Government, Steps: flood.GovernmentSteps(),
		Init: flood.InitLedger(cost + cost/2)})

	// The run is at tick 7 when the foreign agent starts: it asks.
	testenv.Tick(t, testenv.Connect(t, url), 7)
	household := newHouseholdAgent("foreign-household")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- household.run(ctx, testenv.Connect(t, url)) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	// The budget pays for the first application.
	nc := testenv.Connect(t, url)
	first := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-1"))
	x := testenv.WaitStatus(t, nc, first, saga.Completed)
	require.Equal(t, []string{"household_applies", "government_evaluates", "budget_deducted"}, x.Completed)
	via, err := x.Results["household_applies"].String("applied_via")
	require.NoError(t, err)
	require.Equal(t, "foreign-household", via, "the foreign agent's output is the step's result")
	status, err := x.Context.String(flood.KeyStatus)
	require.NoError(t, err)
	require.Equal(t, "pending", status, "and was merged into the context")
	paid, err := x.Context.Int64(flood.KeySubsidyPaid)
	require.NoError(t, err)
	require.Equal(t, cost, paid)
	require.Equal(t, "pending", household.application(first))
	household.mu.Lock()
	require.Equal(t, int64(7), household.tick, "learned from natsaga.summary")
	household.mu.Unlock()
	// The raw consumer-create request made the documented consumer.
	jsi, err := jetstream.New(nc)
	require.NoError(t, err)
	ci, err := jsi.Consumer(context.Background(), messages.CommandStream, messages.CommandConsumer(flood.Household))
	require.NoError(t, err)
	info := ci.CachedInfo()
	require.Equal(t, messages.StepCommandSubjects(flood.Subsidy, "household_applies"), info.Config.FilterSubjects)
	require.Equal(t, jetstream.AckExplicitPolicy, info.Config.AckPolicy)
	require.Equal(t, 8192, info.Config.MaxAckPending)

	// The second is refused by the government: the foreign agent's step is
	// compensated.
	second := testenv.Start(t, nc, flood.Subsidy, messages.Context{}.MustSet(flood.KeyHousehold, "h-2"))
	x = testenv.WaitStatus(t, nc, second, saga.RolledBack)
	require.Equal(t, []string{"household_applies"}, x.Compensated)
	require.Contains(t, x.Error, "budget insufficient")
	require.Equal(t, "cancelled", household.application(second))

	// A duplicate of the first saga's execute (a redelivery) is answered
	// from the foreign agent's record, and a malformed command is dropped;
	// neither changes anything.
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	dup := `{"v":1,"saga_id":"` + first + `","saga":"subsidy","step":"household_applies","action":"execute","attempt":1,"seq":1,"tick":0,"context":{"household_id":"h-1"}}`
	_, err = js.Publish(context.Background(), messages.ExecuteSubject(flood.Subsidy, "household_applies"), []byte(dup))
	require.NoError(t, err)
	_, err = js.Publish(context.Background(), messages.ExecuteSubject(flood.Subsidy, "household_applies"), []byte(`{"v":"one"}`))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		household.mu.Lock()
		defer household.mu.Unlock()
		return household.handled == 4 && household.dropped == 1
	}, 10*time.Second, 5*time.Millisecond)
	require.Equal(t, "pending", household.application(first))

	var ledger flood.Ledger
	_, err = gov.Store().Get(context.Background(), flood.LedgerKey, &ledger)
	require.NoError(t, err)
	require.Equal(t, cost/2, ledger.Balance)
	require.Equal(t, map[string]int64{flood.Subsidy: cost}, ledger.Spent)
	s := testenv.Summary(t, nc)
	require.Equal(t, 1, s.Completed)
	require.Equal(t, 1, s.RolledBack)
	require.Zero(t, s.Active)
}

// The command stream exists before a coordinator serves, and no coordinator
// answers in a takeover: the agent asks the summary again until one does
// (docs/protocol.md, the raw requests of an agent), rather than fail at the
// first "no responders".
func TestForeignAgentAsksTheSummaryUntilACoordinatorServes(t *testing.T) {
	_, url := testenv.Server(t)
	nc := testenv.Connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := currentTick(ctx, nc)
	require.ErrorIs(t, err, context.DeadlineExceeded, "with no coordinator the agent keeps asking until its context ends")

	testenv.Coordinator(t, url, []saga.Definition{flood.SubsidySaga()})
	testenv.Tick(t, nc, 3)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	tick, err := currentTick(ctx2, nc)
	require.NoError(t, err)
	require.Equal(t, int64(3), tick)
}
