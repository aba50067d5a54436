package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// wireError maps an error to its wire form.
func wireError(err error) *messages.WireError {
	code := messages.CodeInternal
	switch {
	case errors.Is(err, messages.ErrBusy):
		// First: a store refused because another writer was first wraps
		// JetStream's wrong-last-sequence error, which is also
		// jetstream.ErrKeyExists, and is busy all the same.
		code = messages.CodeBusy
	case errors.Is(err, messages.ErrBadRequest), errors.Is(err, messages.ErrVersion), errors.Is(err, messages.ErrTooLarge),
		errors.Is(err, saga.ErrInvalidDefinition):
		code = messages.CodeBadRequest
	case errors.Is(err, saga.ErrUnknownSaga), errors.Is(err, saga.ErrUnknownDefinition):
		code = messages.CodeNotFound
	case errors.Is(err, saga.ErrNotFailed), errors.Is(err, saga.ErrTerminal), errors.Is(err, saga.ErrDuplicateDefinition), errors.Is(err, saga.ErrIDTaken),
		errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, errDeletedID):
		code = messages.CodeConflict
	case errors.Is(err, errTooLargeToAnswer):
		code = messages.CodeTooLarge
	}
	return &messages.WireError{Code: code, Message: err.Error()}
}

// enqueue hands in to the loop. It reports false, dropping in, when the
// loop has stopped or ctx (the term's, for its pullers and requests) has
// ended; an unacknowledged input is then delivered again to the next
// coordinator, and a request times out at its sender. Without ctx, a
// producer blocked on a full queue whose loop has returned would keep its
// term from ending.
func (c *Coordinator) enqueue(ctx context.Context, in input) bool {
	t := c.term.Load()
	select {
	case t.in <- in:
		return true
	case <-t.stopped:
		return false
	case <-ctx.Done():
		return false
	}
}

