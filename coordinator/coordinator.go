package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/pull"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// ErrNoJetStream is returned by [Coordinator.Run] when the NATS server has
// no JetStream: natsaga refuses to run rather than lose sagas.
var ErrNoJetStream = errors.New("natsaga needs JetStream: start nats-server with -js (or jetstream {} in its config)")

// ErrConflict is returned by [Coordinator.Run] when a saga's stored state
// changed under it: another coordinator is writing the same bucket.
var ErrConflict = errors.New("saga state changed by another writer")

// Options configures a [Coordinator]. The zero value needs only Definitions.
type Options struct {
	// Definitions are the sagas the coordinator can run.
	Definitions []saga.Definition
	// Replicas is the number of copies of natsaga's streams and bucket
	// (3 on a 3-node cluster). 0 means 1.
	Replicas int
	// AckWait is how long a reply may stay unacknowledged before JetStream
	// delivers it again; a restarted coordinator waits this long for the
	// replies its predecessor had taken. 0 means 5s.
	AckWait time.Duration
	// MaxBatch bounds how many inputs one commit covers. 0 means 1024.
	MaxBatch int
	// Retention is how long a saga that ended other than failed stays in
	// the bucket, for status queries and idempotent starts; a failed saga
	// stays until it is retried. 0 means DefaultRetention; a negative
	// value keeps every saga for ever.
	Retention time.Duration
	// LeaseTTL is how long the coordinator's lease on the bucket lasts
	// unless renewed. Only the lease holder drives sagas; a coordinator
	// started while another holds it waits as a standby, and takes over
	// within LeaseTTL of the holder's death (at once after a clean stop).
	// 0 means DefaultLeaseTTL; at least a second.
	LeaseTTL time.Duration
	// Logger receives the coordinator's logs. nil discards them.
	Logger *slog.Logger
	// NewID makes saga ids; nil means UUIDs.
	NewID func() string
}

// DefaultRetention is how long a finished saga stays in the bucket.
const DefaultRetention = 7 * 24 * time.Hour

// Validate returns an error when o is unusable.
func (o *Options) Validate() error {
	if len(o.Definitions) == 0 {
		return errors.New("coordinator options: no saga definitions")
	}
	if o.Replicas < 0 || o.AckWait < 0 || o.MaxBatch < 0 {
		return errors.New("coordinator options: negative replicas, ack wait or batch")
	}
	if o.LeaseTTL != 0 && o.LeaseTTL < time.Second {
		return fmt.Errorf("coordinator options: lease TTL %s: at least 1s", o.LeaseTTL)
	}
	for i := range o.Definitions {
		if err := o.Definitions[i].Validate(); err != nil {
			return fmt.Errorf("coordinator options: %w", err)
		}
	}
	return nil
}

// Coordinator drives sagas over NATS. Create it with [New] and start it with
// [Coordinator.Run]. Only one coordinator drives the sagas of a bucket at a
// time: a second one stands by until the first's lease is released or
// expires (see [Coordinator.Run]).
type Coordinator struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	opts   Options
	log    *slog.Logger
	engine *saga.Engine
	in     chan input
	revs   map[string]uint64 // KV revision of each saga held in memory
	clock  uint64            // KV revision of the clock entry
	saved  int64             // tick last stored
	ready  chan struct{}
	// stopped is closed when the loop returns, so producers never block
	// on a loop that is gone.
	stopped chan struct{}
	// lost is closed when the lease is lost.
	lost <-chan struct{}
	// arena holds the payloads of the batch being committed; evbuf, the
	// event being published.
	arena, evbuf []byte
	// changed, early and late are commit's scratch: the sagas to store,
	// and the commands that may go out before and only after the stores.
	changed     map[string]bool
	early, late []*messages.Command
	// newRoles carries the roles that registered definitions add to the
	// reader of their barrier records.
	newRoles chan string
}

