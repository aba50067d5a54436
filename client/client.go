package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/natsaga/natsaga/internal/natsurl"
	"github.com/natsaga/natsaga/internal/tracing"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// Options configures a [Client]. The zero value works.
type Options struct {
	// RequestTimeout bounds one request to the coordinator; an unanswered
	// request is sent again. 0 means 5s.
	RequestTimeout time.Duration
	// Attempts is how many times a request is sent in all when it is not
	// answered in time. 0 means 5.
	Attempts int
	// RestartPatience is how long a request waits, apart from Attempts,
	// while nobody listens on its subject (a coordinator starting or
	// taking over): a send that nobody hears within it spends no attempt,
	// one after it spends one. 0 means one minute.
	RestartPatience time.Duration
	// Logger receives the client's warnings. nil discards them.
	Logger *slog.Logger
	// Tracer, when set, makes a span of each start, whose context the
	// start request carries: the parent of the saga's trace. Every
	// request carries the trace context of its ctx in any case.
	Tracer trace.Tracer
}

// Validate returns an error when o has a negative field.
func (o *Options) Validate() error {
	if o.RequestTimeout < 0 || o.Attempts < 0 || o.RestartPatience < 0 {
		return errors.New("client options: negative timeout, attempts or patience")
	}
	return nil
}

// Client speaks natsaga's protocol to a coordinator. Create it with [New]
// or [Connect]. It is safe for concurrent use.
type Client struct {
	nc   *nats.Conn
	opts Options
	log  *slog.Logger
	// owned is set when Connect made nc, so Close closes it.
	owned bool
}

// New returns a client on nc, which the caller keeps and closes. It
// returns an error when opts do not validate.
func New(nc *nats.Conn, opts Options) (*Client, error) {
	if nc == nil {
		return nil, errors.New("client: no NATS connection (nil)")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 5 * time.Second
	}
	if opts.Attempts == 0 {
		opts.Attempts = 5
	}
	if opts.RestartPatience == 0 {
		opts.RestartPatience = time.Minute
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{nc: nc, opts: opts, log: log}, nil
}

// Connect connects to the NATS server at url with natsOpts and returns a
// client that owns the connection: [Client.Close] closes it. While no
// server answers at url (none listens, its name does not resolve yet, the
// dial times out) it tries again every quarter of a second, so that a
// driver may start beside the server; it returns an error when the server
// cannot be reached before ctx ends (with the last attempt's error), and
// at once when the server refuses this user, or the URL does not parse,
// has a scheme NATS does not speak (http://) or names no usable address.
// Once connected, a lost connection is reconnected for ever, every quarter
// of a second; a server that stops answering (frozen, not closed) counts as
// lost once three pings sent 5 s apart went unanswered (natsOpts may set
// other nats.MaxReconnects, nats.ReconnectWait, nats.PingInterval and
// nats.MaxPingsOutstanding); meanwhile requests wait and are sent again as
// [Options].Attempts allows.
func Connect(ctx context.Context, url string, opts Options, natsOpts ...nats.Option) (*Client, error) {
	if err := natsurl.Check(url); err != nil {
		return nil, err
	}
	// Once connected, a lost connection is reconnected for ever, as the
	// programs' are: a server outage does not end a driver's run.
	// A frozen server is found by pings, as the programs find it.
	defaults := append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(reconnectWait)}, natsurl.Pings()...)
	natsOpts = append(defaults, natsOpts...)
	var last error
	for {
		nc, err := connectOnce(ctx, url, natsOpts)
		if err == nil {
			c, err := New(nc, opts)
			if err != nil {
				nc.Close()
				return nil, err
			}
			c.owned = true
			return c, nil
		}
		if ctx.Err() != nil && last != nil {
			return nil, fmt.Errorf("%w (last attempt: %w)", err, last)
		}
		if !worthRetrying(err) || ctx.Err() != nil {
			return nil, err
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		case <-time.After(connectRetry):
		}
	}
}

// reconnectWait spaces the attempts to reconnect a connection [Connect]
// made, as the programs' default -reconnect-wait does.
const reconnectWait = 250 * time.Millisecond

// worthRetrying reports whether a failed connection may succeed later: no
// server yet, a name not resolved yet (a container not up), a dial timed
// out. A URL that does not parse or names no usable address, and a
// server that refuses this user, will not change.
func worthRetrying(err error) bool {
	var uerr *url.Error
	var aerr *net.AddrError
	return !errors.As(err, &uerr) && !errors.As(err, &aerr) && !errors.Is(err, nats.ErrAuthorization)
}

