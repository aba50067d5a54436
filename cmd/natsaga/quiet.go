package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
)

// quietPoll spaces the summaries "natsaga quiet" asks for.
const quietPoll = 10 * time.Millisecond

// errNotQuiet is returned when the tick did not become quiet in time.
var errNotQuiet = errors.New("the tick is not quiet")

// waitQuiet waits until the current tick is quiet (no command due at or
// before it lacks its final answer: Summary.Due is 0) and returns that
// summary. It returns an error wrapping errNotQuiet, with the last summary,
// when ctx ends first, and the error of the request, with no summary
// (V 0), when no summary came at all.
func waitQuiet(ctx context.Context, cl *client.Client) (messages.Summary, error) {
	// The limit is the caller's -wait, which ctx carries.
	s, err := cl.WaitQuiet(ctx, client.Quiet{Poll: quietPoll, Limit: 100 * 365 * 24 * time.Hour})
	if err != nil && ctx.Err() != nil && s.V != 0 {
		return s, fmt.Errorf("tick %d: %s due: %w", s.Tick, count(s.Due, "command"), errNotQuiet)
	}
	return s, err
}
