package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/messages"
)

// quietPoll spaces the summaries "natsaga quiet" asks for.
const quietPoll = 10 * time.Millisecond

// errNotQuiet is returned when the tick did not become quiet in time.
var errNotQuiet = errors.New("the tick is not quiet")

func parseQuiet(args []string) (time.Duration, error) {
	fs := flag.NewFlagSet("quiet", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	wait := fs.Duration("wait", time.Minute, "how long to wait for the tick to become quiet")
	if err := fs.Parse(args); err != nil {
		return 0, fmt.Errorf("quiet: %w", err)
	}
	if fs.NArg() > 0 {
		return 0, fmt.Errorf("quiet: unexpected arguments %v", fs.Args())
	}
	if *wait <= 0 {
		return 0, errors.New("quiet: -wait must be positive")
	}
	return *wait, nil
}

// waitQuiet asks for the summary until the current tick is quiet (no
// command due at or before it lacks its final answer: Summary.Due is 0)
// and returns that summary. It returns an error wrapping errNotQuiet, with
// the last summary, when ctx ends first.
func waitQuiet(ctx context.Context, nc *nats.Conn) (messages.Summary, error) {
	var s messages.Summary
	for {
		m, err := nc.RequestWithContext(ctx, messages.SummarySubject, nil)
		if err == nil {
			if err := json.Unmarshal(m.Data, &s); err != nil {
				return s, fmt.Errorf("%s: %w", messages.SummarySubject, err)
			}
			if s.Due == 0 {
				return s, nil
			}
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("tick %d: %d commands due: %w", s.Tick, s.Due, errNotQuiet)
		case <-time.After(quietPoll):
		}
	}
}