func (c *Coordinator) onStart(ctx context.Context, m *nats.Msg) {
	sagaType, _ := messages.ParseStartSubject(m.Subject)
	req, err := decodeStartRequest(m.Data)
	if err == nil {
		err = messages.CheckToken("saga", sagaType)
	}
	if limit := c.nc.MaxPayload() / 4; err == nil && int64(len(m.Data)) > limit {
		// Room for the answers the saga's steps add to its state.
		err = fmt.Errorf("start request of %d bytes, limit %d (a quarter of the server's payload limit): %w", len(m.Data), limit, messages.ErrTooLarge)
	}
	if err != nil {
		c.warns.Warn("bad start request", "subject", messages.Clip(m.Subject), "err", err)
		c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	if req.SagaID != "" {
		if err := messages.CheckToken("saga_id", req.SagaID); err != nil {
			c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
			return
		}
	}
	if err := c.busy(int64(len(m.Data))); err != nil {
		// Answered at once: a start over the limit is never queued.
		c.respond(m, messages.StartResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	// A start alone is a batch of one (starts.go), answered with its one
	// result.
	b := &startBatch{
		starts:  []messages.BatchedStart{{Saga: sagaType, SagaID: req.SagaID, Rank: req.Rank, Tick: req.Tick, Context: req.Context}},
		sizes:   []int{len(m.Data)},
		results: make([]messages.StartResponse, 1),
		live:    []int{0},
		trace:   m,
	}
	b.finish = func() { c.respond(m, b.results[0]) }
	c.lookUpAndStart(ctx, b)
}

// decodeStartRequest reads a start request as [messages.Decode] reads one,
// with the errors it returns, without reflection: starts alone come at
// the rate of sagas (a bench profile found encoding/json at 5 % of the
// coordinator's CPU, decoding them).
func decodeStartRequest(data []byte) (messages.StartRequest, error) {
	if len(data) > messages.MaxPayload {
		return messages.StartRequest{}, fmt.Errorf("%d bytes, limit %d: %w", len(data), messages.MaxPayload, messages.ErrTooLarge)
	}
	if err := messages.CheckUTF8(data); err != nil {
		return messages.StartRequest{}, err
	}
	req, err := wirejson.DecodeStartRequest(data)
	if err != nil {
		return req, fmt.Errorf("%w: %w", messages.ErrBadRequest, err)
	}
	if req.V != messages.Version {
		return req, fmt.Errorf("version %d, want %d: %w", req.V, messages.Version, messages.ErrVersion)
	}
	return req, nil
}

// Admission. A start is admitted while the sagas in flight are fewer
// than Options.MaxActive and, with the bytes of the start as received
// (size), hold no more than Options.MaxActiveBytes, as
// saga.Engine.ActiveBytes counts them; but a start is never refused for
// its bytes while no saga is in flight, so that one larger than the
// budget is not refused for ever. A start is checked twice: as it comes,
// against the counts after the last batch (busy), so that a start over a
// limit is never queued; and on the loop, against the engine's counts as
// the starts before it left them (admits).

// busy returns the error a start of size bytes (1 for a batch: any start
// holds at least a byte) is answered with when the sagas in flight after
// the last batch leave no room for it, and nil when they do.
func (c *Coordinator) busy(size int64) error {
	return c.overLimits(c.active.Load(), c.activeBytes.Load(), size)
}

// admits returns the error a start of size bytes is answered with on the
// loop when the sagas in flight leave no room for it, and nil when they do.
func (c *Coordinator) admits(size int) error {
	return c.overLimits(int64(c.engine.Summary().Active), c.engine.ActiveBytes(), int64(size))
}

// overLimits returns the busy error of a start of size bytes while active
// sagas in flight hold held bytes, or nil when it is admitted.
func (c *Coordinator) overLimits(active, held, size int64) error {
	if c.opts.MaxActive > 0 && active >= int64(c.opts.MaxActive) {
		return fmt.Errorf("the limit of sagas in flight (%d) is reached: %w", c.opts.MaxActive, messages.ErrBusy)
	}
	if most := c.opts.MaxActiveBytes; most > 0 && held > 0 && held+size > most {
		return fmt.Errorf("the sagas in flight hold %d bytes; a start of %d would pass the limit (%d bytes): %w", held, size, most, messages.ErrBusy)
	}
	return nil
}

// countActive notes the sagas in flight and the bytes they hold, for busy.
func (c *Coordinator) countActive() {
	c.active.Store(int64(c.engine.Summary().Active))
	c.activeBytes.Store(c.engine.ActiveBytes())
}

func (c *Coordinator) onTick(ctx context.Context, m *nats.Msg) {
	var t messages.Tick
	if err := messages.Decode(m.Data, &t); err != nil {
		c.warns.Warn("bad tick", "err", err)
		// Every tick answer names the coordinator's tick, which the loop
		// owns: the refusal is answered from there (with no tick only
		// when the loop has stopped).
		refuse := func(tick int64) {
			c.respond(m, messages.TickAck{V: messages.Version, Tick: tick, Error: wireError(err)})
		}
		if !c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) { refuse(c.engine.Tick()); return nil }) {
			refuse(0)
		}
		return
	}
	c.enqueue(ctx, func(_ time.Time, out *saga.Outbox) func(error) {
		from := len(out.Expired)
		if err := c.engine.AdvanceTick(t.Tick, out); err != nil {
			c.warns.Warn("tick refused", "tick", t.Tick, "err", err)
			c.respond(m, messages.TickAck{V: messages.Version, Tick: c.engine.Tick(), Error: wireError(err)})
			return nil
		}
		all := out.Expired[from:]
		expired := append([]string(nil), all[:min(len(all), messages.MaxListPage)]...)
		count := len(all)
		if count > 0 {
			c.log.Info("tick expired sagas", "tick", t.Tick, "expired", count)
		}
		return func(err error) {
			ack := messages.TickAck{V: messages.Version, Tick: c.engine.Tick(), Expired: expired, ExpiredCount: count}
			if err != nil {
				// The batch was not stored, and the term ends: the
				// coordinator that recovers holds the clock as it was
				// stored, and the same tick sent again is applied once.
				ack.Error = wireError(notStored(fmt.Sprintf("tick %d", t.Tick), err))
			} else {
				s := c.summary()
				ack.Summary = &s
			}
			c.respond(m, ack)
		}
	})
}

// onSummary answers a summary once the batch it is read in is stored: a
// driver that finds the tick quiet (due 0) then finds it so after any
// restart. Answered before, it could name a quiet that a coordinator
// killed before the store never had (a step's "working until" note lost),
// and the driver's next tick, heard by the agents at once, would let
// their answers land a tick early in the coordinator that recovers. A
// batch that is not stored ends the term unanswered; the client asks the
// next coordinator.
func (c *Coordinator) onSummary(ctx context.Context, m *nats.Msg) {
	c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) {
		return func(err error) {
			if err == nil {
				c.respond(m, c.summary())
			}
		}
	})
}