// connectRetry spaces [Connect]'s attempts.
const connectRetry = 250 * time.Millisecond

// connectOnce makes one attempt to connect, given up when ctx ends.
func connectOnce(ctx context.Context, url string, natsOpts []nats.Option) (*nats.Conn, error) {
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, natsOpts...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("connect %s: %w", natsurl.Redacted(url), r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("connect %s: %w", natsurl.Redacted(url), ctx.Err())
	}
}

// Close closes the connection when [Connect] made it, and does nothing
// otherwise.
func (c *Client) Close() {
	if c.owned {
		c.nc.Close()
	}
}

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// WithAttempts returns a copy of c that sends each request up to n times
// (at least once), sharing c's connection: a driver asks for a tick more
// patiently than for a status.
func (c *Client) WithAttempts(n int) *Client {
	d := *c
	d.opts.Attempts = max(n, 1)
	d.owned = false
	return &d
}

// request sends req on subject and decodes the answer into resp. It sends
// the same request again, up to Attempts times in all, when the answer
// does not come in time or nobody listens yet; any other error, or the end
// of ctx, ends it.
func (c *Client) request(ctx context.Context, subject string, req, resp any) error {
	return c.send(ctx, subject, "", req, resp, true)
}

// requestHeard is request for a subject that others hear and do not
// answer (agents hear ticks): the server never says that nobody listens
// to it, so an attempt not answered in time asks presence, a subject the
// same process answers, and counts as heard by nobody when nobody answers
// that, as a coordinator restarting.
func (c *Client) requestHeard(ctx context.Context, subject, presence string, req, resp any) error {
	return c.send(ctx, subject, presence, req, resp, true)
}

// requestOnce is request for a request that may take effect twice (a start
// without an id, a retry): one that nobody listened to is sent again,
// since nobody received it, but one whose answer did not come in time is
// not, since it may have taken effect.
func (c *Client) requestOnce(ctx context.Context, subject string, req, resp any) error {
	return c.send(ctx, subject, "", req, resp, false)
}

