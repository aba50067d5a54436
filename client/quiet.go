package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// Quiet configures how [Client.WaitQuiet] and [Client.Advance] wait for a
// quiet tick. The zero value works.
type Quiet struct {
	// Poll spaces the summaries asked for. 0 or less means 10ms.
	Poll time.Duration
	// Limit is how long the wait may see no command answered (neither the
	// due count nor the summary's answers move) before it gives up with a
	// [*NotQuietError]: an agent broke its word, being dead or late. 0 or
	// less means one minute.
	Limit time.Duration
	// Retick, when positive, sends the tick again at this interval while
	// waiting, so that an agent restarted meanwhile learns the time.
	Retick time.Duration
	// Within, when positive, bounds the whole wait: the tick not quiet
	// within it gives up with a [*NotQuietError] too, however the due
	// count moves.
	Within time.Duration
}

// WaitQuiet waits until the current tick is quiet by the rule of
// docs/simulation.md: no command due at or before it lacks its final
// answer (Summary.Due is 0), and returns that summary. When no command is
// answered for q.Limit (Summary.Due and Summary.Answered stay the same: a
// ranked saga's next command is due as its answer comes, so the due count
// alone may stand still while the sagas move) it returns the last summary
// and a [*NotQuietError] wrapping ErrNotQuiet; so it does when the tick is
// not quiet within q.Within, when set, and when no coordinator answers a
// summary within either bound (a second past it at most). A run that goes on then can no
// longer be reproduced. It returns ctx's error, with the last summary
// seen, when ctx ends first.
func (c *Client) WaitQuiet(ctx context.Context, q Quiet) (messages.Summary, error) {
	if q.Poll <= 0 {
		q.Poll = 10 * time.Millisecond
	}
	if q.Limit <= 0 {
		q.Limit = time.Minute
	}
	poll := time.NewTicker(q.Poll)
	defer poll.Stop()
	start := time.Now()
	last, answered, changed, reticked := -1, int64(-1), start, start
	var seen messages.Summary
	for {
		// A summary asked while no coordinator answers (stopped, or a
		// standby not yet taken over) is asked again for as long as the
		// client's patience: the wait's bounds hold it too, give or take
		// summaryGrace, which a coordinator that answers always has.
		bound := changed.Add(q.Limit)
		if end := start.Add(q.Within); q.Within > 0 && end.Before(bound) {
			bound = end
		}
		deadline := bound
		if least := time.Now().Add(summaryGrace); deadline.Before(least) {
			deadline = least
		}
		sctx, cancel := context.WithDeadline(ctx, deadline)
		sum, err := c.Summary(sctx)
		cancel()
		if err != nil && ctx.Err() == nil && errors.Is(sctx.Err(), context.DeadlineExceeded) {
			reason := fmt.Sprintf("tick %d: nothing answered for %s", seen.Tick, q.Limit)
			if !bound.Equal(changed.Add(q.Limit)) {
				reason = fmt.Sprintf("tick %d: not quiet within %s", seen.Tick, q.Within)
			}
			return seen, &NotQuietError{Summary: seen, Reason: reason + "; the coordinator answers no summary: " + err.Error()}
		}
		if err != nil {
			return seen, err
		}
		seen = sum
		if sum.Due == 0 {
			return sum, nil
		}
		now := time.Now()
		if sum.Due != last || sum.Answered != answered {
			last, answered, changed = sum.Due, sum.Answered, now
		}
		if q.Within > 0 && now.Sub(start) > q.Within {
			return sum, c.notQuiet(ctx, sum, fmt.Sprintf("tick %d: %s, not quiet within %s", sum.Tick, dueCommands(sum.Due), q.Within))
		}
		if now.Sub(changed) > q.Limit {
			return sum, c.notQuiet(ctx, sum, fmt.Sprintf("tick %d: %s had no answer for %s", sum.Tick, dueCommands(sum.Due), q.Limit))
		}
		if q.Retick > 0 && now.Sub(reticked) >= q.Retick {
			if _, err := c.Tick(ctx, sum.Tick); err != nil {
				return sum, err
			}
			reticked = now
		}
		select {
		case <-ctx.Done():
			return sum, fmt.Errorf("waiting for tick %d to be quiet: %w", sum.Tick, ctx.Err())
		case <-poll.C:
		}
	}
}

