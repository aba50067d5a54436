package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// requestTimeout bounds one request to the coordinator; a request that
// times out is sent again, identical, so that it stays idempotent.
const requestTimeout = 5 * time.Second

// restartPatience is how long a request waits for a coordinator that does
// not answer at all.
const restartPatience = time.Minute

// errNotFound is returned by client.status for a saga the coordinator does
// not know.
var errNotFound = errors.New("saga not found")

// probe is the body of a request whose subject says it all.
type probe struct {
	V int `json:"v"`
}

// client speaks natsaga's protocol to the coordinator and the agents, as
// the simulation driver does. It is safe for concurrent use.
type client struct {
	nc  *nats.Conn
	log *slog.Logger
}

// request sends req on subject and decodes the answer into resp. It sends
// the same request again, up to attempts times in all, when the answer
// does not come in time or nobody listens yet; any other error, or the end
// of ctx, ends it.
func (c *client) request(ctx context.Context, subject string, req, resp any, attempts int) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode: %w", subject, err)
	}
	// Nobody answering means the coordinator is (re)starting, which can
	// take a lease's TTL and a recovery: that is waited out for up to
	// restartPatience, apart from the attempts.
	patience := time.Now().Add(restartPatience)
	for attempt := 1; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		m, err := c.nc.RequestWithContext(rctx, subject, data)
		cancel()
		if err == nil {
			if err := messages.Decode(m.Data, resp); err != nil {
				return fmt.Errorf("%s: %w", subject, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", subject, ctx.Err())
		}
		noResponders := errors.Is(err, nats.ErrNoResponders)
		retry := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || noResponders
		if noResponders && time.Now().Before(patience) {
			attempt = min(attempt, attempts-1)
		}
		if !retry || attempt >= attempts {
			return fmt.Errorf("%s: attempt %d: %w", subject, attempt, err)
		}
		if !errors.Is(err, nats.ErrNoResponders) {
			c.log.Warn("request not answered; sending it again", "subject", subject, "attempt", attempt, "err", err)
		} else {
			// No responder fails at once: the coordinator is not up (yet).
			// Give it a moment.
			c.log.Debug("nobody answers; asking again", "subject", subject, "attempt", attempt)
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s: %w", subject, ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
}

// summary returns the coordinator's summary.
func (c *client) summary(ctx context.Context, attempts int) (messages.Summary, error) {
	var s messages.Summary
	err := c.request(ctx, messages.SummarySubject, probe{V: messages.Version}, &s, attempts)
	return s, err
}

// tick advances the coordinator's clock to tick, and the agents' with it,
// asking up to attempts times.
func (c *client) tick(ctx context.Context, tick int64, attempts int) (messages.TickAck, error) {
	var ack messages.TickAck
	if err := c.request(ctx, messages.TickSubject, messages.Tick{V: messages.Version, Tick: tick}, &ack, attempts); err != nil {
		return ack, err
	}
	if ack.Error != nil {
		return ack, fmt.Errorf("tick %d: %w", tick, ack.Error)
	}
	return ack, nil
}

// start schedules a saga of type sagaType, with the id and rank the driver
// chose, to start at tick; a request sent again starts it once.
func (c *client) start(ctx context.Context, sagaType, id string, rank, tick int64, sctx messages.Context) error {
	var resp messages.StartResponse
	req := messages.StartRequest{V: messages.Version, SagaID: id, Rank: rank, Tick: tick, Context: sctx}
	if err := c.request(ctx, messages.StartSubject(sagaType), req, &resp, 5); err != nil {
		return err
	}
	if resp.Error != nil {
		return fmt.Errorf("start %s saga %s: %w", sagaType, id, resp.Error)
	}
	return nil
}

// status returns the state of saga id, active or finished. It returns an
// error wrapping errNotFound when the coordinator does not know it.
func (c *client) status(ctx context.Context, id string) (saga.Execution, error) {
	var resp messages.StatusResponse
	var x saga.Execution
	if err := c.request(ctx, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id}, &resp, 5); err != nil {
		return x, err
	}
	if resp.Error != nil {
		if resp.Error.Code == messages.CodeNotFound {
			return x, fmt.Errorf("saga %s: %w: %w", id, errNotFound, resp.Error)
		}
		return x, fmt.Errorf("status of saga %s: %w", id, resp.Error)
	}
	if err := json.Unmarshal(resp.Saga, &x); err != nil {
		return x, fmt.Errorf("status of saga %s: %w", id, err)
	}
	return x, nil
}

// agentStats asks every running agent for its statistics and collects the
// answers until want agents have answered (any number when want is 0) or
// wait has passed, whichever is first. Each agent answers once.
func (c *client) agentStats(ctx context.Context, want int, wait time.Duration) ([]messages.AgentStats, error) {
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	data, err := json.Marshal(probe{V: messages.Version})
	if err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	if err := c.nc.PublishRequest(messages.AgentStatsSubject, inbox, data); err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	seen := map[string]bool{}
	var stats []messages.AgentStats
	for want == 0 || len(stats) < want {
		m, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return stats, fmt.Errorf("agent stats: %w", ctx.Err())
			}
			break // wait has passed
		}
		var s messages.AgentStats
		if err := messages.Decode(m.Data, &s); err != nil {
			c.log.Warn("bad agent stats answer", "err", err)
			continue
		}
		if !seen[s.Agent] {
			seen[s.Agent] = true
			stats = append(stats, s)
		}
	}
	return stats, nil
}