// send is request; resend says whether a request whose answer did not
// come in time is sent again, and presence, when set, is requestHeard's.
func (c *Client) send(ctx context.Context, subject, presence string, req, resp any, resend bool) error {
	data, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("%s: encode: %w: %w", subject, ErrBadRequest, err)
	}
	if err := c.fits(len(data)); err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	patience := time.Now().Add(c.opts.RestartPatience)
	// nobody is the error of the last attempt when nobody listened: a
	// request that ctx ends after it says so.
	var nobody error
	// late counts the attempts not answered in time, unheard those nobody
	// listened to once the patience had passed: together, the attempts
	// spent. Those nobody listened to before it spend none.
	late, unheard := 0, 0
	for sent := 1; ; sent++ {
		rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
		msg := &nats.Msg{Subject: subject, Data: data}
		tracing.Inject(ctx, msg)
		m, err := c.nc.RequestMsgWithContext(rctx, msg)
		cancel()
		if err == nil {
			// The server bounds an answer by its payload limit; a page of
			// a list may be larger than messages.MaxPayload.
			if err := json.Unmarshal(m.Data, resp); err != nil {
				return fmt.Errorf("%s: answer: %w", subject, err)
			}
			return nil
		}
		if ctx.Err() != nil {
			if nobody != nil {
				return fmt.Errorf("%s: %w: %w", subject, nobody, ctx.Err())
			}
			if !resend && !errors.Is(err, nats.ErrNoResponders) {
				return fmt.Errorf("%s: %w: no answer, and it may have taken effect", subject, ctx.Err())
			}
			return fmt.Errorf("%s: %w", subject, ctx.Err())
		}
		noResponders := errors.Is(err, nats.ErrNoResponders)
		if presence != "" && !noResponders && c.absent(ctx, presence) {
			noResponders, err = true, fmt.Errorf("%w: %s heard, and %s answered by nobody", nats.ErrNoResponders, subject, presence)
		}
		nobody = nil
		if noResponders {
			nobody = err
		}
		timedOut := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if timedOut && !resend {
			return fmt.Errorf("%s: no answer within %s, and not sent again: it may have taken effect: %w", subject, c.opts.RequestTimeout, err)
		}
		switch {
		case timedOut:
			late++
		case noResponders && !time.Now().Before(patience):
			unheard++
		case !noResponders:
			return fmt.Errorf("%s: attempt %d: %w", subject, sent, err)
		}
		if late+unheard >= c.opts.Attempts {
			spent := fmt.Sprintf("%d attempts (%d not answered within %s, %d heard by nobody)", late+unheard, late, c.opts.RequestTimeout, unheard)
			if st := c.nc.Status(); st != nats.CONNECTED {
				return fmt.Errorf("%s: no answer in %s: the NATS connection is %s, the server out of reach: %w",
					subject, spent, st, err)
			}
			if unheard == 0 {
				// Something listens (the server says so when nothing
				// does), and did not answer in time.
				return fmt.Errorf("%s: no answer in %s: what answers it (the coordinator, or the role's agents for a query) is there, and slow (a list of many finished sagas, a loaded server: allow more time) or stuck: %w",
					subject, spent, err)
			}
			// Said as what it most often is: what answers the subject
			// (the coordinator, a role's agents) is not running.
			return fmt.Errorf("%s: no answer in %s: is what answers it (the coordinator, or the role's agents for a query) running? %w",
				subject, spent, err)
		}
		if !noResponders {
			c.log.Warn("request not answered; sending it again", "subject", subject, "attempt", late+unheard, "err", err)
			continue
		}
		// No responder fails at once: the coordinator is not up (yet).
		// Ended meanwhile, the request says both why it waited and why it
		// stopped, so that a caller can tell that nobody served it.
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w: %w", subject, err, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// absent reports whether nobody answers presence, asked once.
func (c *Client) absent(ctx context.Context, presence string) bool {
	rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	_, err := c.nc.RequestWithContext(rctx, presence, []byte(`{"v":1}`))
	return errors.Is(err, nats.ErrNoResponders)
}

// fits returns an error wrapping ErrBadRequest for a request of n bytes
// that the server would not carry: it cannot be sent, so it is not.
func (c *Client) fits(n int) error {
	if limit := c.nc.MaxPayload(); int64(n) > limit {
		return fmt.Errorf("request of %d bytes, over the server's payload limit of %d: %w", n, limit, ErrBadRequest)
	}
	return nil
}

// Start is one saga to start.
type Start struct {
	// Saga is the saga type: a definition's subject or name.
	Saga string
	// ID is the saga's id; empty, the coordinator makes one. A start sent
	// again with the same id starts the saga once: a start with an id is
	// sent again when its answer does not come in time, one without is
	// not (it may have started a saga; the error says so).
	ID string
	// Rank, when positive, ranks the saga for a simulation run; Tick,
	// when ahead of the clock, schedules its start (docs/simulation.md).
	Rank, Tick int64
	Context    messages.Context
}

// label names s in errors: its saga type, and its id when it has one.
func (s *Start) label() string {
	if s.ID == "" {
		return s.Saga + " saga"
	}
	return s.Saga + " saga " + s.ID
}

// Started is the coordinator's answer to a [Start].
type Started struct {
	ID     string
	Status saga.Status
	// Existed is true when the start named a saga the coordinator held or
	// stored already: that answer started nothing, and the start's
	// context was not used. A start sent again by the same call, after an
	// answer that was lost, may find the saga its first send started.
	Existed bool
}

// Start starts one saga and returns its id and status. It returns an
// [*Error] when the coordinator refuses it (ErrNotFound for an unknown
// saga type, ErrBadRequest for a bad id or context), and an error wrapping
// ErrBadRequest, not sent, when the client can tell so itself: a saga type
// that breaks the identifier rule, a context that does not encode, or a
// request over the server's payload limit. A start the
// coordinator answers "busy" (it holds its limit of sagas in flight)
// started nothing: it is sent again after a backoff that doubles, until
// the coordinator answers otherwise or ctx ends; then the error wraps both
// ErrBusy and ctx's error. A start scheduled for a later tick that can
// never be admitted before the clock moves on gets an error wrapping
// [ErrNeverAdmitted] and ErrBusy instead, as in [Client.StartMany].
func (c *Client) Start(ctx context.Context, s Start) (Started, error) {
	if err := messages.CheckToken("saga type", s.Saga); err != nil {
		return Started{}, fmt.Errorf("start: %w: %w", ErrBadRequest, err)
	}
	var span trace.Span = noop.Span{} // without a tracer
	if c.opts.Tracer != nil {
		ctx, span = c.opts.Tracer.Start(ctx, "start "+s.Saga, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("natsaga.saga", s.Saga)))
		defer span.End()
	}
	ctxv := s.Context
	if ctxv == nil {
		ctxv = messages.Context{}
	}
	subject := messages.StartSubject(s.Saga)
	req := messages.StartRequest{V: messages.Version, SagaID: s.ID, Rank: s.Rank, Tick: s.Tick, Context: ctxv}
	var resp messages.StartResponse
	var held *messages.Summary
	answer, err := retryBusy(ctx, c.log.With("saga_id", s.ID), func(ctx context.Context) (*messages.WireError, error) {
		resp = messages.StartResponse{}
		send := c.request
		if s.ID == "" {
			send = c.requestOnce // a second would start another saga
		}
		if err := send(ctx, subject, req, &resp); err != nil {
			return nil, err
		}
		return resp.Error, nil
	}, func(ctx context.Context) error {
		errs := []error{nil}
		_, held = c.stuckStarts(ctx, []Start{s}, []int{0}, errs, held)
		return errs[0]
	})
	if werr := wireErr(subject, answer); werr != nil {
		if err != nil {
			return Started{}, fmt.Errorf("start %s: %w: %w", s.label(), werr, err)
		}
		return Started{}, fmt.Errorf("start %s: %w", s.label(), werr)
	}
	if err != nil {
		return Started{}, err
	}
	// The id the coordinator took: the caller's, or the one it gave.
	span.SetAttributes(attribute.String("natsaga.saga_id", resp.SagaID))
	return Started{ID: resp.SagaID, Status: saga.Status(resp.Status), Existed: resp.Existed}, nil
}