// Advance is one step of a simulation run: it waits for the current tick
// to be quiet, sends tick, and waits for tick to be quiet in turn, so that
// the next Advance may follow at once. It returns the summary of the quiet
// tick, and the errors of [Client.WaitQuiet] and [Client.Tick].
func (c *Client) Advance(ctx context.Context, tick int64, q Quiet) (messages.Summary, error) {
	if sum, err := c.WaitQuiet(ctx, q); err != nil {
		return sum, err
	}
	if _, err := c.Tick(ctx, tick); err != nil {
		return messages.Summary{}, err
	}
	return c.WaitQuiet(ctx, q)
}

// summaryGrace is how long WaitQuiet lets a summary take past the wait's
// bounds before it gives up on the coordinator answering.
const summaryGrace = time.Second

// dueCommands says n commands are due.
func dueCommands(n int) string {
	if n == 1 {
		return "1 command due"
	}
	return fmt.Sprintf("%d commands due", n)
}

// notQuiet is the error of a tick that sum says is not quiet, for reason,
// naming a few of the sagas it waits for, as the coordinator lists them.
func (c *Client) notQuiet(ctx context.Context, sum messages.Summary, reason string) *NotQuietError {
	e := &NotQuietError{Summary: sum, Reason: reason}
	var active []saga.Execution
	for _, st := range []saga.Status{saga.InProgress, saga.Compensating} {
		xs, err := c.List(ctx, st, waitingScan)
		if err != nil {
			break // the reason stays the count alone
		}
		active = append(active, xs...)
	}
	e.Waiting = holding(active, sum.Tick, maxWaitingNamed)
	if w := e.WaitingFor(); w != "" {
		e.Reason += "; " + w
	}
	return e
}

// holding returns up to n of active, the active sagas at tick, that hold
// the tick: each owes an answer due by now (its command unanswered, a
// retry waiting, or work it said would end by tick), and, when ranked, is
// in the lowest round that owes one. A ranked saga of a later round waits
// for that round, unreleased, and holds nothing itself: naming it would
// point at an agent that has nothing to do.
func holding(active []saga.Execution, tick int64, n int) []saga.Execution {
	owes := func(x *saga.Execution) bool {
		return (x.Awaiting && !x.Working) || !x.RetryAt.IsZero() || (x.Working && x.Until > 0 && x.Until <= tick)
	}
	low, ranked := int64(0), false
	for i := range active {
		if x := &active[i]; owes(x) && x.Rank > 0 && (!ranked || x.Round < low) {
			low, ranked = x.Round, true
		}
	}
	var held []saga.Execution
	for i := range active {
		if x := &active[i]; owes(x) && (x.Rank == 0 || x.Round == low) && len(held) < n {
			held = append(held, *x)
		}
	}
	return held
}

// WaitingFor names the sagas of e.Waiting, their steps and attempts
// ("waiting for s-1 (greeting, execute greet.say_hello, attempt 1)": the
// definition's name, then the step as its subject names it, saga.<subject>.<step>), or
// returns "" when it has none.
func (e *NotQuietError) WaitingFor() string {
	var names []string
	for i := range e.Waiting {
		x := &e.Waiting[i]
		names = append(names, fmt.Sprintf("%s (%s, %s %s.%s, attempt %d)", x.ID, x.Definition, x.Action, x.Saga, x.LastStep(), x.Attempt))
	}
	if len(names) == 0 {
		return ""
	}
	return "waiting for " + strings.Join(names, ", ")
}

// waitingScan bounds the active sagas of each status a not-quiet error
// looks through; maxWaitingNamed, those it names.
const (
	waitingScan     = 4 * messages.MaxListPage
	maxWaitingNamed = 3
)