// input is one thing the engine loop applies. apply runs on the loop and
// returns what to do once the batch is committed (nil: nothing); done gets
// the commit error, nil on success.
type input func(now time.Time, out *saga.Outbox) (done func(err error))

// New returns a coordinator on nc. It returns an error when opts do not
// validate.
func New(nc *nats.Conn, opts Options) (*Coordinator, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.AckWait == 0 {
		opts.AckWait = 5 * time.Second
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1024
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := saga.New(saga.Options{NewID: opts.NewID})
	for _, d := range opts.Definitions {
		if err := e.Register(d); err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
	}
	// A store or publish that is not acknowledged in time fails the commit
	// (and stops the coordinator, to be restarted) rather than hang it.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	return &Coordinator{nc: nc, js: js, opts: opts, log: log, engine: e,
		in: make(chan input, 4*opts.MaxBatch), revs: map[string]uint64{}, changed: map[string]bool{}, ready: make(chan struct{}), stopped: make(chan struct{}),
		newRoles: make(chan string, 16)}, nil
}

// Ready is closed once the coordinator holds the lease, has recovered its
// sagas and serves requests. A standby is not ready.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Run sets up natsaga's streams, bucket and consumer, waits for the lease
// as a standby while another coordinator holds it, recovers every stored
// saga, and drives sagas until ctx is cancelled. It returns nil after a
// clean stop (releasing the lease), [ErrNoJetStream] when the server has no
// JetStream, [ErrLeaseLost] when another coordinator took over, and any
// other error that stopped it (the process should exit; a restart resumes
// where it stopped).
func (c *Coordinator) Run(ctx context.Context) error {
	if err := c.setup(ctx); err != nil {
		return err
	}
	l := c.newLease()
	if err := l.acquire(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	keepCtx, stopKeeping := context.WithCancel(ctx)
	lost := make(chan struct{})
	go l.keep(keepCtx, lost)
	defer func() {
		stopKeeping()
		<-lost
		l.release()
	}()
	c.lost = lost
	if err := c.recover(ctx); err != nil {
		return err
	}
	first, err := c.openReplies(ctx)
	if err != nil {
		return err
	}
	subs, err := c.subscribe()
	if err != nil {
		first.Stop()
		return err
	}
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	pulling, stopPulling := context.WithCancel(ctx)
	var pullers sync.WaitGroup
	pullers.Go(func() { c.pullReplies(pulling, first) })
	for _, role := range c.roles() {
		pullers.Go(func() { c.pullRecords(pulling, role) })
	}
	// A role that a registered definition adds gets its reader too.
	pullers.Go(func() {
		for {
			select {
			case <-pulling.Done():
				return
			case role := <-c.newRoles:
				pullers.Go(func() { c.pullRecords(pulling, role) })
			}
		}
	})
	defer func() {
		stopPulling()
		pullers.Wait()
	}()
	// Ready means requests are answered: the server must know the
	// subscriptions before anyone is told.
	if err := c.nc.Flush(); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	close(c.ready)
	c.log.Info("coordinator running", "tick", c.engine.Tick(), "active", c.engine.Summary().Active)
	defer close(c.stopped)
	return c.loop(ctx)
}

func (c *Coordinator) setup(ctx context.Context) error {
	if _, err := c.js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("%w: %w", ErrNoJetStream, err)
		}
		return fmt.Errorf("jetstream: %w", err)
	}
	r := max(c.opts.Replicas, 1)
	streams := []jetstream.StreamConfig{
		c.commandStreamConfig(),
		{Name: messages.ReplyStream, Subjects: messages.ReplySubjects, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: r, Duplicates: 2 * time.Minute},
		{Name: messages.EventStream, Subjects: messages.EventSubjects, Storage: jetstream.FileStorage,
			Replicas: r, MaxAge: 24 * time.Hour, MaxMsgs: 1_000_000, Discard: jetstream.DiscardOld},
	}
	for _, cfg := range streams {
		if _, err := c.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	// The lease and finished sagas expire with per-key TTLs; the marker
	// an expiry leaves for watchers lives a minute.
	kvCfg := jetstream.KeyValueConfig{Bucket: messages.SagaBucket, History: 1, Storage: jetstream.FileStorage,
		Replicas: r, LimitMarkerTTL: time.Minute}
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, kvCfg)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	c.kv = kv
	_, err = c.js.CreateOrUpdateConsumer(ctx, messages.ReplyStream, jetstream.ConsumerConfig{
		Durable: messages.ReplyConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.opts.AckWait,
		MaxDeliver: -1, MaxAckPending: 65536,
	})
	if err != nil {
		return fmt.Errorf("reply consumer: %w", err)
	}
	return nil
}

