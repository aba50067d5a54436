package flood_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/testenv"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// TestConcurrentSubsidiesNeverOverspend starts 200 subsidy sagas at once
// against a budget that funds 37 of them, with two government agents
// deciding concurrently.
func TestConcurrentSubsidiesNeverOverspend(t *testing.T) {
	const (
		sagas  = 200
		funded = 37
		cost   = flood.DefaultSubsidyCost
		// Enough for 37 subsidies and half of a 38th.
		initial = funded*cost + cost/2
	)
	_, url := testenv.Server(t)
	testenv.Coordinator(t, url, flood.Definitions())
	testenv.Agent(t, url, participant.Options{Role: flood.Household, Steps: flood.HouseholdSteps()})
	var govs []*participant.Agent
	for i := range 2 {
		govs = append(govs, testenv.Agent(t, url, participant.Options{
			Role: flood.Government, Name: fmt.Sprintf("government-%d", i), Steps: flood.GovernmentSteps(),
			Init: flood.InitLedger(initial), AckWait: time.Minute,
		}))
	}
	nc := testenv.Connect(t, url)

	// Every ledger value any government agent writes, committed or not.
	var written, negative atomic.Int64
	sub, err := nc.Subscribe(messages.DataSubject(flood.Government, flood.LedgerKey), func(m *nats.Msg) {
		var l flood.Ledger
		if err := participant.DecodeValue(m.Data, &l); err != nil || l.Initial != initial {
			negative.Add(1) // not a ledger: count it as a wrong one
			return
		}
		written.Add(1)
		if l.Balance < 0 {
			negative.Add(1)
		}
	})
	require.NoError(t, err)
	defer sub.Unsubscribe()

	// Both government copies are pulling before the sagas start.
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cons, err := js.Consumer(context.Background(), messages.CommandStream, messages.CommandConsumer(flood.Government))
		if err != nil {
			return false
		}
		info, err := cons.Info(context.Background())
		return err == nil && info.NumWaiting >= 2
	}, 10*time.Second, 5*time.Millisecond)

	ids := make([]string, sagas)
	errs := make([]error, sagas)
	var wg sync.WaitGroup
	for i := range sagas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = start(nc, messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h-%03d", i)))
		}()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))

	require.Eventually(t, func() bool {
		s := testenv.Summary(t, nc)
		return s.Active == 0 && s.Completed+s.RolledBack == sagas
	}, 60*time.Second, 20*time.Millisecond)
	require.NoError(t, nc.Flush())
	require.Zero(t, negative.Load(), "a negative or malformed budget was written")
	// The opening value, and one write per deduction at least.
	require.GreaterOrEqual(t, written.Load(), int64(funded), "the probe saw too few ledger writes")
	s := testenv.Summary(t, nc)
	require.Equal(t, funded, s.Completed)
	require.Equal(t, sagas-funded, s.RolledBack)
	require.Zero(t, s.TimedOut+s.Failed)

	var completed int
	var govCommands int64 // commands the government should have handled
	for _, id := range ids {
		x := testenv.Status(t, nc, id)
		switch x.Status {
		case saga.Completed:
			completed++
			govCommands += 2
			paid, err := x.Context.Int64(flood.KeySubsidyPaid)
			require.NoError(t, err)
			require.Equal(t, cost, paid)
		case saga.RolledBack:
			require.True(t, strings.Contains(x.Error, "budget insufficient"), "%s: %s", id, x.Error)
			// The household's application is always undone; the
			// approval too when the deduction was what failed.
			require.Contains(t, x.Compensated, "household_applies")
			require.NotContains(t, x.Compensated, "budget_deducted")
			govCommands++ // government_evaluates
			if slices.Contains(x.Compensated, "government_evaluates") {
				govCommands += 2 // budget_deducted, and the undo of the approval
			}
		default:
			t.Fatalf("saga %s ended %s", id, x.Status)
		}
	}
	require.Equal(t, funded, completed)

	var ledger flood.Ledger
	_, err = govs[0].Store().Get(context.Background(), flood.LedgerKey, &ledger)
	require.NoError(t, err)
	require.Equal(t, int64(initial), ledger.Initial)
	require.Equal(t, int64(initial-funded*cost), ledger.Balance)
	require.Equal(t, map[string]int64{flood.Subsidy: funded * cost}, ledger.Spent)
	require.Equal(t, ledger.Initial-ledger.Balance, ledger.SpentTotal())

	// A copy counts a command once its record is stored, and the
	// coordinator may read that record, and finish the saga, first.
	require.Eventually(t, func() bool {
		var n int64
		for _, g := range govs {
			n += g.Stats().Handled
		}
		return n >= govCommands
	}, 10*time.Second, 5*time.Millisecond, "the government copies never counted every command")
	var handled int64
	for _, g := range govs {
		st := g.Stats()
		t.Logf("%s: %+v", g.Name(), st)
		require.Positive(t, st.Handled, "%s handled nothing", g.Name())
		require.Zero(t, st.Duplicates+st.Refused+st.Rejected)
		handled += st.Handled
	}
	require.Equal(t, govCommands, handled, "each government command handled once, by one copy")
	t.Logf("optimistic retries: %d", govs[0].Store().Conflicts()+govs[1].Store().Conflicts())
}

// start starts a subsidy saga. It returns an error rather than failing the
// test, so that it can run on any goroutine.
func start(nc *nats.Conn, c messages.Context) (string, error) {
	data, err := json.Marshal(messages.StartRequest{V: messages.Version, Context: c})
	if err != nil {
		return "", err
	}
	m, err := nc.Request(messages.StartSubject(flood.Subsidy), data, 30*time.Second)
	if err != nil {
		return "", err
	}
	var resp messages.StartResponse
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return "", err
	}
	if resp.Error != nil {
		return "", resp.Error
	}
	return resp.SagaID, nil
}