// StartMany starts every saga of starts and returns the answers and errors
// in the order of starts: errs[i] is nil when starts[i] started. It sends
// them in batches (a [messages.StartBatch] on natsaga.starts, at most
// [messages.MaxStartsFor] the server's payload limit, and within it), at
// most concurrency batches at once (0 means 4). Each start is answered on
// its own, as by [Client.Start]; those answered "busy" (nothing was done)
// are sent again in later batches, after a backoff that doubles, until
// answered otherwise or ctx ends; but a start scheduled for a later tick
// that can never be admitted before the clock moves on (every saga the
// coordinator holds at its limit waits for a later tick) gets an error
// wrapping [ErrNeverAdmitted] and [ErrBusy] instead. A start still
// waiting after a busy answer when ctx ends gets an error wrapping
// ErrBusy and ctx's error; one the client can tell is bad itself (a
// context that does not encode, or over the server's payload limit) one
// wrapping ErrBadRequest, unsent. It returns when every start is answered
// or ctx ends.
func (c *Client) StartMany(ctx context.Context, starts []Start, concurrency int) (started []Started, errs []error) {
	if concurrency <= 0 {
		concurrency = 4
	}
	started, errs = make([]Started, len(starts)), make([]error, len(starts))
	encoded := make([]json.RawMessage, len(starts))
	var pending []int
	resent := false // pending holds starts answered busy before
	for i, s := range starts {
		ctxv := s.Context
		if ctxv == nil {
			ctxv = messages.Context{}
		}
		data, err := json.Marshal(messages.BatchedStart{Saga: s.Saga, SagaID: s.ID, Rank: s.Rank, Tick: s.Tick, Context: ctxv})
		if err == nil {
			err = c.fits(len(data))
		} else {
			err = fmt.Errorf("encode: %w: %w", ErrBadRequest, err)
		}
		if err != nil {
			errs[i] = fmt.Errorf("start %s: %w", s.label(), err)
			continue
		}
		encoded[i] = data
		pending = append(pending, i)
	}
	wait := busyBackoff
	var stuck *messages.Summary
	for len(pending) > 0 {
		var (
			mu    sync.Mutex
			again []int
			wg    sync.WaitGroup
		)
		sem := make(chan struct{}, concurrency)
		for _, batch := range c.startBatches(pending, starts, encoded) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			wg.Go(func() {
				defer func() { <-sem }()
				busy := c.startBatch(ctx, starts, encoded, batch, started, errs)
				mu.Lock()
				again = append(again, busy...)
				mu.Unlock()
			})
		}
		wg.Wait()
		if ctx.Err() != nil {
			for _, i := range pending {
				if errs[i] == nil && started[i].ID == "" {
					errs[i] = fmt.Errorf("start %s: %w", starts[i].label(), ctx.Err())
					if resent {
						// Sent again after a busy answer: as Start says it.
						errs[i] = fmt.Errorf("start %s: busy: %w: %w", starts[i].label(), ErrBusy, ctx.Err())
					}
				}
			}
			return started, errs
		}
		if len(again) == 0 {
			break
		}
		slices.Sort(again)
		again, stuck = c.stuckStarts(ctx, starts, again, errs, stuck)
		if len(again) == 0 {
			break
		}
		pending, resent = again, true
		c.log.Debug("coordinator busy; starting again after a backoff", "starts", len(pending), "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, busyBackoffMax)
	}
	return started, errs
}