// commandStreamConfig is the configuration of the command stream, whose
// subjects are the command subjects of every step of every version the
// engine knows: a command for anything else is refused at publish, not
// kept for an agent that will never come.
func (c *Coordinator) commandStreamConfig() jetstream.StreamConfig {
	var subs []string
	for _, d := range c.engine.Versions() {
		for _, st := range d.Steps {
			for _, s := range messages.StepCommandSubjects(d.Subject, st.Name) {
				if !slices.Contains(subs, s) {
					subs = append(subs, s)
				}
			}
		}
	}
	return jetstream.StreamConfig{Name: messages.CommandStream, Subjects: subs, Retention: jetstream.WorkQueuePolicy,
		Storage: jetstream.FileStorage, Replicas: max(c.opts.Replicas, 1), Duplicates: 2 * time.Minute}
}

// recover loads every stored saga into the engine and resends the
// outstanding commands.
func (c *Coordinator) recover(ctx context.Context) error {
	w, err := c.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	defer w.Stop()
	var stored []saga.Execution
	var tick int64
	for entry := range w.Updates() {
		if entry == nil {
			break
		}
		key := entry.Key()
		switch {
		case key == messages.ClockKey:
			if tick, err = strconv.ParseInt(string(entry.Value()), 10, 64); err != nil {
				return fmt.Errorf("recover clock: %w", err)
			}
			c.clock = entry.Revision()
		case strings.HasPrefix(key, messages.DefinitionKeyPrefix):
			if err := c.restoreDefinition(key, entry.Value()); err != nil {
				return fmt.Errorf("recover: %w", err)
			}
		case strings.HasPrefix(key, messages.SagaKeyPrefix):
			var x saga.Execution
			if err := json.Unmarshal(entry.Value(), &x); err != nil {
				return fmt.Errorf("recover %s: %w", key, err)
			}
			stored = append(stored, x)
			if !x.Status.Terminal() || x.Status == saga.Failed {
				c.revs[x.ID] = entry.Revision()
			}
		}
	}
	if _, err := c.js.CreateOrUpdateStream(ctx, c.commandStreamConfig()); err != nil {
		return fmt.Errorf("recover: stream %s: %w", messages.CommandStream, err)
	}
	for _, x := range stored {
		if d, ok := c.engine.Definition(x.Definition); ok {
			renumber(&x, d)
		}
		if err := c.engine.Restore(x, tick); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	c.saved = c.engine.Tick()
	var executing []string
	for _, x := range stored {
		if x.Status == saga.InProgress && x.Action == messages.Execute {
			executing = append(executing, x.ID)
		}
	}
	if err := c.catchUp(ctx, executing); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	var out saga.Outbox
	c.engine.Resume(&out)
	if err := c.commit(ctx, &out); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	cmds := c.engine.Outstanding()
	if err := c.publishCommands(ctx, cmds); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	c.log.Info("recovered", "sagas", len(stored), "resent", len(cmds), "tick", tick)
	return nil
}

// loop owns the engine: it applies inputs in batches and commits each batch.
func (c *Coordinator) loop(ctx context.Context) error {
	var out saga.Outbox
	var dones []func(error)
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	for {
		out.Reset()
		dones = dones[:0]
		select {
		case <-ctx.Done():
			return nil
		case <-c.lost:
			if ctx.Err() != nil {
				return nil
			}
			return ErrLeaseLost
		case in := <-c.in:
			if d := in(time.Now(), &out); d != nil {
				dones = append(dones, d)
			}
		drain:
			for len(dones) < c.opts.MaxBatch {
				select {
				case in := <-c.in:
					if d := in(time.Now(), &out); d != nil {
						dones = append(dones, d)
					}
				default:
					break drain
				}
			}
		case now := <-wake.C:
			c.engine.Wake(now, &out)
		}
		err := c.commit(ctx, &out)
		for _, d := range dones {
			d(err)
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopped while committing: a clean stop. What the batch
				// did not store is redone by the next coordinator (its
				// inputs are not acknowledged).
				return nil
			}
			return err
		}
		if at, ok := c.engine.NextWake(); ok {
			wake.Reset(max(time.Until(at), 0))
		}
	}
}