// summary is the engine's summary with the coordinator's own counts.
func (c *Coordinator) summary() messages.Summary {
	s := c.engine.Summary()
	s.Refused = c.refused.Load()
	return s
}

func (c *Coordinator) onStatus(ctx context.Context, m *nats.Msg) {
	var req messages.StatusRequest
	err := messages.Decode(m.Data, &req)
	if err == nil {
		err = messages.CheckToken("saga_id", req.SagaID)
	}
	if err != nil {
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) {
		x, notHeld := c.engine.Get(req.SagaID)
		if notHeld == nil {
			data, err := json.Marshal(x)
			if err != nil {
				c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(fmt.Errorf("saga %s does not encode: %w", req.SagaID, err))})
				return nil
			}
			c.respond(m, messages.StatusResponse{V: messages.Version, Saga: data})
			return nil
		}
		// A saga no longer in memory may have finished: it is in the
		// bucket once the batch that ended it, maybe this one, is
		// committed.
		return c.readAfterCommit(ctx, "status of "+req.SagaID, func(read context.Context) { c.statusFromBucket(read, m, req.SagaID, notHeld) },
			func(err error) { c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(err)}) })
	})
}

// notStored is the error of a request whose batch the store refused: the
// term ends, and the same request, sent again, is applied once by the
// coordinator that recovers. It is busy, not the store's refusal (another
// writer's wrong last sequence reads as jetstream.ErrKeyExists, a
// conflict), which would tell a client the saga was past it.
func notStored(what string, err error) error {
	return fmt.Errorf("%w: %s not stored; send it again: %w", messages.ErrBusy, what, err)
}

// readAfterCommit returns what an input does once its batch is
// committed: start read, a read of the bucket (see [bucketReads]), or, when
// the commit failed or no read can start, call fail with the error; what
// names the request in it.
func (c *Coordinator) readAfterCommit(ctx context.Context, what string, read func(context.Context), fail func(error)) func(error) {
	return func(err error) {
		if err != nil {
			err = fmt.Errorf("%w: %s not answered; send it again: %w", messages.ErrBusy, what, err)
		} else {
			err = c.reads.start(ctx, bucketWait, read)
		}
		if err != nil {
			fail(err)
		}
	}
}

// statusFromBucket answers a status request for a saga no longer in memory.
func (c *Coordinator) statusFromBucket(ctx context.Context, m *nats.Msg, id string, notHeld error) {
	e, err := c.kv.Get(ctx, messages.SagaKey(id))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(notHeld)})
	case err != nil:
		c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(c.readError(ctx, err))})
	default:
		if _, err := storedSaga(id, e.Value()); err != nil {
			c.log.Error("status not answered", "err", err)
			c.respond(m, messages.StatusResponse{V: messages.Version, Error: wireError(err)})
			return
		}
		c.respond(m, messages.StatusResponse{V: messages.Version, Saga: e.Value()})
	}
}

// storedSaga decodes data, the bucket's entry of saga id. An entry that is
// not that saga's state, which only something other than a coordinator
// can have written, is an error that says which key to repair.
func storedSaga(id string, data []byte) (saga.Execution, error) {
	x, err := wirejson.DecodeExecution(data)
	switch {
	case err != nil:
	case string(x.ID) != id:
		err = fmt.Errorf("saga_id %q", x.ID)
	case !x.Status.Valid():
		err = fmt.Errorf("status %q", x.Status)
	default:
		return x, nil
	}
	return saga.Execution{}, fmt.Errorf("saga %s: its entry in the bucket is not a saga's state (an operator must repair or delete key %s): %w", id, messages.SagaKey(id), err)
}

