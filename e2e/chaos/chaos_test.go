package chaos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/procs"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// Settings, overridable from the environment.
var (
	numSagas   = envInt("NATSAGA_CHAOS_SAGAS", 2000)
	chaosSeed  = envInt("NATSAGA_CHAOS_SEED", 7)
	copies     = envInt("NATSAGA_CHAOS_COPIES", 2)
	startRate  = envInt("NATSAGA_CHAOS_RATE", 300) // sagas started per second
	budgetCost = int64(5_000_00)
)

var roles = []string{flood.Household, flood.Government, flood.Insurer, flood.Contractor}

// planned is one saga the test starts.
type planned struct {
	id      string
	typ     string
	ctx     messages.Context
	started atomic.Bool
}

// figures are what the chaos test prints.
type figures struct {
	Sagas        int            `json:"sagas"`
	Statuses     map[string]int `json:"statuses"`
	Kills        map[string]int `json:"kills"`
	Restarts     int            `json:"restarts"`
	Redeliveries int64          `json:"redeliveries"`
	Duplicates   int64          `json:"duplicates_absorbed"`
	Refused      int64          `json:"executes_refused_after_compensation"`
	Ticks        int64          `json:"ticks"`
	Seconds      float64        `json:"seconds"`
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test skipped in -short mode")
	}
	began := time.Now()
	rng := rand.New(rand.NewPCG(uint64(chaosSeed), 1))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	bins, err := procs.Build(ctx, filepath.Join(dir, "bin"), false, append(slices.Clone(procs.Programs), procs.NATSServer)...)
	require.NoError(t, err)
	logPath := filepath.Join(dir, "processes.log")
	if p := os.Getenv("NATSAGA_CHAOS_LOG"); p != "" {
		logPath = p
	}
	// Money is short on purpose, so budgets run out and sagas roll back.
	ledger := map[string]int64{flood.Government: int64(numSagas) / 3 * budgetCost, flood.Insurer: int64(numSagas) * 1_000_00 * 4}
	sys := startSystem(t, ctx, systemConfig{bins: bins, dir: dir, logPath: logPath, copies: copies, ledger: ledger})
	nc, err := nats.Connect(sys.url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	defer nc.Close()

	var (
		statsMu sync.Mutex
		stats   = map[string]messages.AgentStats{} // last seen, per agent incarnation
		wg      sync.WaitGroup
	)
	// The clock's goroutine stops before the system.
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	collect := func() {
		for _, s := range agentStats(nc, 300*time.Millisecond) {
			statsMu.Lock()
			stats[fmt.Sprintf("%s/%d", s.Agent, s.PID)] = s
			statsMu.Unlock()
		}
	}

	// The plan: every saga, with outcomes mixed by the seed.
	plan := makePlan(rng, numSagas)

	// Starters: sixteen clients start the planned sagas at a steady rate
	// the system can serve, retrying with the same id until the
	// coordinator acknowledges.
	var next atomic.Int64
	var startWG sync.WaitGroup
	pace := time.NewTicker(time.Second / time.Duration(startRate))
	defer pace.Stop()
	for range 16 {
		startWG.Add(1)
		go func() {
			defer startWG.Done()
			for {
				select {
				case <-pace.C:
				case <-ctx.Done():
					return
				}
				i := int(next.Add(1)) - 1
				if i >= len(plan) {
					return
				}
				p := plan[i]
				req, _ := json.Marshal(messages.StartRequest{V: messages.Version, SagaID: p.id, Context: p.ctx})
				for ctx.Err() == nil {
					m, err := nc.Request(messages.StartSubject(p.typ), req, 2*time.Second)
					if err != nil {
						continue
					}
					var resp messages.StartResponse
					if json.Unmarshal(m.Data, &resp) == nil && resp.Error == nil {
						p.started.Store(true)
						break
					}
				}
			}
		}()
	}

	// The clock ticks on.
	var tick atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(2 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			data, _ := json.Marshal(messages.Tick{V: messages.Version, Tick: tick.Add(1)})
			_ = nc.Publish(messages.TickSubject, data)
		}
	}()

	// Chaos: a seeded schedule of SIGKILLs, several for each kind of process.
	victims := []string{}
	for range 4 {
		victims = append(victims, "coordinator")
	}
	for _, role := range roles {
		victims = append(victims, role, role)
	}
	victims = append(victims, "nats-server", "nats-server")
	rng.Shuffle(len(victims), func(i, j int) { victims[i], victims[j] = victims[j], victims[i] })
	// The kills are spread over the time it takes to start every saga.
	gap := time.Duration(numSagas/startRate) * time.Second / time.Duration(len(victims)+1)
	kills := sys.kill(ctx, killSchedule{victims: victims, rng: rng, began: began, beforeAgent: collect,
		delay: func() time.Duration { return gap + time.Duration(rng.IntN(1000))*time.Millisecond }})
	startWG.Wait()

	// Every saga must reach a terminal state.
	var sum messages.Summary
	finished := assert.Eventually(t, func() bool {
		m, err := nc.Request(messages.SummarySubject, []byte("{}"), time.Second)
		if err != nil || json.Unmarshal(m.Data, &sum) != nil {
			return false
		}
		return sum.Active == 0 && sum.Completed+sum.RolledBack+sum.TimedOut+sum.Failed == numSagas
	}, 2*time.Minute, 100*time.Millisecond, "sagas never all finished: %+v", &sum)
	if !finished {
		logUnfinished(t, nc)
		t.FailNow()
	}
	collect()

	verify(t, ctx, nc, plan, ledger)

	statsMu.Lock()
	f := figures{Sagas: numSagas, Kills: kills, Restarts: int(sys.restarts.Load()), Ticks: tick.Load(),
		Seconds: time.Since(began).Seconds(), Statuses: map[string]int{
			"completed": sum.Completed, "rolled_back": sum.RolledBack, "timed_out": sum.TimedOut, "failed": sum.Failed}}
	for k, s := range stats {
		t.Logf("agent %s: handled %d, redelivered %d, duplicates %d, refused %d", k, s.Handled, s.Redelivered, s.Duplicates, s.Refused)
		f.Redeliveries += s.Redelivered
		f.Duplicates += s.Duplicates
		f.Refused += s.Refused
	}
	statsMu.Unlock()
	report, _ := json.MarshalIndent(f, "", "  ")
	t.Logf("chaos figures:\n%s", report)
	if path := os.Getenv("NATSAGA_CHAOS_REPORT"); path != "" {
		require.NoError(t, os.WriteFile(path, report, 0o644))
	}
	if sum.Failed > 0 {
		req, _ := json.Marshal(messages.ListRequest{V: messages.Version, Status: string(saga.Failed), Limit: 3})
		if m, err := nc.Request(messages.ListSubject, req, 5*time.Second); err == nil {
			t.Logf("failed sagas (first 3): %s", m.Data)
		}
	}
	require.Equal(t, 0, sum.Failed, "no saga may end failed")
	require.Positive(t, sum.Completed)
	require.Positive(t, sum.RolledBack)
	cancel()
	wg.Wait()
	sys.stop()
}