// commit stores the changed sagas and publishes the commands, a command
// only once its saga's change is stored; then it publishes the events. The
// commands of unranked sagas that are not stored (see durability.go) go
// out at once, beside the writes; those of ranked sagas go out after them,
// in the order the engine released them, which is rank order.
func (c *Coordinator) commit(ctx context.Context, out *saga.Outbox) error {
	c.arena = c.arena[:0]
	clear(c.changed)
	for _, x := range out.Changed {
		c.changed[x.ID] = true
	}
	c.early, c.late = c.early[:0], c.late[:0]
	for i := range out.Commands {
		if out.Commands[i].Rank > 0 || c.changed[out.Commands[i].SagaID] {
			c.late = append(c.late, &out.Commands[i])
		} else {
			c.early = append(c.early, &out.Commands[i])
		}
	}
	early, err := c.sendCommands(ctx, c.early, nil)
	if err != nil {
		return err
	}
	if err := c.store(ctx, out.Changed); err != nil {
		return err
	}
	sent, err := c.sendCommands(ctx, c.late, early)
	if err != nil {
		return err
	}
	if err := c.awaitCommands(ctx, sent); err != nil {
		return err
	}
	for i := range out.Events {
		ev := &out.Events[i]
		// Publish copies data: the buffer is reused.
		c.evbuf = wirejson.AppendEvent(c.evbuf[:0], ev)
		if err := c.nc.Publish(messages.EventSubject(ev.Saga, ev.Status), c.evbuf); err != nil {
			c.log.Warn("event not published", "saga_id", ev.SagaID, "err", err)
		}
		c.logEvent(ev)
	}
	return nil
}

func (c *Coordinator) logEvent(ev *messages.Event) {
	switch saga.Status(ev.Status) {
	case saga.Failed:
		c.log.Error("saga failed", "saga_id", ev.SagaID, "saga", ev.Saga, "tick", ev.Tick, "reason", ev.Reason)
	case saga.Compensating:
		c.log.Info("saga rolling back", "saga_id", ev.SagaID, "saga", ev.Saga, "tick", ev.Tick, "reason", ev.Reason)
	default:
		c.log.Debug("saga status", "saga_id", ev.SagaID, "saga", ev.Saga, "status", ev.Status, "tick", ev.Tick)
	}
}