func (c *Coordinator) onList(ctx context.Context, m *nats.Msg) {
	var req messages.ListRequest
	if err := messages.Decode(m.Data, &req); err != nil {
		c.respond(m, messages.ListResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	st := saga.Status(req.Status)
	finished := st.Terminal() && st != saga.Failed
	var after *saga.ListCursor
	var err error
	switch {
	case st != "" && !st.Valid():
		err = fmt.Errorf("status %s: not a saga status (pending, in_progress, compensating, failed, completed, rolled_back or timed_out): %w", messages.Quote(req.Status), messages.ErrBadRequest)
	case req.Limit < 0 || req.Limit > messages.MaxListPage:
		err = fmt.Errorf("limit %d: a page holds 1 to %d sagas (0: %d, or %d of those that finished completed, rolled_back or timed_out): %w",
			req.Limit, messages.MaxListPage, messages.MaxListPage, DefaultFinishedList, messages.ErrBadRequest)
	case finished && req.After != "":
		err = fmt.Errorf("cursor %s: the sagas that finished %s come in one page, the latest; a cursor pages active sagas: %w", messages.Quote(req.After), st, messages.ErrBadRequest)
	case req.After != "":
		tick, id, perr := messages.ParseListCursor(req.After)
		after, err = &saga.ListCursor{StartedTick: tick, ID: id}, perr
	}
	if err != nil {
		c.respond(m, messages.ListResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	if finished {
		c.listFinished(ctx, m, st, req.Limit)
		return
	}
	limit := req.Limit
	if limit == 0 {
		limit = messages.MaxListPage
	}
	c.enqueue(ctx, func(time.Time, *saga.Outbox) func(error) {
		c.respond(m, c.listPage(st, after, limit))
		return nil
	})
}

// listPage returns a page of at most limit sagas with status st after
// after, cut shorter when more would not fit the server's payload limit.
func (c *Coordinator) listPage(st saga.Status, after *saga.ListCursor, limit int) messages.ListResponse {
	resp := messages.ListResponse{V: messages.Version, Sagas: []json.RawMessage{}}
	xs := c.engine.ListAfter(st, after, limit+1)
	more := len(xs) > limit
	xs = xs[:min(len(xs), limit)]
	budget := c.answerBudget()
	size := 0
	for i := range xs {
		data, err := json.Marshal(&xs[i])
		if err != nil {
			return messages.ListResponse{V: messages.Version, Error: wireError(err)}
		}
		if size+len(data)+1 > budget {
			if i == 0 {
				err := fmt.Errorf("saga %s is %d bytes, over the server's payload limit of %d: %w", xs[i].ID, len(data), c.nc.MaxPayload(), errTooLargeToAnswer)
				return messages.ListResponse{V: messages.Version, Error: wireError(err)}
			}
			more = true
			xs = xs[:i]
			break
		}
		size += len(data) + 1
		resp.Sagas = append(resp.Sagas, data)
	}
	if more && len(xs) > 0 {
		last := saga.CursorOf(&xs[len(xs)-1])
		resp.Next = messages.FormatListCursor(last.StartedTick, last.ID)
	}
	return resp
}

func (c *Coordinator) onRetry(ctx context.Context, m *nats.Msg) {
	var req messages.RetryRequest
	err := messages.Decode(m.Data, &req)
	if err == nil {
		err = messages.CheckToken("saga_id", req.SagaID)
	}
	if err != nil {
		c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	c.enqueue(ctx, func(_ time.Time, out *saga.Outbox) func(error) {
		if err := c.engine.RetryCompensation(req.SagaID, out); err != nil {
			if errors.Is(err, saga.ErrUnknownSaga) {
				// In the bucket once the batch that ended it, maybe this
				// one, is committed.
				notHeld := err
				return c.readAfterCommit(ctx, "retry of "+req.SagaID, func(read context.Context) { c.retryFinished(read, m, req.SagaID, notHeld) },
					func(err error) { c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)}) })
			}
			c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(err)})
			return nil
		}
		c.log.Info("operator retry of a failed saga", "saga_id", req.SagaID)
		cmd, _ := c.engine.Command(req.SagaID)
		untrace := c.traceRetry(m, req.SagaID, cmd.Saga)
		return func(err error) {
			resp := messages.RetryResponse{V: messages.Version, Status: string(saga.Compensating)}
			if err != nil {
				untrace()
				resp = messages.RetryResponse{V: messages.Version, Error: wireError(notStored("retry of "+req.SagaID, err))}
			} else if o, ok := c.opts.Observer.(RetryObserver); ok {
				o.Retried(cmd.Saga)
			}
			c.respond(m, resp)
		}
	})
}

