package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

func (c *Coordinator) subscribe() ([]*nats.Subscription, error) {
	handlers := map[string]nats.MsgHandler{
		messages.StartSubjects:   c.onStart,
		messages.TickSubject:     c.onTick,
		messages.StatusSubject:   c.onStatus,
		messages.SummarySubject:  c.onSummary,
		messages.ListSubject:     c.onList,
		messages.RetrySubject:    c.onRetry,
		messages.RegisterSubject: c.onRegister,
	}
	var subs []*nats.Subscription
	for subj, h := range handlers {
		s, err := c.nc.Subscribe(subj, h)
		if err != nil {
			for _, s := range subs {
				_ = s.Unsubscribe()
			}
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
		subs = append(subs, s)
	}
	return subs, nil
}

// respond answers m with v, if m asked for an answer.
func (c *Coordinator) respond(m *nats.Msg, v any) {
	if m.Reply == "" {
		return
	}
	data, err := json.Marshal(v)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		c.log.Warn("response not sent", "subject", m.Subject, "err", err)
	}
}

// wireError maps an error to its wire form.
func wireError(err error) *messages.WireError {
	code := messages.CodeInternal
	switch {
	case errors.Is(err, messages.ErrBadRequest), errors.Is(err, messages.ErrVersion), errors.Is(err, messages.ErrTooLarge),
		errors.Is(err, saga.ErrInvalidDefinition):
		code = messages.CodeBadRequest
	case errors.Is(err, saga.ErrUnknownSaga), errors.Is(err, saga.ErrUnknownDefinition):
		code = messages.CodeNotFound
	case errors.Is(err, saga.ErrNotFailed), errors.Is(err, saga.ErrTerminal), errors.Is(err, saga.ErrDuplicateDefinition),
		errors.Is(err, jetstream.ErrKeyExists):
		code = messages.CodeConflict
	}
	return &messages.WireError{Code: code, Message: err.Error()}
}

// enqueue hands in to the loop. It reports false, dropping in, when the
// loop has stopped; an unacknowledged input is then delivered again to the
// next coordinator, and a request times out at its sender.
func (c *Coordinator) enqueue(in input) bool {
	select {
	case c.in <- in:
		return true
	case <-c.stopped:
		return false
	}
}

func (c *Coordinator) onStart(m *nats.Msg) {
	sagaType, _ := messages.ParseStartSubject(m.Subject)
	var req messages.StartRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.log.Warn("bad start request", "subject", m.Subject, "err", err)
		c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	if req.SagaID == "" {
		c.enqueue(c.startInput(m, sagaType, req))
		return
	}
	if err := messages.CheckToken("saga_id", req.SagaID); err != nil {
		c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	// A client-chosen id may name a saga that finished long ago and is
	// only in the bucket. Look there off the subscription's goroutine, so
	// starts are not served one bucket read at a time; a saga finishing
	// meanwhile is still known to the engine (Start returns ErrTerminal).
	go func() {
		if c.answerFinished(m, req.SagaID) {
			return
		}
		c.enqueue(c.startInput(m, sagaType, req))
	}()
}

func (c *Coordinator) startInput(m *nats.Msg, sagaType string, req messages.StartRequest) input {
	return func(_ time.Time, out *saga.Outbox) func(error) {
		x, err := c.engine.StartWith(req.SagaID, sagaType, req.Context, saga.StartOptions{Rank: req.Rank, Tick: req.Tick}, out)
		if errors.Is(err, saga.ErrTerminal) {
			// Answer once the batch that may hold its end is stored.
			return func(error) { go c.answerFinished(m, req.SagaID) }
		}
		if err != nil {
			c.log.Warn("start refused", "saga", sagaType, "err", err)
			c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
			return nil
		}
		resp := messages.StartResponse{V: messages.Version, SagaID: x.ID, Status: string(x.Status)}
		return func(err error) {
			if err != nil {
				resp = messages.StartResponse{V: messages.Version, Error: wireError(err)}
			}
			c.respond(m, resp)
		}
	}
}

// answerFinished answers a start request for id from the bucket when id
// names a finished saga, and reports whether it did.
func (c *Coordinator) answerFinished(m *nats.Msg, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := c.kv.Get(ctx, messages.SagaKey(id))
	if err != nil {
		return false
	}
	var x saga.Execution
	if json.Unmarshal(e.Value(), &x) != nil || !x.Status.Terminal() {
		return false
	}
	c.respond(m, messages.StartResponse{V: messages.Version, SagaID: x.ID, Status: string(x.Status)})
	return true
}

func (c *Coordinator) onTick(m *nats.Msg) {
	var t messages.Tick
	if err := messages.Decode(m.Data, &t); err != nil {
		c.log.Warn("bad tick", "err", err)
		c.respond(m, messages.TickAck{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(func(_ time.Time, out *saga.Outbox) func(error) {
		from := len(out.Expired)
		c.engine.AdvanceTick(t.Tick, out)
		expired := append([]string(nil), out.Expired[from:]...)
		if len(expired) > 0 {
			c.log.Info("tick expired sagas", "tick", t.Tick, "expired", len(expired))
		}
		return func(err error) {
			ack := messages.TickAck{V: messages.Version, Tick: c.engine.Tick(), Expired: expired}
			if err != nil {
				ack.Error = wireError(err)
			} else {
				s := c.engine.Summary()
				ack.Summary = &s
			}
			c.respond(m, ack)
		}
	})
}

func (c *Coordinator) onSummary(m *nats.Msg) {
	c.enqueue(func(time.Time, *saga.Outbox) func(error) {
		c.respond(m, c.engine.Summary())
		return nil
	})
}

func (c *Coordinator) onStatus(m *nats.Msg) {
	var req messages.StatusRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(func(time.Time, *saga.Outbox) func(error) {
		x, err := c.engine.Get(req.SagaID)
		if err == nil {
			data, _ := json.Marshal(x)
			c.respond(m, messages.StatusResponse{V: messages.Version, Saga: data})
			return nil
		}
		go c.statusFromBucket(m, req.SagaID, err)
		return nil
	})
}

// statusFromBucket answers a status request for a saga no longer in memory.
func (c *Coordinator) statusFromBucket(m *nats.Msg, id string, notHeld error) {
	if !messages.ValidToken(id) {
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(fmt.Errorf("saga_id %q: %w", id, messages.ErrBadRequest))})
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := c.kv.Get(ctx, messages.SagaKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(notHeld)})
	case err != nil:
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(err)})
	default:
		c.respond(m, messages.StatusResponse{V: messages.Version, Saga: e.Value()})
	}
}