// store writes each changed saga once, in parallel, each guarded by its
// revision, and the clock when it moved. commit has put the ids of changed
// in c.changed.
func (c *Coordinator) store(ctx context.Context, changed []*saga.Execution) error {
	type pending struct {
		x   *saga.Execution
		ack jetstream.PubAckFuture
	}
	var ps []pending
	settled := 0
	settle := func(p pending) error {
		ack, err := wait(ctx, p.ack)
		if err != nil {
			return fmt.Errorf("store saga %s: %w", p.x.ID, err)
		}
		if p.x.Status.Terminal() && p.x.Status != saga.Failed {
			delete(c.revs, p.x.ID)
		} else {
			c.revs[p.x.ID] = ack.Sequence
		}
		return nil
	}
	for i := len(changed) - 1; i >= 0; i-- {
		x := changed[i]
		if !c.changed[x.ID] {
			continue // stored already: a saga may change twice in a batch
		}
		c.changed[x.ID] = false
		data, err := c.encode(func(dst []byte) ([]byte, error) { return wirejson.AppendExecution(dst, x) })
		if err != nil {
			return fmt.Errorf("encode saga %s: %w", x.ID, err)
		}
		var ttl time.Duration
		if x.Status.Terminal() && x.Status != saga.Failed && c.opts.Retention > 0 {
			ttl = c.opts.Retention
		}
		// A tick may change many thousands of sagas: at most maxInflight
		// writes are waiting for their acknowledgement at once.
		if len(ps)-settled >= maxInflight {
			if err := settle(ps[settled]); err != nil {
				return err
			}
			settled++
		}
		f, err := c.putAsync(messages.SagaKey(x.ID), data, c.revs[x.ID], ttl)
		if err != nil {
			return err
		}
		ps = append(ps, pending{x, f})
	}
	var clock jetstream.PubAckFuture
	if t := c.engine.Tick(); t != c.saved {
		f, err := c.putAsync(messages.ClockKey, []byte(strconv.FormatInt(t, 10)), c.clock, 0)
		if err != nil {
			return err
		}
		clock = f
	}
	for _, p := range ps[settled:] {
		if err := settle(p); err != nil {
			return err
		}
	}
	if clock != nil {
		ack, err := wait(ctx, clock)
		if err != nil {
			return fmt.Errorf("store clock: %w", err)
		}
		c.clock = ack.Sequence
		c.saved = c.engine.Tick()
	}
	return nil
}

// encode appends a payload to the batch's arena and returns it. The arena
// is reset at the start of each commit: a commit returns only once every
// publish it made is settled, so nothing reads an earlier batch's payloads.
func (c *Coordinator) encode(appendJSON func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(c.arena)
	arena, err := appendJSON(c.arena)
	if err != nil {
		return nil, err
	}
	c.arena = arena
	return arena[start:len(arena):len(arena)], nil
}

// putAsync writes key guarded by rev, to expire after ttl when ttl > 0.
func (c *Coordinator) putAsync(key string, data []byte, rev uint64, ttl time.Duration) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(messages.BucketSubject(key))
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	}
	f, err := c.js.PublishMsgAsync(m)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", key, err)
	}
	return f, nil
}