// makePlan seeds n sagas of the three types, with contexts that lead to
// every outcome: completions, budget exhaustion, damage under the
// deductible, unsuitable sites and slow contractors.
func makePlan(rng *rand.Rand, n int) []*planned {
	plan := make([]*planned, n)
	for i := range plan {
		c := messages.Context{}.MustSet(flood.KeyHousehold, fmt.Sprintf("h%04d", rng.IntN(n/4+1)))
		var typ string
		switch rng.IntN(3) {
		case 0:
			typ = flood.Subsidy
			c.MustSet(flood.KeySubsidyCost, budgetCost)
		case 1:
			typ = flood.Insurance
			c.MustSet(flood.KeyDamage, int64(rng.IntN(12_000_00))).MustSet(flood.KeyDeductible, int64(1_000_00)).
				MustSet(flood.KeyCoverage, int64(8_000_00))
		default:
			typ = flood.Elevation
			c.MustSet(flood.KeyElevationCost, 2*budgetCost)
			switch r := rng.IntN(20); {
			case r == 0:
				c.MustSet(flood.KeySite, "unsuitable")
			case r == 1:
				c.MustSet(flood.KeyContractorTicks, int64(6))
			case r < 5:
				c.MustSet(flood.KeyContractorTicks, int64(1))
			}
		}
		plan[i] = &planned{id: uuid.NewString(), typ: typ, ctx: c}
	}
	return plan
}

