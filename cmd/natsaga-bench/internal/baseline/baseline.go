// Package baseline is the bare durable saga pattern that natsaga's
// benchmark (cmd/natsaga-bench) measures natsaga against: JetStream
// work-queue streams for commands and replies read through pull consumers,
// and one compare-and-swap of a KV entry per saga transition (five per
// 3-step saga), all in JSON.
//
// It is written the way a competent engineer would write it with nats.go
// alone: it imports nats.go, its jetstream package and the standard library,
// and no natsaga package (a test checks that). Its coordinator serves
// starts and replies from a pool of workers, each doing its KV updates and
// publishes as synchronous round trips; it caches each active saga's state
// and revision, so a transition costs one KV write and no read. Its agents
// pull commands in batches and answer from a pool of workers.
//
// It implements only the forward path the benchmark drives: no
// compensation, no timeouts, no idempotency record at the agents. All of
// these would only add cost to it.
package baseline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The names the baseline uses. They share nothing with natsaga's, so both
// could run on one server.
const (
	// CommandStream holds commands until an agent acknowledges them.
	CommandStream = "BASELINE_COMMANDS"
	// ReplyStream holds replies until the coordinator acknowledges them.
	ReplyStream = "BASELINE_REPLIES"
	// Bucket holds one entry per saga.
	Bucket = "baseline_sagas"
	// StartSubject is where a client requests a saga start ([StartRequest]).
	StartSubject = "baseline.start"
	// EventSubject carries an [Event] when a saga completes.
	EventSubject = "baseline.event.completed"
	// AgentConsumer and CoordinatorConsumer are the durable pull consumers.
	AgentConsumer       = "baseline-agent"
	CoordinatorConsumer = "baseline-coordinator"

	commandPrefix = "baseline.cmd."
	replyPrefix   = "baseline.reply."
)

// Steps is the number of steps of the baseline saga.
const Steps = 3

// Context is a saga's data, kept as raw JSON values.
type Context map[string]json.RawMessage

// StartRequest asks the coordinator to start a saga.
type StartRequest struct {
	Context Context `json:"context"`
}