func wait(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		if jserr.Conflict(err) {
			return nil, fmt.Errorf("%w: %w", ErrConflict, err)
		}
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sentCommand is a command published and not yet known to be stored.
type sentCommand struct {
	cmd *messages.Command
	ack jetstream.PubAckFuture
	// done is set once the command is known to be stored.
	done bool
}

// maxInflight bounds the saga writes, and apart from them the commands,
// that a commit has waiting for their acknowledgement at once: below the
// client's limit of asynchronous publishes in flight (4,000).
const maxInflight = 1024

// sendCommands publishes cmds into the command stream without waiting, and
// appends them to sent. Commands carry no message id: a command sent again
// after a restart must reach its agent, whose barrier answers it (and two
// coordinators restored from one stored state number their commands alike).
func (c *Coordinator) sendCommands(ctx context.Context, cmds []*messages.Command, sent []sentCommand) ([]sentCommand, error) {
	for _, cmd := range cmds {
		if n := len(sent); n >= maxInflight && !sent[n-maxInflight].done {
			s := &sent[n-maxInflight]
			if _, err := wait(ctx, s.ack); err != nil {
				return sent, fmt.Errorf("publish command %s: %w", s.cmd.Subject(), err)
			}
			s.done = true
		}
		data, err := c.encode(func(dst []byte) ([]byte, error) { return wirejson.AppendCommand(dst, cmd) })
		if err != nil {
			return sent, fmt.Errorf("encode command: %w", err)
		}
		f, err := c.js.PublishMsgAsync(&nats.Msg{Subject: cmd.Subject(), Data: data})
		if err != nil {
			return sent, fmt.Errorf("publish command: %w", err)
		}
		sent = append(sent, sentCommand{cmd: cmd, ack: f})
	}
	return sent, nil
}

// awaitCommands waits until every command of sent is stored.
func (c *Coordinator) awaitCommands(ctx context.Context, sent []sentCommand) error {
	for _, s := range sent {
		if s.done {
			continue
		}
		if _, err := wait(ctx, s.ack); err != nil {
			return fmt.Errorf("publish command %s: %w", s.cmd.Subject(), err)
		}
	}
	return nil
}

// publishCommands publishes cmds and waits until all are stored.
func (c *Coordinator) publishCommands(ctx context.Context, cmds []messages.Command) error {
	ps := make([]*messages.Command, len(cmds))
	for i := range cmds {
		ps[i] = &cmds[i]
	}
	sent, err := c.sendCommands(ctx, ps, nil)
	if err != nil {
		return err
	}
	return c.awaitCommands(ctx, sent)
}

// openReplies binds the reply consumer and returns an iterator over it.
func (c *Coordinator) openReplies(ctx context.Context) (jetstream.MessagesContext, error) {
	cons, err := c.js.Consumer(ctx, messages.ReplyStream, messages.ReplyConsumer)
	if err != nil {
		return nil, fmt.Errorf("reply consumer: %w", err)
	}
	// Short pulls with frequent heartbeats notice a restarted server within
	// seconds rather than the client's default 30.
	it, err := cons.Messages(jetstream.PullMaxMessages(c.opts.MaxBatch), jetstream.PullExpiry(4*time.Second), jetstream.PullHeartbeat(time.Second))
	if err != nil {
		return nil, fmt.Errorf("reply consumer: %w", err)
	}
	return it, nil
}

// pullReplies feeds delivered replies to the loop until ctx ends, starting
// with first and opening the consumer again whenever it was lost.
func (c *Coordinator) pullReplies(ctx context.Context, first jetstream.MessagesContext) {
	open := func(ctx context.Context) (jetstream.MessagesContext, error) {
		if first != nil {
			it := first
			first = nil
			return it, nil
		}
		return c.openReplies(ctx)
	}
	// Replies pulled but not applied are redelivered to the next
	// coordinator, so the iterator stops at once on shutdown.
	pull.Loop(ctx, ctx, c.log, pull.Options{}, open, func(m jetstream.Msg) { c.enqueue(c.replyInput(m)) })
}

func (c *Coordinator) replyInput(m jetstream.Msg) input {
	return func(now time.Time, out *saga.Outbox) func(error) {
		r, err := wirejson.DecodeReply(m.Data())
		if err != nil {
			c.log.Error("dropping malformed reply", "subject", m.Subject(), "err", err)
			_ = m.Term()
			return nil
		}
		if m.Subject() != r.Subject() {
			c.log.Error("dropping reply on the wrong subject", "subject", m.Subject(), "saga_id", r.SagaID)
			_ = m.Term()
			return nil
		}
		// A reply's effect is always stored (see durability.go).
		err = c.engine.ApplyReply(r, now, out)
		switch {
		case errors.Is(err, saga.ErrEarly):
			c.log.Debug("early reply held back", "saga_id", r.SagaID, "step", r.Step, "err", err)
			return func(error) { _ = m.NakWithDelay(earlyDelay) }
		case errors.Is(err, saga.ErrStale):
			c.log.Debug("stale reply ignored", "saga_id", r.SagaID, "step", r.Step, "attempt", r.Attempt, "err", err)
		case err != nil:
			c.log.Warn("reply rejected", "saga_id", r.SagaID, "step", r.Step, "err", err)
		}
		return func(err error) {
			if err == nil {
				_ = m.Ack()
			}
		}
	}
}

// earlyDelay is how long an answer that came before its time (see
// saga.ErrEarly) waits before JetStream offers it again.
const earlyDelay = 20 * time.Millisecond