// stuckStarts returns busy, the starts just refused as busy, less those
// that can never be admitted, each of which gets its error in errs: a
// start scheduled for a later tick than the coordinator's, refused while
// the coordinator holds its limit of sagas in flight (its -max-active)
// or of the bytes they hold (its -max-active-bytes) and owes no answer due by its tick (Summary.Due is 0) nor waits to
// retry a command, so that none of its sagas can end before the clock
// moves on. A simulation driver ticks
// only once its tick's starts are in: it would wait for ever. It takes it
// so only when the summary before, seen after the refusal before, said
// the same (held), and returns the summary to pass as held next time.
func (c *Client) stuckStarts(ctx context.Context, starts []Start, busy []int, errs []error, held *messages.Summary) ([]int, *messages.Summary) {
	scheduled := false
	for _, i := range busy {
		scheduled = scheduled || starts[i].Tick > 0
	}
	if !scheduled {
		return busy, nil
	}
	sum, err := c.Summary(ctx)
	if err != nil || sum.Due != 0 || sum.Retrying != 0 {
		return busy, nil // a saga may still end, and free its place
	}
	if held == nil || held.Tick != sum.Tick || held.Active != sum.Active {
		return busy, &sum
	}
	kept := busy[:0]
	for _, i := range busy {
		s := &starts[i]
		if s.Tick <= sum.Tick {
			kept = append(kept, i)
			continue
		}
		errs[i] = fmt.Errorf("start %s, scheduled for tick %d: %w: the coordinator holds its limit of sagas in flight (-max-active) "+
			"or of the bytes they hold (-max-active-bytes), with %d, and none of them can end before the clock moves on from tick %d: "+
			"raise the limit above what a tick holds in flight: %w",
			s.label(), s.Tick, ErrNeverAdmitted, sum.Active, sum.Tick, ErrBusy)
	}
	return kept, &sum
}

// startBatches splits pending, indexes of starts encoded, into batches
// that fit the server's payload limit, of at most messages.MaxStartsFor
// it. The starts with an id and those without go in batches apart: a
// batch is sent again when its answer does not come only if every start
// of it has an id (startBatch), since one without would start another
// saga.
func (c *Client) startBatches(pending []int, starts []Start, encoded []json.RawMessage) [][]int {
	room := int(min(c.nc.MaxPayload(), messages.MaxPayload)) - 64 // the envelope
	most := max(1, messages.MaxStartsFor(c.nc.MaxPayload()))
	var batches [][]int
	for _, withID := range []bool{true, false} {
		var cur []int
		size := 0
		for _, i := range pending {
			if (starts[i].ID != "") != withID {
				continue
			}
			n := len(encoded[i]) + 1
			if len(cur) > 0 && (len(cur) == most || size+n > room) {
				batches = append(batches, cur)
				cur, size = nil, 0
			}
			cur = append(cur, i)
			size += n
		}
		if len(cur) > 0 {
			batches = append(batches, cur)
		}
	}
	return batches
}