// StartResponse answers a [StartRequest] once the saga is stored and its
// first command published.
type StartResponse struct {
	SagaID string `json:"saga_id,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Event announces a saga's completion.
type Event struct {
	SagaID string `json:"saga_id"`
	Status string `json:"status"`
}

type command struct {
	SagaID  string  `json:"saga_id"`
	Step    int     `json:"step"`
	Seq     int     `json:"seq"`
	Context Context `json:"context"`
}

type reply struct {
	SagaID  string  `json:"saga_id"`
	Step    int     `json:"step"`
	Seq     int     `json:"seq"`
	Outcome string  `json:"outcome"`
	Output  Context `json:"output,omitempty"`
	Agent   string  `json:"agent,omitempty"`
}

// state is a saga's KV entry.
type state struct {
	SagaID  string  `json:"saga_id"`
	Status  string  `json:"status"`
	Step    int     `json:"step"`
	Seq     int     `json:"seq"`
	Context Context `json:"context"`
	Updated int64   `json:"updated"`
}

func commandSubject(step int) string { return commandPrefix + "s" + strconv.Itoa(step+1) }
func replySubject(step int) string   { return replyPrefix + "s" + strconv.Itoa(step+1) }

func discard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return l
}

// CoordinatorOptions configures a [Coordinator]. The zero value works.
type CoordinatorOptions struct {
	// Workers is how many starts and replies are handled at once. 0 means
	// 256.
	Workers int
	// Batch is how many replies one pull asks for. 0 means 256.
	Batch int
	// Logger receives the coordinator's logs. nil discards them.
	Logger *slog.Logger
}

// Validate returns an error when o has a negative field.
func (o *CoordinatorOptions) Validate() error {
	if o.Workers < 0 || o.Batch < 0 {
		return errors.New("baseline coordinator options: negative workers or batch")
	}
	return nil
}

// AgentOptions configures [RunAgent]. The zero value works.
type AgentOptions struct {
	// Name identifies the agent in its replies.
	Name string
	// Concurrency is how many commands are handled at once. 0 means 16.
	Concurrency int
	// Batch is how many commands one pull asks for. 0 means twice
	// Concurrency.
	Batch int
	// Latency is slept in each step, to simulate work.
	Latency time.Duration
	// Logger receives the agent's logs. nil discards them.
	Logger *slog.Logger
}

// Validate returns an error when o has a negative field.
func (o *AgentOptions) Validate() error {
	if o.Concurrency < 0 || o.Batch < 0 || o.Latency < 0 {
		return errors.New("baseline agent options: negative concurrency, batch or latency")
	}
	return nil
}

// Setup creates the baseline's streams, bucket and consumers on js, file
// stored with one replica. It returns the bucket, or an error from
// JetStream.
func Setup(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	for _, cfg := range []jetstream.StreamConfig{
		{Name: CommandStream, Subjects: []string{commandPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute},
		{Name: ReplyStream, Subjects: []string{replyPrefix + ">"}, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute},
	} {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("baseline stream %s: %w", cfg.Name, err)
		}
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("baseline bucket: %w", err)
	}
	for stream, name := range map[string]string{CommandStream: AgentConsumer, ReplyStream: CoordinatorConsumer} {
		_, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
			Durable: name, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second,
			MaxDeliver: -1, MaxAckPending: 65536,
		})
		if err != nil {
			return nil, fmt.Errorf("baseline consumer %s: %w", name, err)
		}
	}
	return kv, nil
}

// Coordinator is the baseline's coordinator. Create it with
// [NewCoordinator] and start it with [Coordinator.Run].
type Coordinator struct {
	js      jetstream.JetStream
	nc      *nats.Conn
	kv      jetstream.KeyValue
	opts    CoordinatorOptions
	log     *slog.Logger
	prefix  string
	next    atomic.Uint64
	ready   chan struct{}
	workers int
	batch   int

	mu    sync.Mutex
	cache map[string]cachedState // active sagas: last stored state and revision
}

type cachedState struct {
	st  state
	rev uint64
}

// NewCoordinator returns a coordinator on nc. It returns an error when opts
// do not validate.
func NewCoordinator(nc *nats.Conn, opts CoordinatorOptions) (*Coordinator, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("baseline coordinator: %w", err)
	}
	var pfx [6]byte
	_, _ = rand.Read(pfx[:])
	return &Coordinator{js: js, nc: nc, opts: opts, log: discard(opts.Logger), prefix: hex.EncodeToString(pfx[:]),
		ready: make(chan struct{}), workers: cmpOr(opts.Workers, 256), batch: cmpOr(opts.Batch, 256),
		cache: map[string]cachedState{}}, nil
}

// Ready is closed once the coordinator serves starts and replies.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Run sets up the streams (see [Setup]) and drives sagas until ctx is
// cancelled, then returns nil. It returns an error when it cannot set up.
func (c *Coordinator) Run(ctx context.Context) error {
	kv, err := Setup(ctx, c.js)
	if err != nil {
		return err
	}
	c.kv = kv
	work := make(chan func(context.Context), c.workers)
	var wg sync.WaitGroup
	for range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work {
				f(context.WithoutCancel(ctx))
			}
		}()
	}
	defer wg.Wait()
	defer close(work)

	sub, err := c.nc.Subscribe(StartSubject, func(m *nats.Msg) {
		select {
		case work <- func(ctx context.Context) { c.start(ctx, m) }:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return fmt.Errorf("baseline start subscription: %w", err)
	}
	defer sub.Unsubscribe()
	cons, err := c.js.Consumer(ctx, ReplyStream, CoordinatorConsumer)
	if err != nil {
		return fmt.Errorf("baseline reply consumer: %w", err)
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(c.batch))
	if err != nil {
		return fmt.Errorf("baseline reply consumer: %w", err)
	}
	go func() {
		<-ctx.Done()
		iter.Stop()
	}()
	close(c.ready)
	for {
		m, err := iter.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			// A missed heartbeat (a busy process or server) is not the
			// end: the iterator pulls again.
			c.log.Warn("reply consumer", "err", err)
			continue
		}
		select {
		case work <- func(ctx context.Context) { c.reply(ctx, m) }:
		case <-ctx.Done():
			return nil
		}
	}
}

func (c *Coordinator) newID() string {
	return c.prefix + "-" + strconv.FormatUint(c.next.Add(1), 10)
}

// start stores a new saga (pending, then in progress: two transitions),
// publishes its first command and answers the client.
func (c *Coordinator) start(ctx context.Context, m *nats.Msg) {
	respond := func(r StartResponse) {
		data, _ := json.Marshal(r)
		_ = m.Respond(data)
	}
	var req StartRequest
	if err := json.Unmarshal(m.Data, &req); err != nil {
		respond(StartResponse{Error: err.Error()})
		return
	}
	st := state{SagaID: c.newID(), Status: "pending", Context: req.Context}
	rev, err := c.put(ctx, st, 0)
	if err != nil {
		respond(StartResponse{Error: err.Error()})
		return
	}
	st.Status, st.Seq = "in_progress", 1
	if rev, err = c.put(ctx, st, rev); err != nil {
		respond(StartResponse{Error: err.Error()})
		return
	}
	c.remember(st, rev)
	if err := c.send(ctx, st); err != nil {
		respond(StartResponse{Error: err.Error()})
		return
	}
	respond(StartResponse{SagaID: st.SagaID})
}

// reply applies an agent's reply: one KV transition, then the next command
// or the completion event, then the ack.
func (c *Coordinator) reply(ctx context.Context, m jetstream.Msg) {
	var r reply
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		c.log.Error("dropping malformed reply", "err", err)
		_ = m.Term()
		return
	}
	cs, ok := c.lookup(ctx, r.SagaID)
	if !ok || cs.st.Status != "in_progress" || cs.st.Step != r.Step || cs.st.Seq != r.Seq || r.Outcome != "ok" {
		_ = m.Ack() // stale or duplicate
		return
	}
	st := cs.st
	for k, v := range r.Output {
		if st.Context == nil {
			st.Context = Context{}
		}
		st.Context[k] = v
	}
	if st.Step+1 < Steps {
		st.Step++
		st.Seq++
	} else {
		st.Status = "completed"
	}
	rev, err := c.put(ctx, st, cs.rev)
	if err != nil {
		c.log.Warn("state not stored; reply will be redelivered", "saga_id", r.SagaID, "err", err)
		c.forget(r.SagaID)
		_ = m.Nak()
		return
	}
	if st.Status == "completed" {
		c.forget(st.SagaID)
		data, _ := json.Marshal(Event{SagaID: st.SagaID, Status: st.Status})
		_ = c.nc.Publish(EventSubject, data)
	} else {
		c.remember(st, rev)
		if err := c.send(ctx, st); err != nil {
			c.log.Warn("command not stored; reply will be redelivered", "saga_id", r.SagaID, "err", err)
			_ = m.Nak()
			return
		}
	}
	_ = m.Ack()
}

// put stores st with a compare-and-swap on rev (0: create) and returns the
// new revision.
func (c *Coordinator) put(ctx context.Context, st state, rev uint64) (uint64, error) {
	st.Updated = time.Now().UnixNano()
	data, err := json.Marshal(st)
	if err != nil {
		return 0, fmt.Errorf("encode saga %s: %w", st.SagaID, err)
	}
	if rev == 0 {
		return c.kv.Create(ctx, st.SagaID, data)
	}
	return c.kv.Update(ctx, st.SagaID, data, rev)
}

// send publishes st's current command and waits for JetStream to store it.
func (c *Coordinator) send(ctx context.Context, st state) error {
	data, err := json.Marshal(command{SagaID: st.SagaID, Step: st.Step, Seq: st.Seq, Context: st.Context})
	if err != nil {
		return fmt.Errorf("encode command: %w", err)
	}
	_, err = c.js.Publish(ctx, commandSubject(st.Step), data, jetstream.WithMsgID(st.SagaID+"."+strconv.Itoa(st.Seq)))
	return err
}

func (c *Coordinator) remember(st state, rev uint64) {
	// The cached context is shared with nothing: copy it, since a later
	// transition adds to it.
	ctx := make(Context, len(st.Context)+1)
	for k, v := range st.Context {
		ctx[k] = v
	}
	st.Context = ctx
	c.mu.Lock()
	c.cache[st.SagaID] = cachedState{st: st, rev: rev}
	c.mu.Unlock()
}

func (c *Coordinator) forget(id string) {
	c.mu.Lock()
	delete(c.cache, id)
	c.mu.Unlock()
}

// lookup returns the saga's state from the cache, or from the bucket (after
// a restart or a failed write).
func (c *Coordinator) lookup(ctx context.Context, id string) (cachedState, bool) {
	c.mu.Lock()
	cs, ok := c.cache[id]
	c.mu.Unlock()
	if ok {
		cs.st.Context = clone(cs.st.Context)
		return cs, true
	}
	e, err := c.kv.Get(ctx, id)
	if err != nil {
		return cs, false
	}
	if err := json.Unmarshal(e.Value(), &cs.st); err != nil {
		return cs, false
	}
	cs.rev = e.Revision()
	return cs, true
}

func clone(c Context) Context {
	out := make(Context, len(c)+1)
	for k, v := range c {
		out[k] = v
	}
	return out
}

// RunAgent serves the baseline saga's steps on nc until ctx is cancelled,
// then returns nil. It waits for the coordinator's streams. It returns an
// error when it cannot reach its consumer.
func RunAgent(ctx context.Context, nc *nats.Conn, opts AgentOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	conc := cmpOr(opts.Concurrency, 16)
	batch := cmpOr(opts.Batch, 2*conc)
	log := discard(opts.Logger)
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("baseline agent: %w", err)
	}
	var cons jetstream.Consumer
	for {
		cons, err = js.Consumer(ctx, CommandStream, AgentConsumer)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("baseline agent consumer: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(50 * time.Millisecond):
		}
	}
	iter, err := cons.Messages(jetstream.PullMaxMessages(batch))
	if err != nil {
		return fmt.Errorf("baseline agent pull: %w", err)
	}
	go func() {
		<-ctx.Done()
		iter.Drain()
	}()
	work := make(chan jetstream.Msg)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				handle(context.WithoutCancel(ctx), js, opts, log, m)
			}
		}()
	}
	for {
		m, err := iter.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				break
			}
			log.Warn("command consumer", "err", err)
			continue
		}
		work <- m
	}
	close(work)
	wg.Wait()
	return nil
}

// handle runs one command: it does the step's work, stores the reply and
// then acknowledges the command.
func handle(ctx context.Context, js jetstream.JetStream, opts AgentOptions, log *slog.Logger, m jetstream.Msg) {
	var cmd command
	if err := json.Unmarshal(m.Data(), &cmd); err != nil {
		log.Error("dropping malformed command", "err", err)
		_ = m.Term()
		return
	}
	if opts.Latency > 0 {
		time.Sleep(opts.Latency)
	}
	r := reply{SagaID: cmd.SagaID, Step: cmd.Step, Seq: cmd.Seq, Outcome: "ok", Agent: opts.Name,
		Output: Context{"s" + strconv.Itoa(cmd.Step+1) + "_done": json.RawMessage("true")}}
	data, err := json.Marshal(r)
	if err != nil {
		_ = m.Term()
		return
	}
	id := cmd.SagaID + "." + strconv.Itoa(cmd.Seq)
	if _, err := js.Publish(ctx, replySubject(cmd.Step), data, jetstream.WithMsgID(id)); err != nil {
		log.Warn("reply not stored; command will be redelivered", "saga_id", cmd.SagaID, "err", err)
		_ = m.Nak()
		return
	}
	_ = m.Ack()
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}
