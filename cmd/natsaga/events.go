package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	sagaTok, statusTok := "*", "*"
	if o.saga != "" {
		sagaTok = o.saga
	}
	if o.status != "" {
		statusTok = o.status
	}
	policy := jetstream.DeliverNewPolicy
	if o.all {
		policy = jetstream.DeliverAllPolicy
	}
	cons, err := js.OrderedConsumer(ctx, messages.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{messages.EventSubject(sagaTok, statusTok)},
		DeliverPolicy:  policy,
	})
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for printed := 0; o.n == 0 || printed < o.n; printed++ {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		}
		fmt.Fprintln(stdout, string(m.Data()))
	}
	return nil
}
