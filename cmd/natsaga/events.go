package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
)

// eventsOptions are the flags of "natsaga events".
type eventsOptions struct {
	saga, status string
	all, follow  bool
	n            int
}

func (o *eventsOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.saga, "saga", "", "only sagas of this type: its subject (elevation) or its definition's name (elevation_grant)")
	fs.StringVar(&o.status, "status", "", "only this status (in_progress, compensating, completed, rolled_back, timed_out, failed)")
	fs.IntVar(&o.n, "n", 0, "print the latest N events kept, then stop (unless -f)")
	fs.BoolVar(&o.all, "all", false, "print every event kept, oldest first, then stop (unless -f)")
	fs.BoolVar(&o.follow, "f", false, "after -n or -all, go on printing new events until interrupted")
}

func (o *eventsOptions) validate(fs *flag.FlagSet, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %v", args)
	}
	if o.saga != "" {
		if err := messages.CheckToken("saga", o.saga); err != nil {
			return err
		}
	}
	if o.status != "" {
		if err := client.CheckEventStatus(o.status); err != nil {
			return err
		}
	}
	if o.n < 0 || (o.n == 0 && given(fs, "n")) {
		return errors.New("-n must be positive (without it, the new events are printed)")
	}
	if o.n > 0 && o.all {
		return errors.New("-n and -all: choose one")
	}
	return nil
}

// given reports whether the flag name was set on the command line.
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// printEvents prints the saga events of the event stream that o selects,
// as a table or, with asJSON, one JSON object a line: the latest o.n kept,
// every one kept (o.all), or new ones; it stops once those kept are
// printed unless o.follow is set or neither o.n nor o.all is, and at the
// end of ctx.
func printEvents(ctx context.Context, cl *client.Client, o eventsOptions, asJSON bool, stdout io.Writer) error {
	events, err := cl.Watch(ctx, client.Watch{Saga: o.saga, Status: o.status, All: o.all, Last: o.n,
		KeptOnly: (o.all || o.n > 0) && !o.follow})
	if err != nil {
		return err
	}
	if !asJSON {
		printf(stdout, "%-6s  %-36s  %-10s  %-13s  %s\n", "TICK", "SAGA_ID", "TYPE", "STATUS", "REASON")
	}
	for ev, err := range events {
		if err != nil {
			return err
		}
		if asJSON {
			line, err := json.Marshal(ev)
			if err != nil {
				return fmt.Errorf("events: %w", err)
			}
			fmt.Fprintln(stdout, string(line))
			continue
		}
		printf(stdout, "%-6d  %-36s  %-10s  %-13s  %s\n", ev.Tick, ev.SagaID, ev.Saga, ev.Status, clip(ev.Reason, 100))
	}
	return nil
}

// servicesWait is how long "natsaga services" gathers answers.
const servicesWait = time.Second

// listServices prints the natsaga micro services that answer an INFO
// request within servicesWait.
func listServices(ctx context.Context, cl *client.Client, o *options, stdout, _ io.Writer) error {
	infos, err := cl.Services(ctx, servicesWait)
	if err != nil {
		return err
	}
	if o.json {
		printJSON(stdout, infos)
		return nil
	}
	t := table(stdout)
	fmt.Fprintln(t, "SERVICE\tID\tVERSION\tROLE/STATE\tSERIAL\tCOPY\tPID\tMETRICS\tENDPOINTS")
	for _, in := range infos {
		var eps []string
		for _, e := range in.Endpoints {
			eps = append(eps, e.Name)
		}
		role := in.Metadata["role"] // an agent's
		if role == "" {
			role = in.Metadata["state"] // a coordinator's: active or standby
		}
		// An agent's serial ("true", "false"); a coordinator announces none.
		printf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.Name, in.ID, in.Version, orDash(role), orDash(in.Metadata["serial"]),
			orDash(in.Metadata["copy"]),
			orDash(in.Metadata["pid"]), orDash(in.Metadata["metrics"]), fmt.Sprint(eps))
	}
	_ = t.Flush()
	fmt.Fprintln(stdout, count(len(infos), "service"))
	return nil
}