// verify checks, from the coordinator's records and from the agents' own
// durable stores, that every saga ended, every ledger equals the sum over
// the completed sagas, each effect was applied exactly once and each
// compensation at most once, and compensations ran in reverse order.
func verify(t *testing.T, ctx context.Context, nc *nats.Conn, plan []*planned, opening map[string]int64) {
	stores := map[string]*participant.Store{}
	for _, role := range roles {
		s, err := participant.OpenStore(ctx, nc, role, false, 1)
		require.NoError(t, err)
		stores[role] = s
	}
	defs := map[string]saga.Definition{}
	for _, d := range flood.Definitions() {
		defs[d.Subject] = d
	}
	want := map[string]int64{}
	for _, p := range plan {
		require.True(t, p.started.Load(), "saga %s never started", p.id)
		x := status(t, nc, p.id)
		require.True(t, x.Status.Terminal(), "saga %s is %s", p.id, x.Status)
		def := defs[p.typ]
		var compSeqs []int
		for i, st := range def.Steps {
			rec, _, err := stores[st.Role].Branch(ctx, p.id, st.Name)
			require.NoError(t, err)
			executed := rec.Execute != nil && rec.Execute.Outcome == messages.OK
			if x.Status == saga.Completed {
				require.True(t, executed, "completed saga %s: step %s has no execute record", p.id, st.Name)
				require.Nil(t, rec.Compensate, "completed saga %s: step %s was compensated", p.id, st.Name)
				continue
			}
			if executed {
				require.NotNil(t, rec.Compensate, "%s saga %s: step %s took effect and was never compensated", x.Status, p.id, st.Name)
				require.False(t, rec.Compensate.Noop, "saga %s: step %s compensated as a no-op after it took effect", p.id, st.Name)
			}
			if rec.Compensate != nil {
				compSeqs = append(compSeqs, rec.Compensate.Seq)
			}
			_ = i
		}
		// Compensations go out one at a time from the last step back, so
		// their sequence numbers fall as the step index rises.
		for i := 1; i < len(compSeqs); i++ {
			require.Greater(t, compSeqs[i-1], compSeqs[i], "saga %s: compensations out of reverse order: %v", p.id, compSeqs)
		}
		if x.Status != saga.Completed {
			continue
		}
		switch p.typ {
		case flood.Subsidy:
			want[flood.Government+"/"+flood.Subsidy] += mustInt(t, x.Context, flood.KeySubsidyPaid)
		case flood.Elevation:
			want[flood.Government+"/"+flood.Elevation] += mustInt(t, x.Context, flood.KeyGrant)
		case flood.Insurance:
			want[flood.Insurer+"/"+flood.Insurance] += mustInt(t, x.Context, flood.KeyPayoutReceived)
		}
	}
	for role, open := range opening {
		var l flood.Ledger
		_, err := stores[role].Get(ctx, flood.LedgerKey, &l)
		require.NoError(t, err)
		require.Equal(t, open, l.Initial)
		require.GreaterOrEqual(t, l.Balance, int64(0), "%s ledger negative", role)
		require.Equal(t, l.Initial-l.Balance, l.SpentTotal(), "%s ledger does not balance", role)
		for k, v := range l.Spent {
			require.Equal(t, want[role+"/"+k], v, "%s spent on %s differs from the completed sagas", role, k)
		}
		t.Logf("%s ledger: opening %d, balance %d, spent %v", role, l.Initial, l.Balance, l.Spent)
	}
}

// logUnfinished logs every active saga, with its history, for a failure
// report.
func logUnfinished(t *testing.T, nc *nats.Conn) {
	t.Helper()
	req, _ := json.Marshal(messages.ListRequest{V: messages.Version})
	m, err := nc.Request(messages.ListSubject, req, 5*time.Second)
	if err != nil {
		t.Logf("list: %v", err)
		return
	}
	var resp struct {
		Sagas []saga.Execution `json:"sagas"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		t.Logf("list: %v", err)
		return
	}
	for _, x := range resp.Sagas {
		t.Logf("unfinished %s (%s) %s: step %d %s attempt %d seq %d awaiting %v retry at %v, history %+v",
			x.ID, x.Definition, x.Status, x.Current, x.Action, x.Attempt, x.Seq, x.Awaiting, x.RetryAt, x.History)
	}
}

func status(t *testing.T, nc *nats.Conn, id string) saga.Execution {
	req, _ := json.Marshal(messages.StatusRequest{V: messages.Version, SagaID: id})
	var resp messages.StatusResponse
	var err error
	for range 20 {
		var m *nats.Msg
		if m, err = nc.Request(messages.StatusSubject, req, 2*time.Second); err == nil {
			err = json.Unmarshal(m.Data, &resp)
			break
		}
	}
	require.NoError(t, err)
	require.Nil(t, resp.Error, "status %s", id)
	var x saga.Execution
	require.NoError(t, json.Unmarshal(resp.Saga, &x))
	return x
}

func mustInt(t *testing.T, c messages.Context, key string) int64 {
	v, err := c.Int64(key)
	require.NoError(t, err)
	return v
}

// agentStats gathers the statistics of every agent that answers within wait.
func agentStats(nc *nats.Conn, wait time.Duration) []messages.AgentStats {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(messages.AgentStatsSubject, inbox, nil); err != nil {
		return nil
	}
	var out []messages.AgentStats
	deadline := time.Now().Add(wait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if errors.Is(err, nats.ErrTimeout) || err != nil {
			return out
		}
		var s messages.AgentStats
		if json.Unmarshal(m.Data, &s) == nil {
			out = append(out, s)
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func envInt(key string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(key)); err == nil && v > 0 {
		return v
	}
	return def
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