func (c *Coordinator) onList(m *nats.Msg) {
	var req messages.ListRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.respond(m, messages.ListResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	st := saga.Status(req.Status)
	if st != "" && (!st.Valid() || (st.Terminal() && st != saga.Failed)) {
		err := fmt.Errorf("status %q: list takes an active status or %q; ask for a finished saga by id: %w", req.Status, saga.Failed, messages.ErrBadRequest)
		c.respond(m, messages.ListResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(func(time.Time, *saga.Outbox) func(error) {
		resp := messages.ListResponse{V: messages.Version, Sagas: []json.RawMessage{}}
		for _, x := range c.engine.List(st, req.Limit) {
			data, _ := json.Marshal(x)
			resp.Sagas = append(resp.Sagas, data)
		}
		c.respond(m, resp)
		return nil
	})
}

func (c *Coordinator) onRetry(m *nats.Msg) {
	var req messages.RetryRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	if err := messages.CheckToken("saga_id", req.SagaID); err != nil {
		c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(func(_ time.Time, out *saga.Outbox) func(error) {
		if err := c.engine.RetryCompensation(req.SagaID, out); err != nil {
			if errors.Is(err, saga.ErrUnknownSaga) {
				go c.retryFinished(m, req.SagaID, err)
				return nil
			}
			c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
			return nil
		}
		c.log.Info("operator retry of a failed saga", "saga_id", req.SagaID)
		return func(err error) {
			resp := messages.RetryResponse{V: messages.Version, Status: string(saga.Compensating)}
			if err != nil {
				resp = messages.RetryResponse{V: messages.Version, Error: wireError(err)}
			}
			c.respond(m, resp)
		}
	})
}

// retryFinished answers a retry for a saga no longer in memory: one that
// finished other than failed is a conflict, one never seen is not found.
func (c *Coordinator) retryFinished(m *nats.Msg, id string, notHeld error) {
	err := notHeld
	if messages.ValidToken(id) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if e, gerr := c.kv.Get(ctx, messages.SagaKey(id)); gerr == nil {
			var x saga.Execution
			if json.Unmarshal(e.Value(), &x) == nil {
				err = fmt.Errorf("retry %s: status %s: %w", id, x.Status, saga.ErrNotFailed)
			}
		}
	}
	c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
}
