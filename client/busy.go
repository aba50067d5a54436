package client

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/natsaga/natsaga/messages"
)

// busyBackoff is the first wait before a start the coordinator answered
// "busy" is sent again, and busyBackoffMax the longest: the wait doubles in
// between.
const (
	busyBackoff    = 50 * time.Millisecond
	busyBackoffMax = 2 * time.Second
)

// retryBusy calls start until it answers with anything but the error code
// [messages.CodeBusy], waiting busyBackoff before the second call and
// twice as long before each next one, up to busyBackoffMax. A start
// answered busy started nothing, so sending it again is safe.
//
// retryBusy returns start's last answer and error. When ctx ends while it
// waits, or while a start sent again is out, it returns the last busy
// answer and an error wrapping ctx's error: the coordinator's last word.
// log, nil for none, gets a debug line for every busy answer. stuck, nil
// for none, is asked after each busy answer whether sending again is in
// vain: an error it returns is retryBusy's, with no answer.
func retryBusy(ctx context.Context, log *slog.Logger, start func(context.Context) (*messages.WireError, error),
	stuck func(context.Context) error) (*messages.WireError, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wait := busyBackoff
	var busy *messages.WireError
	for attempt := 1; ; attempt++ {
		answer, err := start(ctx)
		if err != nil && busy != nil && ctx.Err() != nil {
			return busy, fmt.Errorf("busy after %d attempts: %w", attempt-1, ctx.Err())
		}
		if err != nil || answer == nil || answer.Code != messages.CodeBusy {
			return answer, err
		}
		busy = answer
		if stuck != nil {
			if err := stuck(ctx); err != nil {
				return nil, err
			}
		}
		log.Debug("coordinator busy; starting again after a backoff", "attempt", attempt, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return answer, fmt.Errorf("busy after %d attempts: %w", attempt, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, busyBackoffMax)
	}
}

// readNotBusy sends req, a read (it changes nothing), on subject, and sends
// it again while the coordinator answers "busy": at its limit of reads of
// its bucket at once, or between two terms (a coordinator taking over,
// or one that lost its lease while paused). errOf gives an answer's error.
// It returns the first answer that is not busy; when ctx ends first, an
// error wrapping ErrBusy and ctx's error.
func readNotBusy[R any](ctx context.Context, c *Client, subject string, req any, errOf func(*R) *messages.WireError) (R, error) {
	var resp R
	answer, err := retryBusy(ctx, c.log, func(ctx context.Context) (*messages.WireError, error) {
		var zero R
		resp = zero
		if err := c.request(ctx, subject, req, &resp); err != nil {
			return nil, err
		}
		return errOf(&resp), nil
	}, nil)
	if err != nil && answer != nil {
		// ctx ended while the coordinator still said busy.
		return resp, fmt.Errorf("%w: %w", wireErr(subject, answer), err)
	}
	return resp, err
}
