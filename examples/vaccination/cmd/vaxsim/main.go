// Command vaxsim runs the vaccination campaign of package vaccination: a
// nats-server, the coordinator, the agents and the driver, in one process,
// and prints the outcome counts, the stock and the outcome log's SHA-256.
// Two runs with the same flags print the same digest, each on a server new
// to the campaign (the default starts one in the process).
//
// On a server of yours (-nats), -agents-elsewhere runs no agent: they run
// as processes of their own (cmd/vaxagent), the depot with its own -stock;
// -coordinator-elsewhere runs no coordinator: one runs already
// (cmd/coordinator), and vaxsim registers the campaign's sagas with it.
// With both, vaxsim is the driver alone. A second campaign on the same
// server begins with the stock the first left, and so ends differently.
//
// Usage:
//
//	vaxsim [-seed 1] [-patients 120] [-ticks 8] [-stock 40] [-copies 1] [-outcomes FILE]
//	       [-nats URL [-agents-elsewhere] [-coordinator-elsewhere]]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/natsaga/natsaga/examples/vaccination"
	"github.com/natsaga/natsaga/saga"
)

func main() { os.Exit(mainCode(os.Args[1:], os.Stdout, os.Stderr)) }

// readyWait is vaccination.Options.ReadyWait: 0, its default, but for
// the tests.
var readyWait time.Duration

// The most patients and ticks of a campaign: a campaign holds every
// patient's booking in memory, and runs its ticks one after another.
const (
	maxPatients = 1_000_000
	maxTicks    = 100_000
)

func mainCode(args []string, stdout, stderr io.Writer) int {
	sc := vaccination.DefaultScenario()
	var o vaccination.Options
	var outcomes string
	fs := flag.NewFlagSet("vaxsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Uint64Var(&sc.Seed, "seed", sc.Seed, "scenario seed")
	fs.IntVar(&sc.Patients, "patients", sc.Patients, "patients who book")
	fs.IntVar(&sc.Ticks, "ticks", sc.Ticks, "ticks of the campaign")
	fs.Int64Var(&sc.Stock, "stock", sc.Stock, "doses in stock at the start")
	fs.IntVar(&o.Copies, "copies", 1, "copies of each agent")
	fs.StringVar(&o.URL, "nats", "", "NATS server URL (default: one started in the process)")
	fs.StringVar(&outcomes, "outcomes", "", "write the outcome log to this file")
	fs.BoolVar(&o.AgentsElsewhere, "agents-elsewhere", false, "run no agent: they run as processes of their own (vaxagent) on the -nats server")
	fs.BoolVar(&o.CoordinatorElsewhere, "coordinator-elsewhere", false, "run no coordinator: one runs already on the -nats server, and the campaign's sagas are registered with it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vaxsim: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if sc.Patients <= 0 || sc.Patients > maxPatients || sc.Ticks <= 0 || sc.Ticks > maxTicks || sc.Stock < 0 || o.Copies < 1 || o.Copies > 8 {
		fmt.Fprintf(stderr, "vaxsim: -patients 1 to %d, -ticks 1 to %d, -stock not negative, -copies 1 to 8\n", maxPatients, maxTicks)
		return 2
	}
	if o.URL == "" && (o.AgentsElsewhere || o.CoordinatorElsewhere) {
		fmt.Fprintln(stderr, "vaxsim: -agents-elsewhere and -coordinator-elsewhere need -nats, the server they run on")
		return 2
	}
	if o.AgentsElsewhere {
		// They set up the agents vaxsim starts; said, not ignored.
		var set []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "stock" || f.Name == "copies" {
				set = append(set, "-"+f.Name)
			}
		})
		if len(set) > 0 {
			fmt.Fprintf(stderr, "vaxsim: %s: of the agents vaxsim starts, and with -agents-elsewhere it starts none (give the depot its own: vaxagent depot -stock N)\n",
				strings.Join(set, " and "))
			return 2
		}
	}
	// The outcome log's file is opened now: one that cannot be written is
	// said before the campaign runs, not after.
	var log *os.File
	if outcomes != "" {
		f, err := os.OpenFile(outcomes, os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(stderr, "vaxsim: -outcomes:", err)
			return 2
		}
		defer f.Close()
		log = f
	}
	o.Scenario = sc
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o.ReadyWait = readyWait
	rep, err := vaccination.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(stderr, "vaxsim:", err)
		if errors.Is(err, vaccination.ErrAnotherCoordinator) {
			// The error speaks of Run's options; say the flag.
			fmt.Fprintln(stderr, "vaxsim: -coordinator-elsewhere drives the campaign with the coordinator that runs there")
		}
		return 1
	}
	fmt.Fprintf(stdout, "vaxsim: seed %d, %d patients, %d ticks\n", sc.Seed, sc.Patients, sc.Ticks)
	fmt.Fprintf(stdout, "sagas: %s\n", counts(rep.Counts))
	fmt.Fprintf(stdout, "vaccinated %d, turned away with a fever %d (their doses returned)\n", rep.Vaccinated, rep.TurnedAway)
	fmt.Fprintf(stdout, "stock: %d doses left of %d + %d received, %d dispensed\n", rep.Stock.Doses, rep.Stock.Initial, rep.Stock.Received, rep.Stock.Dispensed)
	fmt.Fprintf(stdout, "outcome log SHA-256: %s\n", rep.Digest)
	if log != nil {
		if err := writeLog(log, rep.Log); err != nil {
			fmt.Fprintln(stderr, "vaxsim: -outcomes:", err)
			return 1
		}
	}
	return 0
}

// writeLog writes data to f, in place of what a regular file held.
func writeLog(f *os.File, data []byte) error {
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		if err := f.Truncate(0); err != nil {
			return err
		}
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	return f.Close()
}

// counts says how many sagas there are of each status, in the order a
// saga's life goes through them.
func counts(c map[saga.Status]int) string {
	var says []string
	for _, s := range []saga.Status{saga.Pending, saga.InProgress, saga.Compensating, saga.Completed, saga.RolledBack, saga.TimedOut, saga.Failed} {
		if n := c[s]; n > 0 {
			says = append(says, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(says) == 0 {
		return "none"
	}
	return strings.Join(says, ", ")
}
