package vaccination

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
)

// Options configures [Run]. The zero value runs the default scenario.
type Options struct {
	Scenario Scenario
	// URL is a NATS server to use; empty, Run starts one in the process,
	// with its data in a temporary directory.
	URL string
	// Copies is how many copies of each agent run. 0 means 1.
	Copies int
	// AgentsElsewhere runs no agent, nor the stock query: they run as
	// processes of their own (cmd/vaxagent), on the server URL names.
	AgentsElsewhere bool
	// CoordinatorElsewhere runs no coordinator: one runs already on the
	// server URL names (cmd/coordinator), and Run registers [SagasFile]
	// with it, as `natsaga register` would, before it drives the campaign.
	CoordinatorElsewhere bool
	// Logger receives the logs. nil discards them.
	Logger *slog.Logger
	// ReadyWait bounds the wait for the campaign's coordinator to become
	// active, or for one elsewhere to answer. 0 means 30s.
	ReadyWait time.Duration
}

// ErrAnotherCoordinator is wrapped by Run's error when the server already
// has an active coordinator, so that the campaign's own stands by.
var ErrAnotherCoordinator = errors.New("another coordinator holds the lease")

// Run runs a whole campaign in this process: a nats-server (unless
// o.URL names one), a coordinator of [Definitions] (unless one runs
// elsewhere), o.Copies copies of each role's agent (unless they run
// elsewhere), and the driver, [Simulate]. It returns the report, or the
// first error of any part.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Scenario.Patients == 0 {
		o.Scenario = DefaultScenario()
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	url := o.URL
	if url == "" && (o.AgentsElsewhere || o.CoordinatorElsewhere) {
		return nil, errors.New("vaccination: agents or a coordinator elsewhere need the URL of their server")
	}
	if url == "" {
		dir, err := os.MkdirTemp("", "vaxsim")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true})
		if err != nil {
			return nil, fmt.Errorf("nats-server: %w", err)
		}
		go ns.Start()
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		if !ns.ReadyForConnections(10 * time.Second) {
			return nil, errors.New("nats-server: not ready after 10s")
		}
		url = ns.ClientURL()
	}
	defs, err := Definitions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	defer nc.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(name string, fn func(context.Context) error) {
		wg.Go(func() {
			if err := fn(ctx); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	var ready <-chan struct{}
	if !o.CoordinatorElsewhere {
		// Every start admitted: the scenario bounds the campaign's sagas
		// (a million patients at most), and its driver has no flag to
		// raise the limit with.
		co, err := coordinator.New(nc, coordinator.Options{Definitions: defs, Logger: log, MaxActive: -1, MaxActiveBytes: -1})
		if err != nil {
			return nil, err
		}
		run("coordinator", co.Run)
		ready = co.Ready()
	}
	for _, role := range roles(o) {
		steps, err := Steps(role)
		if err != nil {
			return nil, err
		}
		for i := range max(o.Copies, 1) {
			opts := participant.Options{Role: role, Steps: steps, Serial: Serial(role),
				Name: fmt.Sprintf("%s-%d", role, i+1), Logger: log}
			if role == Depot {
				opts.Init = InitStock(o.Scenario.Stock)
			}
			a, err := participant.New(nc, opts)
			if err != nil {
				return nil, err
			}
			run(opts.Name, a.Run)
		}
	}
	if !o.AgentsElsewhere {
		run("stock query", func(ctx context.Context) error { return ServeStock(ctx, nc) })
	}
	wait := cmp.Or(o.ReadyWait, 30*time.Second)
	c, err := client.New(nc, client.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	if o.CoordinatorElsewhere {
		// Registered again, the same version is taken as it is; the
		// request waits up to wait for a coordinator to answer.
		rctx, cancel := context.WithTimeout(ctx, wait)
		_, err := c.Register(rctx, SagasFile)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the coordinator on %s: %w", url, err)
		}
	} else {
		select {
		case <-ready:
		case err := <-errs:
			return nil, err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
			// A coordinator of the server's already holds the lease:
			// this one stands by, and a campaign would wait for ever.
			return nil, fmt.Errorf("the campaign's coordinator did not become active within %s: %w on %s; "+
				"Run starts its own, so give it a server of its own (or stop the other), or run it with CoordinatorElsewhere", wait, ErrAnotherCoordinator, url)
		}
	}
	rep, err := Simulate(ctx, c, o.Scenario, quietFor)
	select {
	case perr := <-errs:
		return rep, errors.Join(err, perr)
	default:
	}
	return rep, err
}

// ServeStock answers [StockSubject] with the depot's stock, read from the
// depot's committed state, until ctx ends. A depot agent's process runs it.
// The copies of the depot share the subject: one answers each request.
func ServeStock(ctx context.Context, nc *nats.Conn) error {
	type answer struct {
		Stock *Stock              `json:"stock,omitempty"`
		Error *messages.WireError `json:"error,omitempty"`
	}
	return participant.ServeQueries(ctx, nc, Depot, StockSubject,
		func(_ context.Context, _ []byte, read func([]string, func(int) any) ([]bool, error)) any {
			var s Stock
			if _, err := read([]string{StockKey}, func(int) any { return &s }); err != nil {
				return answer{Error: &messages.WireError{Code: messages.CodeInternal, Message: err.Error()}}
			}
			return answer{Stock: &s}
		})
}

// roles are the roles whose agents Run starts: all, unless they run
// elsewhere.
func roles(o Options) []string {
	if o.AgentsElsewhere {
		return nil
	}
	return []string{Patient, Depot, Clinic}
}
