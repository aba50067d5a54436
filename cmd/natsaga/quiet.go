package main

import (
	"context"
	"time"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/messages"
)

// quietPoll spaces the summaries "natsaga quiet" asks for; quietRetick,
// the ticks it sends again meanwhile, as a simulation's driver does, so
// that an agent restarted while the tick waits learns the time.
const (
	quietPoll   = 10 * time.Millisecond
	quietRetick = time.Second
)

// waitQuiet waits until the current tick is quiet (no command due at or
// before it lacks its final answer: Summary.Due is 0) and returns that
// summary. When it is not quiet within wait it returns the last summary
// and a *client.NotQuietError naming a few sagas that hold the tick, and
// the error of the request, with no summary (V 0), when no summary came
// at all.
func waitQuiet(ctx context.Context, cl *client.Client, wait time.Duration) (messages.Summary, error) {
	return cl.WaitQuiet(ctx, client.Quiet{Poll: quietPoll, Limit: wait, Within: wait, Retick: quietRetick})
}
