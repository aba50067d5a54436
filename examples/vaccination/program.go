package vaccination

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/agentmain"
)

// Program returns role as an agent program of its own (cmd/vaxagent, on
// package agentmain). The depot's program takes -stock, the doses it opens
// the stock with the first time its store is used (the default
// scenario's), and answers [StockSubject] beside its agent. It returns an
// error for an unknown role.
func Program(role string) (agentmain.Role, error) {
	steps, err := Steps(role)
	if err != nil {
		return agentmain.Role{}, err
	}
	r := agentmain.Role{Name: role, Steps: steps, Serial: Serial(role)}
	if role == Depot {
		stock := doses(DefaultScenario().Stock)
		r.Flags = func(fs *flag.FlagSet) {
			fs.Var(&stock, "stock", "`doses` in stock the first time the depot's store is used (not negative)")
		}
		r.Init = func(ctx context.Context, s agent.Seeder) error { return InitStock(int64(stock))(ctx, s) }
		r.Serve = func(ctx context.Context, nc *nats.Conn, _ *slog.Logger) error { return ServeStock(ctx, nc) }
	}
	return r, nil
}

// doses is a flag's count of doses: a number, not negative.
type doses int64

func (d *doses) String() string { return strconv.FormatInt(int64(*d), 10) }

func (d *doses) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	switch {
	case err != nil:
		return errors.New("not a whole number")
	case n < 0:
		return errors.New("negative")
	}
	*d = doses(n)
	return nil
}