// onAbort rolls back an active saga at an operator's request: the step in
// flight and the completed ones are compensated, in reverse order, and the
// saga ends rolled_back with "aborted: " and the reason as its error. A
// saga compensating already is left as it is, and answered so.
func (c *Coordinator) onAbort(ctx context.Context, m *nats.Msg) {
	var req messages.AbortRequest
	err := messages.Decode(m.Data, &req)
	if err == nil {
		err = req.Validate()
	}
	if err != nil {
		c.respond(m, messages.AbortResponse{V: messages.Version, Error: wireError(err)})
		return
	}
	reason := req.Reason
	if reason == "" {
		reason = "by an operator"
	}
	c.enqueue(ctx, func(_ time.Time, out *saga.Outbox) func(error) {
		// The batch's other inputs may change the saga too: only what the
		// rollback added is its.
		before := len(out.Changed)
		if err := c.engine.Rollback(req.SagaID, reason, out); err != nil {
			switch {
			case errors.Is(err, saga.ErrUnknownSaga):
				// In the bucket once the batch that ended it, maybe this
				// one, is committed.
				notHeld := fmt.Errorf("abort %s: %w", req.SagaID, saga.ErrUnknownSaga)
				return c.readAfterCommit(ctx, "abort of "+req.SagaID, func(read context.Context) { c.abortFinished(read, m, req.SagaID, notHeld) },
					func(err error) { c.respond(m, messages.AbortResponse{V: messages.Version, Error: wireError(err)}) })
			case errors.Is(err, saga.ErrTerminal):
				if x, gerr := c.engine.Get(req.SagaID); gerr == nil {
					err = fmt.Errorf("abort %s: status %s: %w", req.SagaID, x.Status, saga.ErrTerminal)
				}
			}
			c.respond(m, messages.AbortResponse{V: messages.Version, Error: wireError(err)})
			return nil
		}
		// Compensating, or rolled back at once if it had not begun (the
		// engine then no longer holds it); a saga compensating already is
		// left as it is, and no abort of it is counted.
		status, sagaType := saga.Compensating, ""
		for _, x := range out.Changed[before:] {
			if x.ID == req.SagaID {
				status, sagaType = x.Status, x.Saga
			}
		}
		if sagaType == "" {
			c.log.Info("operator abort of a saga compensating already: nothing changed", "saga_id", req.SagaID)
		} else {
			c.log.Info("operator abort of a saga", "saga_id", req.SagaID, "reason", messages.Clip(reason), "status", status)
		}
		return func(err error) {
			resp := messages.AbortResponse{V: messages.Version, Status: string(status), Unchanged: sagaType == ""}
			if err != nil {
				resp = messages.AbortResponse{V: messages.Version, Error: wireError(notStored("abort of "+req.SagaID, err))}
			} else if o, ok := c.opts.Observer.(AbortObserver); ok && sagaType != "" {
				o.Aborted(sagaType)
			}
			c.respond(m, resp)
		}
	})
}

// abortFinished answers an abort for a saga no longer in memory: one that
// finished is a conflict, one never seen is not found.
func (c *Coordinator) abortFinished(ctx context.Context, m *nats.Msg, id string, notHeld error) {
	c.respond(m, messages.AbortResponse{V: messages.Version, Error: wireError(c.finishedError(ctx, "abort", id, notHeld, saga.ErrTerminal))})
}

// finishedError is the error of a request, what, for a saga the engine
// does not hold (notHeld): wrapping terminal when the bucket holds it
// finished, and notHeld when it holds nothing under its key.
func (c *Coordinator) finishedError(ctx context.Context, what, id string, notHeld, terminal error) error {
	if !messages.ValidToken(id) {
		return notHeld
	}
	e, err := c.kv.Get(ctx, messages.SagaKey(id))
	switch {
	case err == nil:
		x, derr := storedSaga(id, e.Value())
		if derr != nil {
			return derr
		}
		return fmt.Errorf("%s %s: status %s: %w", what, id, x.Status, terminal)
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return c.readError(ctx, err)
	}
	return notHeld
}

// retryFinished answers a retry for a saga no longer in memory: one that
// finished other than failed is a conflict, one never seen is not found.
func (c *Coordinator) retryFinished(ctx context.Context, m *nats.Msg, id string, notHeld error) {
	c.respond(m, messages.RetryResponse{V: messages.Version, Error: wireError(c.finishedError(ctx, "retry", id, notHeld, saga.ErrNotFailed))})
}

// warnOverLimits warns when the sagas recovered are over a limit: every
// one is recovered all the same (none is lost), and starts are answered
// busy until enough of them have ended.
func (c *Coordinator) warnOverLimits() {
	active, held := c.active.Load(), c.activeBytes.Load()
	if (c.opts.MaxActive > 0 && active >= int64(c.opts.MaxActive)) || (c.opts.MaxActiveBytes > 0 && held >= c.opts.MaxActiveBytes) {
		c.log.Warn("the sagas recovered are at or over the limit of sagas in flight or of the bytes they hold: starts are answered busy until enough of them end",
			"active", active, "max_active", c.opts.MaxActive, "bytes", held, "max_active_bytes", c.opts.MaxActiveBytes)
	}
}
