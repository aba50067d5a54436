// Package agentcmd is the flood model's side of cmd/household-agent,
// cmd/government-agent, cmd/insurer-agent and cmd/contractor-agent: each
// flood role as an [agentmain.Role], with the opening ledger of a role that
// holds money (-ledger), its balance as a metric, and the answers to the
// flood state query.
package agentcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/agentmain"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/metrics"
	"github.com/natsaga/natsaga/participant"
)

// DefaultLedger is the opening ledger of each role that holds money.
var DefaultLedger = map[string]int64{flood.Government: 1_000_000_00, flood.Insurer: 2_000_000_00}

// Role returns the flood role as an agent program. It returns an error
// for a role flood does not have.
func Role(role string) (agentmain.Role, error) {
	steps, err := flood.Steps(role)
	if err != nil {
		return agentmain.Role{}, err
	}
	r := agentmain.Role{Name: role, Steps: steps, Serial: flood.Serial(role),
		Serve: func(ctx context.Context, nc *nats.Conn, _ *slog.Logger) error {
			return participant.ServeQueries(ctx, nc, role, flood.StateSubject(role), flood.AnswerState)
		}}
	if def, ok := DefaultLedger[role]; ok {
		ledger := cents(def)
		r.Flags = func(fs *flag.FlagSet) {
			fs.Var(&ledger, "ledger", "opening balance in cents (budget or fund), applied once when the store is new")
		}
		r.Init = func(ctx context.Context, s agent.Seeder) error { return flood.InitLedger(int64(ledger))(ctx, s) }
		r.Metrics = RegisterMetrics
	}
	return r, nil
}

// Main is the program of role: [agentmain.Main] of [Role].
func Main(role string) int {
	r, err := Role(role)
	if err != nil {
		panic(err) // a program built for a role flood does not have
	}
	return agentmain.Main(r)
}

// cents is a flag's amount of money: an integer, not negative.
type cents int64

func (c *cents) String() string { return strconv.FormatInt(int64(*c), 10) }

func (c *cents) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return fmt.Errorf("out of range: at most %d cents", int64(math.MaxInt64))
	case err != nil:
		return errors.New("not a whole number of cents")
	}
	if v < 0 {
		return fmt.Errorf("%d: must not be negative", v)
	}
	*c = cents(v)
	return nil
}

// RegisterMetrics registers with reg, for a role that holds money, its
// ledger balance, read from a's store at each scrape (absent until the
// agent has opened it).
func RegisterMetrics(reg prometheus.Registerer, a *participant.Agent, log *slog.Logger) error {
	role := a.Stats().Role
	read := func(ctx context.Context) (int64, error) {
		st := a.Store()
		if st == nil {
			return 0, errStoreNotOpen
		}
		var l flood.Ledger
		if _, err := st.Get(ctx, flood.LedgerKey, &l); err != nil {
			return 0, err
		}
		return l.Balance, nil
	}
	return metrics.RegisterLedger(reg, role, read, log)
}

// errStoreNotOpen is why a ledger is not read before the agent runs.
var errStoreNotOpen = errors.New("the agent's store is not open yet")