// startBatch sends the starts batch (indexes of starts) as one request,
// fills in started and errs for each, and returns the indexes answered
// "busy": to send again.
func (c *Client) startBatch(ctx context.Context, starts []Start, encoded []json.RawMessage, batch []int, started []Started, errs []error) (busy []int) {
	if c.opts.Tracer != nil {
		var span trace.Span
		ctx, span = c.opts.Tracer.Start(ctx, "start batch", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.Int("natsaga.starts", len(batch))))
		defer span.End()
	}
	req := struct {
		V      int               `json:"v"`
		Starts []json.RawMessage `json:"starts"`
	}{V: messages.Version}
	for _, i := range batch {
		req.Starts = append(req.Starts, encoded[i])
	}
	var resp messages.StartBatchResponse
	send := c.request
	for _, i := range batch {
		if starts[i].ID == "" {
			send = c.requestOnce // a second would start another saga
		}
	}
	err := send(ctx, messages.StartBatchSubject, req, &resp)
	if err == nil && resp.Error == nil && len(resp.Results) != len(batch) {
		err = fmt.Errorf("%s: %d answers to %d starts", messages.StartBatchSubject, len(resp.Results), len(batch))
	}
	for k, i := range batch {
		s := &starts[i]
		switch {
		case err != nil:
			errs[i] = fmt.Errorf("start %s: %w", s.label(), err)
		case resp.Error != nil && resp.Error.Code == messages.CodeBusy:
			busy = append(busy, i)
		case resp.Error != nil:
			errs[i] = fmt.Errorf("start %s: %w", s.label(), wireErr(messages.StartBatchSubject, resp.Error))
		case resp.Results[k].Error != nil && resp.Results[k].Error.Code == messages.CodeBusy:
			busy = append(busy, i)
		case resp.Results[k].Error != nil:
			errs[i] = fmt.Errorf("start %s: %w", s.label(), wireErr(messages.StartBatchSubject, resp.Results[k].Error))
		default:
			started[i] = Started{ID: resp.Results[k].SagaID, Status: saga.Status(resp.Results[k].Status), Existed: resp.Results[k].Existed}
			errs[i] = nil
		}
	}
	return busy
}

// Tick advances the coordinator's clock, and the agents' with it, to tick,
// and returns the coordinator's acknowledgement. A tick at or behind the
// clock changes nothing and is answered all the same. Tick does not wait
// for quiet; [Client.Advance] does.
//
// A tick the coordinator answers "busy" was not stored (its store failed,
// and it recovers): like a start, it is sent again after a backoff that
// doubles, until answered otherwise or ctx ends. A tick is applied once
// however often it is sent.
func (c *Client) Tick(ctx context.Context, tick int64) (messages.TickAck, error) {
	var ack messages.TickAck
	answer, err := retryBusy(ctx, c.log, func(ctx context.Context) (*messages.WireError, error) {
		ack = messages.TickAck{}
		if err := c.requestHeard(ctx, messages.TickSubject, messages.SummarySubject, messages.Tick{V: messages.Version, Tick: tick}, &ack); err != nil {
			return nil, err
		}
		return ack.Error, nil
	}, nil)
	if werr := wireErr(messages.TickSubject, answer); werr != nil {
		if err != nil {
			return ack, fmt.Errorf("tick %d: %w: %w", tick, werr, err)
		}
		return ack, fmt.Errorf("tick %d: %w", tick, werr)
	}
	return ack, err
}

// Summary returns the coordinator's summary: its tick and saga counts, and
// Due, the count of the quiet rule.
func (c *Client) Summary(ctx context.Context) (messages.Summary, error) {
	var s messages.Summary
	err := c.request(ctx, messages.SummarySubject, struct {
		V int `json:"v"`
	}{messages.Version}, &s)
	return s, err
}

// CurrentTick returns the coordinator's current tick, as an agent that
// starts mid-run may ask for it.
func (c *Client) CurrentTick(ctx context.Context) (int64, error) {
	s, err := c.Summary(ctx)
	return s.Tick, err
}

// Status returns the state of saga id, active or finished. It returns an
// error wrapping ErrNotFound when the coordinator does not know it. While
// the coordinator answers busy (at its limit of reads of its bucket at
// once, or between two terms: one taking over, or one that lost its lease
// while paused) it asks again after a backoff that doubles, until ctx
// ends; then the error wraps ErrBusy and ctx's error.
func (c *Client) Status(ctx context.Context, id string) (saga.Execution, error) {
	var x saga.Execution
	data, err := c.StatusJSON(ctx, id)
	if err != nil {
		return x, err
	}
	if err := json.Unmarshal(data, &x); err != nil {
		return x, fmt.Errorf("status of saga %s: %w", id, err)
	}
	return x, nil
}

