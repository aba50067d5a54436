package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
)

// eventsOptions are the flags of "natsaga events".
type eventsOptions struct {
	saga, status string
	all          bool
	n            int
}

func parseEvents(args []string) (eventsOptions, error) {
	var o eventsOptions
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.saga, "saga", "", "only sagas of this type")
	fs.StringVar(&o.status, "status", "", "only this status (in_progress, compensating, completed, rolled_back, timed_out, failed)")
	fs.BoolVar(&o.all, "all", false, "start from the oldest event kept, not from now")
	fs.IntVar(&o.n, "n", 0, "stop after this many events (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("events: %w", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("events: unexpected arguments %v", fs.Args())
	}
	for what, v := range map[string]string{"saga": o.saga, "status": o.status} {
		if v != "" {
			if err := messages.CheckToken(what, v); err != nil {
				return o, fmt.Errorf("events: %w", err)
			}
		}
	}
	if o.n < 0 {
		return o, errors.New("events: -n must not be negative")
	}
	return o, nil
}

// streamEvents prints the saga events kept in the event stream, one JSON
// object a line, until ctx ends or o.n were printed.
func streamEvents(ctx context.Context, nc *nats.Conn, o eventsOptions, stdout io.Writer) error {
	cl, err := client.New(nc, client.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, err := cl.Watch(ctx, client.Watch{Saga: o.saga, Status: o.status, All: o.all})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	printed := 0
	for ev, err := range events {
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		line, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		fmt.Fprintln(stdout, string(line))
		if printed++; o.n > 0 && printed >= o.n {
			return nil
		}
	}
	return nil
}