// StatusJSON is [Client.Status] that returns the saga's state as the
// coordinator sent it, the JSON of a saga.Execution, undecoded: for a
// tool that passes the state on, fields a newer coordinator added
// included.
func (c *Client) StatusJSON(ctx context.Context, id string) (json.RawMessage, error) {
	resp, err := readNotBusy(ctx, c, messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: id},
		func(r *messages.StatusResponse) *messages.WireError { return r.Error })
	if err != nil {
		return nil, fmt.Errorf("status of saga %s: %w", id, err)
	}
	if err := wireErr(messages.StatusSubject, resp.Error); err != nil {
		return nil, fmt.Errorf("status of saga %s: %w", id, err)
	}
	return resp.Saga, nil
}

// List returns the sagas the coordinator holds with status (every active
// saga when status is empty), oldest first, at most limit (0: no limit),
// reading the list page after page by the coordinator's cursor until it
// ends or limit sagas have come. With a finished status (completed,
// rolled_back, timed_out) the coordinator answers from its bucket, in one
// page, the latest: limit 0 then means the coordinator's default, and a
// limit over [messages.MaxListPage] is asked as that, the most it
// answers ([Client.ListMore] says when more are stored). A negative limit
// is an error wrapping ErrBadRequest. A page answered busy is asked again,
// as [Client.Status] does.
func (c *Client) List(ctx context.Context, status saga.Status, limit int) ([]saga.Execution, error) {
	raw, err := c.ListJSON(ctx, status, limit)
	if err != nil {
		return nil, err
	}
	xs := make([]saga.Execution, len(raw))
	for i, data := range raw {
		if err := json.Unmarshal(data, &xs[i]); err != nil {
			return nil, fmt.Errorf("list: %w", err)
		}
	}
	return xs, nil
}

// ListJSON is [Client.List] that returns each saga's state as the
// coordinator sent it, undecoded, as [Client.StatusJSON] does. It returns
// an empty, not nil, slice when no saga matches.
func (c *Client) ListJSON(ctx context.Context, status saga.Status, limit int) ([]json.RawMessage, error) {
	sagas, _, err := c.ListMore(ctx, status, limit)
	return sagas, err
}

// ListMore is [Client.ListJSON] that also reports whether the coordinator
// holds more sagas with status than it returns: active or failed ones past
// limit, or finished ones past the one page the coordinator answers (its
// most, or what fits one answer).
func (c *Client) ListMore(ctx context.Context, status saga.Status, limit int) (sagas []json.RawMessage, more bool, err error) {
	if limit < 0 {
		return nil, false, fmt.Errorf("list: negative limit: %w", ErrBadRequest)
	}
	req := messages.ListRequest{V: messages.Version, Status: string(status)}
	sagas = []json.RawMessage{}
	for {
		if limit > 0 {
			req.Limit = min(limit-len(sagas), messages.MaxListPage)
		}
		resp, err := readNotBusy(ctx, c, messages.ListSubject, req, func(r *messages.ListResponse) *messages.WireError { return r.Error })
		if err != nil {
			return nil, false, fmt.Errorf("list: %w", err)
		}
		if err := wireErr(messages.ListSubject, resp.Error); err != nil {
			return nil, false, fmt.Errorf("list: %w", err)
		}
		sagas = append(sagas, resp.Sagas...)
		if resp.Next == "" || (limit > 0 && len(sagas) >= limit) {
			return sagas, resp.More || resp.Next != "", nil
		}
		req.After = resp.Next
	}
}

// Retry retries the compensation of the failed saga id and returns its new
// status. It returns an error wrapping ErrNotFound or ErrConflict (a saga
// that is not failed).
func (c *Client) Retry(ctx context.Context, id string) (saga.Status, error) {
	var resp messages.RetryResponse
	// Sent again, a retry that took effect would be answered conflict.
	if err := c.requestOnce(ctx, messages.RetrySubject, messages.RetryRequest{V: messages.Version, SagaID: id}, &resp); err != nil {
		return "", err
	}
	if err := wireErr(messages.RetrySubject, resp.Error); err != nil {
		return "", fmt.Errorf("retry saga %s: %w", id, err)
	}
	return saga.Status(resp.Status), nil
}

// Abort rolls back the active saga id, as an operator ends a saga that
// waits for an agent that will not answer: the step in flight and the
// completed ones are compensated, in reverse order, and the saga ends
// rolled_back with "aborted: " and reason as its error (an empty reason
// says "by an operator"). It returns the saga's status: compensating, or
// rolled_back for a saga that had not begun. A saga compensating already
// is left as it is. It returns an error wrapping ErrNotFound, ErrConflict
// (a saga that finished) or ErrBadRequest (an id that breaks the
// identifier rule, a reason over [messages.MaxReason] bytes).
//
// An abort is an operator's act outside a simulation's contract: a run
// with one is not reproduced by a run without (docs/simulation.md).
func (c *Client) Abort(ctx context.Context, id, reason string) (Aborted, error) {
	req := messages.AbortRequest{V: messages.Version, SagaID: id, Reason: reason}
	if err := req.Validate(); err != nil {
		return Aborted{}, fmt.Errorf("abort saga %s: %w: %w", id, ErrBadRequest, err)
	}
	var resp messages.AbortResponse
	// Sent again, an abort that took effect is answered the same, or
	// conflict once the saga has ended.
	if err := c.requestOnce(ctx, messages.AbortSubject, req, &resp); err != nil {
		return Aborted{}, err
	}
	if err := wireErr(messages.AbortSubject, resp.Error); err != nil {
		return Aborted{}, fmt.Errorf("abort saga %s: %w", id, err)
	}
	return Aborted{Status: saga.Status(resp.Status), Unchanged: resp.Unchanged}, nil
}

// Aborted is the coordinator's answer to an [Client.Abort].
type Aborted struct {
	// Status is the saga's: compensating, or rolled_back for a saga that
	// had not begun.
	Status saga.Status
	// Unchanged is true when the saga was compensating already (an abort,
	// a failed step or a timeout came first): the abort changed nothing,
	// and the saga keeps its reason.
	Unchanged bool
}

// Register registers the saga definitions of a definitions file (see
// saga.ParseFile), or new versions of them, with the running coordinator.
// It checks the file first and returns the loader's error, which names the
// definition and the field; an error wrapping ErrConflict is a version
// registered already with other content.
func (c *Client) Register(ctx context.Context, file []byte) ([]messages.RegisteredSaga, error) {
	if _, err := saga.ParseFile(file); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	var resp messages.RegisterResponse
	if err := c.request(ctx, messages.RegisterSubject, messages.RegisterRequest{V: messages.Version, Definitions: file}, &resp); err != nil {
		return nil, err
	}
	if err := wireErr(messages.RegisterSubject, resp.Error); err != nil {
		return nil, fmt.Errorf("register: %w", err)
	}
	return resp.Registered, nil
}

// Query asks a model's state query: a request on subject, which the
// model documents and its role's agents answer with
// participant.ServeQueries, of req encoded as JSON. It decodes the answer
// into answer. It waits for an agent to answer as every request of the
// client does (Options.RestartPatience: a role restarting). An answer with
// an "error" object, as ServeQueries answers a request it refuses and as
// a model may answer one of its own, is returned as an [*Error] (with its
// code: errors.Is finds client.ErrNotFound and the other sentinels), answer decoded
// all the same; an "error" of another shape (a string, an object with no
// code) is an error too, saying so.
func (c *Client) Query(ctx context.Context, subject string, req, answer any) error {
	var raw json.RawMessage
	if err := c.request(ctx, subject, req, &raw); err != nil {
		return err
	}
	var refused struct {
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(raw, &refused); err == nil && len(refused.Error) > 0 && string(refused.Error) != "null" {
		_ = json.Unmarshal(raw, answer)
		var we messages.WireError
		if err := json.Unmarshal(refused.Error, &we); err != nil || we.Code == "" {
			// Not natsaga's error object, but an error all the same: not
			// taken for an answer.
			return fmt.Errorf("%s: the answer's error %s is not an object with a code and a message", subject, messages.Quote(string(refused.Error)))
		}
		return wireErr(subject, &we)
	}
	if err := json.Unmarshal(raw, answer); err != nil {
		return fmt.Errorf("%s: answer: %w", subject, err)
	}
	return nil
}

// AgentStats asks every running agent for its statistics through NATS
// micro's STATS request, and collects the answers as w says: until w.Want
// agents have answered and w.Grace has passed since, or w.Max has passed
// (see participant.CollectStats, which returns the errors). Each agent is
// counted once.
func (c *Client) AgentStats(ctx context.Context, w participant.StatsWait) ([]messages.AgentStats, error) {
	return participant.CollectStats(ctx, c.nc, w, func(err error) { c.log.Warn("agent stats answer skipped", "err", err) })
}
