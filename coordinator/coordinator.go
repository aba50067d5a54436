package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/internal/pull"
	"github.com/natsaga/natsaga/internal/streams"
	"github.com/natsaga/natsaga/internal/warnings"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// ErrNoJetStream is returned by [Coordinator.Run] when the NATS server has
// no JetStream: natsaga refuses to run rather than lose sagas.
var ErrNoJetStream = errors.New("natsaga needs JetStream: start nats-server with -js (or jetstream {} in its config)")

// ErrDefinitionConflict is returned by [Coordinator.Run] when a definition
// of Options.Definitions differs from the one the bucket holds under the
// same name and version: one of them needs a new version. A saga of that
// version could otherwise run by other steps than it started with.
var ErrDefinitionConflict = errors.New("saga definition differs from the stored one of the same version")

// ErrRanBefore is returned by a second [Coordinator.Run]: a coordinator
// runs once; make another with [New].
var ErrRanBefore = errors.New("coordinator: Run was called before (make a new coordinator to run again)")

// ErrConflict ends a term of [Coordinator.Run] when a saga's stored state
// changed under it: another coordinator is writing the same bucket. Run
// logs it and stands by again, as after a lost lease; it does not return
// it.
var ErrConflict = errors.New("saga state changed by another writer")

// Options configures a [Coordinator]. The zero value works: a coordinator
// started with no Definitions runs those registered at run time (the
// natsaga.register request) and those its bucket holds.
type Options struct {
	// Definitions are the sagas the coordinator can run. Each version is
	// stored in the bucket when the coordinator becomes active, as one
	// registered at run time is, so that a coordinator started later with
	// other versions still runs the stored sagas by theirs.
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
	// CommandBatch bounds how many commands of one step the coordinator
	// sends in one message, to a role whose agents read batches
	// (wire.go). 0 means messages.MaxBatch; 1 sends every command alone.
	CommandBatch int
	// Retention is how long a saga that ended other than failed stays in
	// the bucket, for status queries and idempotent starts; a failed saga
	// stays until it is retried. 0 means DefaultRetention; a negative
	// value keeps every saga for ever.
	Retention time.Duration
	// LeaseTTL is how long the coordinator's lease on the bucket lasts
	// unless renewed. Only the lease holder drives sagas; a coordinator
	// started while another holds it waits as a standby, and takes over
	// about LeaseTTL after the holder's last renewal (it renews every third
	// of it), so a little under or over LeaseTTL after the holder dies, and
	// at once after its clean stop.
	// 0 means DefaultLeaseTTL; at least a second.
	LeaseTTL time.Duration
	// MaxActive bounds the sagas in flight: a start beyond it is answered
	// at once with the error code "busy" and starts nothing. 0 means
	// DefaultMaxActive; a negative value admits every start.
	MaxActive int
	// MaxActiveBytes bounds the bytes the sagas in flight hold, counted
	// as saga.Engine.ActiveBytes counts them (approximately: their
	// contexts, the step outputs merged into them, and their histories,
	// as encoded): a start that would take the count past it is answered
	// "busy" as a start beyond MaxActive is, unless no saga is in flight.
	// Sagas recovered over it are all recovered, and starts answered busy
	// until those in flight hold less. 0 means DefaultMaxActiveBytes; a
	// negative value admits every start.
	MaxActiveBytes int64
	// MaxDefinitionBytes bounds the definitions the coordinator holds,
	// every version of each, counted as stored (a definitions file each):
	// a registration that would take it past is refused (bad_request, its
	// error wrapping [ErrDefinitionsFull]). The versions given at start
	// and those stored are always held. 0 means DefaultMaxDefinitionBytes;
	// a negative value takes every registration.
	MaxDefinitionBytes int64
	// Logger receives the coordinator's logs. nil discards them.
	Logger *slog.Logger
	// Observer, when set, is told what the coordinator does (for
	// metrics); see [Observer].
	Observer Observer
	// TracerProvider, when set, makes the spans of the sagas this
	// coordinator starts: one trace per saga, from the start request (its
	// headers' W3C trace context is the parent) through a span per step
	// and compensation, whose context travels to the agents in the
	// commands' headers. nil makes none.
	TracerProvider trace.TracerProvider
	// NewID makes saga ids; nil means UUIDs.
	NewID func() string
	// Metadata is announced in the coordinator's micro service's
	// metadata, beside the "definitions", "state", "copy" and "pid" the
	// coordinator sets, which it may not name. natsaga's coordinator
	// program puts there, under "metrics", the address it serves metrics
	// and health on.
	Metadata map[string]string
}

// DefaultMaxActive is the default of Options.MaxActive: at the 1.6 KiB a
// saga in flight with a small context takes (BENCHMARKS.md), about 160 MB,
// and under a GiB at 8 KiB a saga.
const DefaultMaxActive = 100_000

// DefaultMaxActiveBytes is the default of Options.MaxActiveBytes: a
// quarter of the GiB DefaultMaxActive is sized to.
const DefaultMaxActiveBytes = 256 << 20

// DefaultMaxDefinitionBytes is the default of Options.MaxDefinitionBytes:
// more than 20,000 versions of a definition of a few KiB, as the flood
// model's are, and 64 of the largest a server with the default payload
// limit stores.
const DefaultMaxDefinitionBytes = 64 << 20

// DefaultRetention is how long a finished saga stays in the bucket.
const DefaultRetention = 7 * 24 * time.Hour

// Validate returns an error when o is unusable.
func (o *Options) Validate() error {
	if o.Replicas < 0 || o.AckWait < 0 || o.MaxBatch < 0 {
		return errors.New("coordinator options: negative replicas, ack wait or batch")
	}
	if o.CommandBatch < 0 || o.CommandBatch > messages.MaxBatch {
		return fmt.Errorf("coordinator options: command batch %d: between 1 and %d, or 0 for %d", o.CommandBatch, messages.MaxBatch, messages.MaxBatch)
	}
	if o.LeaseTTL != 0 && o.LeaseTTL < time.Second {
		return fmt.Errorf("coordinator options: lease TTL %s: at least 1s", o.LeaseTTL)
	}
	if o.Retention > 0 && o.Retention < time.Second {
		// A finished saga's TTL in the bucket: JetStream's least is 1s.
		return fmt.Errorf("coordinator options: retention %s: at least 1s, or negative for ever", o.Retention)
	}
	for _, k := range ownMetadata {
		if _, ok := o.Metadata[k]; ok {
			return fmt.Errorf("coordinator options: metadata %q is the coordinator's own", k)
		}
	}
	for i := range o.Definitions {
		if err := o.Definitions[i].Validate(); err != nil {
			return fmt.Errorf("coordinator options: %w", err)
		}
		if _, err := definitionFile(o.Definitions[i]); err != nil {
			return fmt.Errorf("coordinator options: %w", err)
		}
	}
	if err := checkCommandSubjects(o.Definitions); err != nil {
		return fmt.Errorf("coordinator options: definitions: %w", err)
	}
	return nil
}

// Coordinator drives sagas over NATS. Create it with [New] and start it with
// [Coordinator.Run]. Only one coordinator drives the sagas of a bucket at a
// time: a second one stands by until the first's lease is released or
// expires (see [Coordinator.Run]).
type Coordinator struct {
	// ran is set by the first Run.
	ran atomic.Bool
	// copy names this coordinator for its life: in its micro services'
	// metadata and in the lease it holds, so that a standby's log and
	// `natsaga services` name the active one alike.
	copy string
	nc   *nats.Conn
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	opts Options
	log  *slog.Logger
	// warns says the warnings that bad requests cause at most once a
	// minute each: anyone allowed to send requests could otherwise fill
	// the log. (Replies and records come from the roles' agents, whose
	// users alone may publish them: each one refused is logged.)
	warns  *warnings.Limiter
	engine *saga.Engine
	// definitionBytes is what the engine's definitions take as stored:
	// the bound of Options.MaxDefinitionBytes. The loop's, as the engine.
	definitionBytes int64
	// latestEnded indexes the latest sagas that ended, for lists (ended.go).
	latestEnded endedIndex

	revs  map[string]uint64 // bucket revision of each saga held in memory that the bucket holds
	sagas *sagaLog          // the log of the active sagas (sagalog.go)
	clock uint64            // KV revision of the clock entry
	saved int64             // tick last stored
	ready chan struct{}
	// begun holds the sagas that began at the tick last stored, stored
	// pending since they were scheduled and not stored since (see
	// onlyBegan); they are stored when the clock moves on.
	begun map[string]struct{}
	// readyOnce closes ready at the first term that serves.
	readyOnce sync.Once
	// term is the queue of the current term's loop (see Run).
	term atomic.Pointer[term]
	// lost is closed when the lease is lost.
	lost <-chan struct{}
	// held is the current term's lease: until when it surely holds, by
	// this process's clock (see lease.check).
	held *lease
	// afterAcquire, when set (by a test), is called once a term holds
	// the lease, before it renews it or does anything else.
	afterAcquire func()
	// beforeCommit, when set (by a test), is called as each batch's
	// commit begins: a test holds the commit there.
	beforeCommit func(out *saga.Outbox)
	// arena holds the payloads of the batch being committed; evbuf, its
	// events encoded.
	arena, evbuf []byte
	// changed, early and late are commit's scratch: the sagas to store,
	// and the commands that may go out before and only after the stores.
	changed     map[string]bool
	early, late []*messages.Command
	// entries is store's scratch: the saga log's entries of the commit.
	entries []kvlog.Entry
	// refused counts the answers refused as not from the step's role.
	refused atomic.Int64
	// resent holds the resends of the commands in flight that agents of
	// the wrong role took (records.go, sendAgain).
	resent map[string]resent
	// earlyReplies holds, by saga, the reply held back as early
	// (early.go).
	earlyReplies map[string]heldEarly
	// active is the number of sagas in flight after the last batch, for
	// refusing a start over the limit before it is queued; activeBytes
	// the bytes they hold (saga.Engine.ActiveBytes), likewise.
	active      atomic.Int64
	activeBytes atomic.Int64
	// state is where Run is: one of the run* constants; ended, why its
	// terms ended since it was last ready, for Health to say.
	state atomic.Int32
	ended atomic.Pointer[endedTerms]
	// tracer and traces make the sagas' spans when
	// Options.TracerProvider is set.
	tracer trace.Tracer
	traces map[string]*sagaTrace
	// sentAt holds when the outstanding command of each saga was
	// published, kept only for an Observer.
	sentAt map[string]time.Time
	// reads runs the reads of the bucket that answer requests, and lists
	// bounds those of them that list finished sagas.
	reads bucketReads
	lists chan struct{}
	// newRoles carries the roles that registered definitions add to the
	// reader of their barrier records.
	newRoles chan string
	// batchConsumers holds, by name, the command stream's consumers that
	// read command batches (wire.go).
	batchConsumers atomic.Pointer[map[string]batchReader]
	// readBatches holds, by name, whether each consumer of the command
	// stream read batches when last seen (wire.go), under wireMu.
	wireMu      sync.Mutex
	readBatches map[string]bool
	commands    jetstream.Stream // the command stream, as setup left it
	// steps holds the command subjects of the latest definitions' steps,
	// for followWire's check that the roles' consumers take them
	// (served.go); the loop sets it when the definitions change.
	steps atomic.Pointer[[]stepSubject]
}

// term is what producers need of one term of the coordinator (see Run):
// the queue of its loop, and a channel closed when the loop has returned,
// so producers never block on a loop that is gone.
type term struct {
	in      chan input
	stopped chan struct{}
}

// input is one thing the engine loop applies. apply runs on the loop and
// returns what to do once the batch is committed (nil: nothing); done gets
// the commit error, nil on success.
type input func(now time.Time, out *saga.Outbox) (done func(err error))

// New returns a coordinator on nc. It returns an error when opts do not
// validate.
func New(nc *nats.Conn, opts Options) (*Coordinator, error) {
	if nc == nil {
		return nil, errors.New("coordinator: no NATS connection (nil)")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.AckWait == 0 {
		opts.AckWait = 5 * time.Second
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 1024
	}
	if opts.CommandBatch == 0 {
		opts.CommandBatch = messages.MaxBatch
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.MaxActive == 0 {
		opts.MaxActive = DefaultMaxActive
	}
	if opts.MaxActiveBytes == 0 {
		opts.MaxActiveBytes = DefaultMaxActiveBytes
	}
	if opts.MaxDefinitionBytes == 0 {
		opts.MaxDefinitionBytes = DefaultMaxDefinitionBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	// A store or publish that is not acknowledged in time fails the commit
	// (and ends the term, to start again) rather than hang it.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	c := &Coordinator{copy: nuid.Next(), nc: nc, js: js, opts: opts, log: log, warns: warnings.New(log, time.Minute),
		ready: make(chan struct{}), lists: make(chan struct{}, maxFinishedLists), newRoles: make(chan string, 16)}
	if opts.TracerProvider != nil {
		c.tracer = opts.TracerProvider.Tracer(tracerName)
	}
	if err := c.reset(); err != nil {
		return nil, err
	}
	return c, nil
}

// reset gives the coordinator a fresh engine and term, as a new process
// would have: a new term recovers every saga from the bucket.
func (c *Coordinator) reset() error {
	// Every command carries its saga's context: held to what a start may
	// bring (a quarter of the server's payload limit) and to what an
	// agent reads (messages.MaxContext), every command can be delivered.
	maxContext := min(messages.MaxContext, int(c.nc.MaxPayload()/4))
	e := saga.New(saga.Options{NewID: c.opts.NewID, MaxContext: maxContext})
	c.definitionBytes = 0
	for _, d := range c.opts.Definitions {
		if err := e.Register(d); err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		data, err := definitionFile(d) // checked by Options.validate
		if err != nil {
			return fmt.Errorf("coordinator: %w", err)
		}
		c.definitionBytes += int64(len(data))
	}
	c.engine = e
	if c.opts.Observer != nil {
		// Between terms, and standing by, it holds no saga and no clock.
		c.opts.Observer.Committed(nil, nil, e.Summary())
		c.observeBytes()
	}
	c.revs, c.changed, c.sagas = map[string]uint64{}, map[string]bool{}, newSagaLog()
	c.latestEnded.reset()
	c.resent, c.earlyReplies = map[string]resent{}, map[string]heldEarly{}
	c.traces, c.sentAt = map[string]*sagaTrace{}, map[string]time.Time{}
	// A term that ended in a commit may leave publishes unsettled, whose
	// payloads are in the arena: the next term encodes into a new one.
	c.arena = nil
	c.clock, c.saved, c.begun = 0, 0, map[string]struct{}{}
	c.term.Store(&term{in: make(chan input, 4*c.opts.MaxBatch), stopped: make(chan struct{})})
	return nil
}

// Ready is closed once the coordinator first holds the lease, has
// recovered its sagas and serves requests. A standby is not ready.
func (c *Coordinator) Ready() <-chan struct{} { return c.ready }

// Run sets up natsaga's streams, bucket and consumer, waits for the lease
// as a standby while another coordinator holds it, recovers every stored
// saga, and drives sagas until ctx is cancelled.
//
// One such term ends when the lease is lost (another coordinator took
// over, or the server was out of reach longer than the lease), when a
// write fails (a lost connection, a server restarting) or when its setup
// fails: Run then logs why, starts afresh as a standby, and recovers every
// saga from the bucket again, as a restarted process would. Holding the
// lease, it stores the versions of Options.Definitions the bucket lacks
// before it recovers. It returns nil after a clean stop (releasing the
// lease), [ErrNoJetStream] when the server has no JetStream as it starts
// (one that comes back without it after a term has set up is waited for,
// as a set-up that fails, every 5 s, not ready meanwhile), an error
// wrapping [ErrDefinitionConflict] when a definition differs from the
// stored one of its version, an error wrapping [ErrTooManyCommandSubjects]
// when its definitions would take the command stream, with the subjects
// it holds, past [MaxCommandSubjects], one wrapping [ErrDefinitionTooLarge]
// when a saga of one of them might not fit in the server's payload limit,
// JetStream's refusal when it asks for replicas
// of its streams on a server that is not in a cluster, and an error when
// the connection is closed for good (its reconnect attempts ran out).
// A Coordinator runs once: a second Run returns [ErrRanBefore] at once.
func (c *Coordinator) Run(ctx context.Context) error {
	if !c.ran.CompareAndSwap(false, true) {
		return ErrRanBefore
	}
	defer c.state.Store(runStopped)
	// The asynchronous publishes' reply subscription lives on the caller's
	// connection, which may outlive the coordinator (a test, a program
	// running several): it goes with Run.
	defer c.js.CleanupPublisher()
	// setUp is set once a term has set up: a server without JetStream is
	// then one restarted without it, which may be restarted with it again.
	setUp := false
	// failed counts the terms in a row that ended before they served.
	failed := 0
	for {
		err := c.runTerm(ctx)
		setUp = setUp || c.state.Load() != runStarting
		if c.state.Load() == runActive {
			failed = 0
		}
		failed++
		pause := termPauseAfter(failed)
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			return nil
		case errors.Is(err, ErrNoJetStream) && setUp:
			// Like the agents, it waits: every copy exiting would leave
			// no coordinator once JetStream is back.
			pause = noJetStreamPause
		case errors.Is(err, ErrNoJetStream), errors.Is(err, ErrDefinitionConflict), errors.Is(err, ErrTooManyCommandSubjects),
			errors.Is(err, ErrDefinitionTooLarge),
			jserr.NotClustered(err):
			return err
		case c.nc.IsClosed():
			return fmt.Errorf("coordinator: connection closed: %w", err)
		}
		c.log.Error("coordinator term ended; standing by to start again", "err", err)
		// Not ready until the next term has set up its streams again: a
		// set-up that keeps failing is not a healthy standby.
		c.ended.Store(c.ended.Load().next(err, c.state.Load() != runStarting))
		c.state.Store(runStarting)
		if err := c.reset(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
	}
}

// ensureStream is [streams.Ensure], saying at error a stream whose limits
// were cut by hand.
func (c *Coordinator) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, cut, err := streams.Ensure(ctx, c.js, cfg)
	if len(cut) > 0 {
		c.log.Error("a stream's limits were cut by hand: what they removed is lost (sagas, or the commands they held); set back to natsaga's",
			"stream", cfg.Name, "cut", strings.Join(cut, "; "))
	}
	return s, err
}

// checkSagaLog says at error a saga log missing from a server whose
// bucket holds the clock: sagas ran on it, and the log, deleted, took the
// active ones with it (a coordinator makes it anew).
func (c *Coordinator) checkSagaLog(ctx context.Context) error {
	_, err := c.js.Stream(ctx, messages.SagaLogStream)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	switch _, err := c.kv.Get(ctx, messages.ClockKey); {
	case err == nil:
		c.log.Error("the saga log is not on the server, though sagas ran on it (the bucket holds their clock): it was deleted, and the sagas active then are lost; making it anew",
			"stream", messages.SagaLogStream)
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return fmt.Errorf("read %s: %w", messages.ClockKey, err)
	}
	return nil
}

// checkBucket says at error a bucket missing from a server whose saga log
// holds messages: sagas ran on it, and the bucket, deleted, took the
// ended sagas, the clock and the stored definitions with it (a
// coordinator makes it anew, and starts again from tick 0).
func (c *Coordinator) checkBucket(ctx context.Context) error {
	_, err := c.js.Stream(ctx, "KV_"+messages.SagaBucket)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	switch st, err := c.js.Stream(ctx, messages.SagaLogStream); {
	case err == nil && st.CachedInfo().State.LastSeq > 0:
		c.log.Error("the saga bucket is not on the server, though sagas ran on it (the saga log holds their states): it was deleted, and the ended sagas, the clock and the stored definitions are lost; making it anew",
			"bucket", messages.SagaBucket)
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s: %w", messages.SagaLogStream, err)
	}
	return nil
}

// termPause is the wait between the end of a term and the next, doubled
// for each term in a row that ended before it served, up to maxTermPause:
// a term that cannot set up or recover (a server out of storage, an
// account at its limits) reads the whole saga log each time, and would
// keep the server busy reading it twice a second. noJetStreamPause is
// the wait while the server, back, has no JetStream.
const (
	termPause    = 500 * time.Millisecond
	maxTermPause = 4 * time.Second
)

// termPauseAfter is the wait after the failed-th term in a row that
// ended before it served (1 for a term that served).
func termPauseAfter(failed int) time.Duration {
	return min(termPause<<min(max(failed-1, 0), 5), maxTermPause)
}

var noJetStreamPause = 5 * time.Second

// runTerm is one term of Run: setup, lease, recovery and loop.
func (c *Coordinator) runTerm(ctx context.Context) error {
	t := c.term.Load()
	defer close(t.stopped)
	if err := c.setup(ctx); err != nil {
		return err
	}
	c.state.Store(runStandby)
	standby, err := c.service("standby")
	if err != nil {
		return err
	}
	defer func() { _ = standby.Stop() }()
	l := c.newLease()
	if err := l.acquire(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	_ = standby.Stop()
	c.held = l
	if c.afterAcquire != nil {
		c.afterAcquire()
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
	began := time.Now()
	if err := c.storeDefinitions(ctx); err != nil {
		return err
	}
	if _, _, err := c.learnWire(ctx); err != nil {
		// Every role gets single commands until the next read.
		c.log.Warn("wire versions of the roles not read; sending single commands", "err", err)
	}
	c.log.Debug("definitions stored, wire versions read", "took", time.Since(began))
	if err := c.recover(ctx); err != nil {
		return err
	}
	c.noteSteps()
	first, err := c.openReplies(ctx)
	if err != nil {
		return err
	}
	// The requests' reads of the bucket end with the term, before its
	// lease is released: none answers for a term that is over.
	serving, stopServing := context.WithCancel(ctx)
	svc, err := c.serve(serving)
	if err != nil {
		stopServing()
		first.Stop()
		return err
	}
	defer func() {
		_ = svc.Stop()
		stopServing()
		c.reads.wait()
	}()
	pulling, stopPulling := context.WithCancel(ctx)
	var pullers sync.WaitGroup
	pullers.Go(func() { c.pullReplies(pulling, first) })
	pullers.Go(func() { c.followWire(pulling) })
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
	c.readyOnce.Do(func() { close(c.ready) })
	c.state.Store(runActive)
	if c.opts.Observer != nil {
		// The recovered sagas are in flight before any batch.
		c.opts.Observer.Committed(nil, nil, c.engine.Summary())
		c.observeBytes()
	}
	c.log.Info("coordinator running", "tick", c.engine.Tick(), "active", c.engine.Summary().Active)
	return c.loop(ctx, t.in)
}

func (c *Coordinator) setup(ctx context.Context) error {
	if _, err := c.js.AccountInfo(ctx); err != nil {
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("%w: %w", ErrNoJetStream, err)
		}
		return fmt.Errorf("jetstream: %w", err)
	}
	r := max(c.opts.Replicas, 1)
	// The lease and finished sagas expire with per-key TTLs; the marker
	// an expiry leaves for watchers lives a minute.
	kvCfg := jetstream.KeyValueConfig{Bucket: messages.SagaBucket, History: 1, Storage: jetstream.FileStorage,
		Replicas: r, LimitMarkerTTL: time.Minute}
	if err := c.checkBucket(ctx); err != nil {
		return err
	}
	kv, err := streams.EnsureKeyValue(ctx, c.js, kvCfg)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	if c.kv == nil {
		// Set once: goroutines of an earlier term may still read it.
		c.kv = kv
	}
	// Before any stream changes: a coordinator that may not run changes
	// nothing of the one that does.
	if err := c.checkDefinitions(ctx); err != nil {
		return err
	}
	commands, err := c.ensureCommandStream(ctx)
	if err != nil {
		return err
	}
	c.commands = commands
	cfgs := []jetstream.StreamConfig{
		{Name: messages.ReplyStream, Subjects: messages.ReplySubjects, Retention: jetstream.WorkQueuePolicy,
			Storage: jetstream.FileStorage, Replicas: r, Duplicates: 2 * time.Minute},
		{Name: messages.EventStream, Subjects: messages.EventLogSubjects, Storage: jetstream.FileStorage,
			Replicas: r, MaxAge: 24 * time.Hour, MaxMsgs: 1_000_000, Discard: jetstream.DiscardOld},
		{Name: messages.SagaLogStream, Subjects: []string{messages.SagaLogSubject}, Storage: jetstream.FileStorage,
			Replicas: r},
	}
	if err := c.checkSagaLog(ctx); err != nil {
		return err
	}
	for _, cfg := range cfgs {
		if _, err := c.ensureStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	_, err = c.js.CreateOrUpdateConsumer(ctx, messages.ReplyStream, jetstream.ConsumerConfig{
		Durable: messages.ReplyConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: c.opts.AckWait,
		MaxDeliver: -1, MaxAckPending: 65536,
	})
	if err != nil {
		return fmt.Errorf("reply consumer: %w", err)
	}
	return nil
}

// loop owns the engine: it applies inputs in batches and commits each batch.
func (c *Coordinator) loop(ctx context.Context, in <-chan input) error {
	var out saga.Outbox
	var dones []func(error)
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	// From the first: a recovered saga may wait out a retry's backoff,
	// with nothing else to come.
	c.setWake(wake)
	for {
		out.Reset()
		dones = dones[:0]
		select {
		case <-ctx.Done():
			c.markEnded()
			return nil
		case <-c.lost:
			if ctx.Err() != nil {
				return nil
			}
			return ErrLeaseLost
		case next := <-in:
			if d := next(time.Now(), &out); d != nil {
				dones = append(dones, d)
			}
		drain:
			for len(dones) < c.opts.MaxBatch {
				select {
				case next := <-in:
					if d := next(time.Now(), &out); d != nil {
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
		if err == nil {
			c.observeCommit(&out, time.Now())
			c.traceEvents(out.Events)
		}
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
		if c.sagas.due() {
			if err := c.compact(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		c.countActive()
		c.setWake(wake)
	}
}

// setWake sets wake for the next retry the engine waits for, or sooner
// when sagas stored ended are still to be marked so in the log: the next
// commit marks them, and with no input a wake makes one.
func (c *Coordinator) setWake(wake *time.Timer) {
	at, ok := c.engine.NextWake()
	if len(c.sagas.ended) > 0 {
		at, ok = minTime(at, ok, time.Now().Add(markEndedWithin)), true
	}
	if ok {
		wake.Reset(max(time.Until(at), 0))
	}
}

// commit stores the changed sagas and publishes the commands, a command
// only once its saga's change is stored; then it publishes the events. The
// commands of unranked sagas that are not stored (see durability.go) go
// out at once, beside the writes; those of ranked sagas go out after them,
// in the order the engine released them, which is rank order.
func (c *Coordinator) commit(ctx context.Context, out *saga.Outbox) error {
	if c.beforeCommit != nil {
		c.beforeCommit(out)
	}
	// A coordinator stalled past its lease (a pause of the process, a
	// machine that stood still) may have been replaced meanwhile: it
	// sends nothing before it knows the lease is still its own. Its
	// writes are guarded by their revisions, its commands are not.
	if err := c.held.check(ctx); err != nil {
		return err
	}
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
	c.publishEvents(out.Events)
	return nil
}

// logEvent logs a saga's status change: a failure, which needs an
// operator, as an error; a rollback, a business outcome a simulation has by
// the hundred thousand (floodsim at 100,000 households: 261,277 lines, 69
// MB of its log), and every other change at debug level. The event stream
// carries them all.
func (c *Coordinator) logEvent(ev *messages.Event) {
	switch saga.Status(ev.Status) {
	case saga.Failed:
		c.log.Error("saga failed", "saga_id", ev.SagaID, "saga", ev.Saga, "tick", ev.Tick, "reason", ev.Reason)
	case saga.Compensating:
		c.log.Debug("saga rolling back", "saga_id", ev.SagaID, "saga", ev.Saga, "tick", ev.Tick, "reason", ev.Reason)
	default:
		c.log.Debug("saga status", "saga_id", ev.SagaID, "saga", ev.Saga, "status", ev.Status, "tick", ev.Tick)
	}
}

// store writes each changed saga once, and the clock when it moved: the
// active sagas to the saga log, in as few messages as fit (sagalog.go),
// each saga that ended to the bucket, guarded by its revision there, all
// at once. commit has put the ids of changed in c.changed.
func (c *Coordinator) store(ctx context.Context, changed []*saga.Execution) error {
	type pending struct {
		x   *saga.Execution
		ack jetstream.PubAckFuture
		msg *nats.Msg
	}
	var ps []pending
	settled := 0
	tick, moves := c.engine.Tick(), c.engine.Tick() != c.saved
	if moves {
		changed = c.withBegun(changed)
	}
	settle := func(p pending) error {
		ack, err := wait(ctx, p.ack)
		if errors.Is(err, ErrConflict) && c.revs[p.x.ID] == 0 {
			ack, err = c.putOverMarker(ctx, p.msg, err)
		}
		if err != nil {
			return fmt.Errorf("store saga %s: %w", p.x.ID, err)
		}
		if p.x.Status == saga.Failed {
			c.revs[p.x.ID] = ack.Sequence
		} else {
			delete(c.revs, p.x.ID)
			c.latestEnded.add(p.x.Status, messages.SagaKey(p.x.ID), ack.Sequence)
		}
		c.sagas.drop(p.x.ID)
		c.sagas.ended = append(c.sagas.ended, p.x.ID)
		if len(c.resent) > 0 {
			delete(c.resent, p.x.ID)
		}
		if len(c.earlyReplies) > 0 {
			delete(c.earlyReplies, p.x.ID)
		}
		return nil
	}
	c.entries = c.entries[:0]
	for i := len(changed) - 1; i >= 0; i-- {
		x := changed[i]
		if !c.changed[x.ID] {
			continue // stored already: a saga may change twice in a batch
		}
		c.changed[x.ID] = false
		if moves && onlyBegan(x, tick, c.engine.TickRound(), c.sagas.logged(x.ID) || c.revs[x.ID] != 0) {
			c.begun[x.ID] = struct{}{}
			continue
		}
		delete(c.begun, x.ID)
		data, err := c.encodeSaga(x)
		if err != nil {
			return fmt.Errorf("encode saga %s: %w", x.ID, err)
		}
		if !x.Status.Terminal() {
			c.entries = append(c.entries, kvlog.Entry{Key: x.ID, Value: data})
			continue
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
		m := putMsg(messages.SagaKey(x.ID), data, c.revs[x.ID], ttl)
		m.Header.Set(messages.SagaStatusHeader, string(x.Status))
		m.Header.Set(messages.SagaTickHeader, strconv.FormatInt(lastTick(x), 10))
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("store saga %s: %w", x.ID, err)
		}
		ps = append(ps, pending{x, f, m})
	}
	var clock jetstream.PubAckFuture
	if moves {
		data, err := json.Marshal(storedClock{Tick: tick, Round: c.engine.TickRound()})
		if err != nil {
			return fmt.Errorf("encode clock: %w", err)
		}
		f, err := c.putAsync(messages.ClockKey, data, c.clock, 0)
		if err != nil {
			return err
		}
		clock = f
	}
	if err := c.writeLog(ctx, c.entries); err != nil {
		return err
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
		c.saved = tick
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

// encodeSaga encodes x to be stored, in the bucket or as an entry of the
// saga log. A state that would not fit one message (every part within
// its bound, the parts can add up to more under a small payload limit)
// sheds what the saga can do without ([saga.Execution.Shed]) until it
// fits, said at warn: a state that could not be stored would end every
// term, at every recovery.
func (c *Coordinator) encodeSaga(x *saga.Execution) ([]byte, error) {
	// A log entry's overhead (sagalog.go): a message's 32 bytes, an
	// entry's 22 and its key.
	room := c.dataRoom() - 32 - 22 - len(x.ID)
	for {
		data, err := c.encode(func(dst []byte) ([]byte, error) { return wirejson.AppendExecution(dst, x) })
		if err != nil || len(data) <= room {
			return data, err
		}
		if !x.Shed() {
			return nil, fmt.Errorf("state of %d bytes, room %d in a message, with nothing more to drop: %w", len(data), room, messages.ErrTooLarge)
		}
		c.log.Warn("saga state too large for a message: dropping what it can do without", "saga_id", x.ID, "saga", x.Saga,
			"bytes", len(data), "room", room, "history_dropped", x.HistoryDropped, "step_outputs", len(x.Results), "error_bytes", len(x.Error))
	}
}

// putAsync writes key guarded by rev, to expire after ttl when ttl > 0.
func (c *Coordinator) putAsync(key string, data []byte, rev uint64, ttl time.Duration) (jetstream.PubAckFuture, error) {
	f, err := c.js.PublishMsgAsync(putMsg(key, data, rev, ttl))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", key, err)
	}
	return f, nil
}

// putMsg is the message that writes key guarded by rev, to expire after
// ttl when ttl > 0.
func putMsg(key string, data []byte, rev uint64, ttl time.Duration) *nats.Msg {
	m := nats.NewMsg(messages.BucketSubject(key))
	m.Data = data
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	if ttl > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttl.String())
	}
	return m
}

// putOverMarker writes m, a saga's first write to the bucket, refused
// (with conflict) because its key was there already: when what is there
// is a marker (an operator deleted the key, or a value under it expired),
// no writer holds the key, and m is written again guarded by the marker.
// Anything else there is another writer's, and conflict is returned.
func (c *Coordinator) putOverMarker(ctx context.Context, m *nats.Msg, conflict error) (*jetstream.PubAck, error) {
	var marker uint64
	err := c.lastOf(ctx, []string{m.Subject}, func(last *jetstream.RawStreamMsg) {
		if deleted(last.Header) {
			marker = last.Sequence
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w (reading the key: %w)", conflict, err)
	}
	if marker == 0 {
		return nil, conflict
	}
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(marker, 10))
	ack, err := c.js.PublishMsg(ctx, m)
	if jserr.Conflict(err) {
		return nil, fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return ack, err
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

// sentCommand is a message of commands published and not yet known to be
// stored.
type sentCommand struct {
	cmd *messages.Command // its first command
	ack jetstream.PubAckFuture
	// done is set once the message is known to be stored.
	done bool
}

// maxInflight bounds the saga writes, and apart from them the command
// messages, that a commit has waiting for their acknowledgement at once:
// below the client's limit of asynchronous publishes in flight (4,000).
const maxInflight = 1024

// sendCommands publishes cmds into the command stream without waiting, in
// batches where their roles read them (wire.go), and appends the messages
// to sent. Commands carry no message id: a command sent again after a
// restart must reach its agent, whose barrier answers it (and two
// coordinators restored from one stored state number their commands alike).
func (c *Coordinator) sendCommands(ctx context.Context, cmds []*messages.Command, sent []sentCommand) ([]sentCommand, error) {
	maxBytes := c.dataRoom()
	wires := make([]wireCommand, 0, len(cmds))
	for _, cmd := range cmds {
		data, err := c.encode(func(dst []byte) ([]byte, error) { return wirejson.AppendCommand(dst, cmd) })
		if err != nil {
			return sent, fmt.Errorf("encode command: %w", err)
		}
		if len(data) > maxBytes {
			// The server would refuse it and end the batch: the saga's
			// step is left unsent, to time out.
			c.log.Error("command larger than the server's payload limit not sent; its step will time out",
				"saga_id", cmd.SagaID, "step", cmd.Step, "bytes", len(data), "limit", maxBytes)
			continue
		}
		role := c.engine.StepRole(saga.ID(cmd.SagaID), cmd.Step)
		limit, ordered := c.batchLimit(role)
		wires = append(wires, wireCommand{cmd: cmd, data: data, role: role, limit: limit, ordered: ordered})
	}
	var parts [][]byte
	for _, g := range groupCommands(wires, maxBytes) {
		if n := len(sent); n >= maxInflight && !sent[n-maxInflight].done {
			s := &sent[n-maxInflight]
			if _, err := wait(ctx, s.ack); err != nil {
				return sent, fmt.Errorf("publish command %s: %w", s.cmd.Subject(), err)
			}
			s.done = true
		}
		head := g[0].cmd
		m := &nats.Msg{Subject: head.Subject(), Data: g[0].data}
		if len(g) == 1 {
			c.traceCommand(head, m)
		} else {
			parts = parts[:0]
			for _, w := range g {
				parts = append(parts, w.data)
			}
			m.Data, _ = c.encode(func(dst []byte) ([]byte, error) { return wirejson.AppendCommandBatch(dst, parts), nil })
			m.Header = nats.Header{messages.BatchHeader: []string{strconv.Itoa(len(g))}}
		}
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return sent, fmt.Errorf("publish command: %w", err)
		}
		if o, ok := c.opts.Observer.(MessageObserver); ok {
			o.Sent(len(g))
		}
		sent = append(sent, sentCommand{cmd: head, ack: f})
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
	// coordinator, so the iterator stops at once on shutdown. A closed
	// connection stops the pulling; the term ends with its next write or
	// lease renewal, and Run returns.
	if err := pull.Loop(ctx, ctx, c.log, pull.Options{Closed: c.nc.IsClosed}, open, func(m jetstream.Msg) {
		if in := c.replyInput(m); in != nil {
			c.enqueue(ctx, in)
		}
	}); err != nil {
		c.log.Error("replies no longer pulled", "err", err)
	}
}

// replyInput returns the input that applies a reply of the reply stream,
// or nil when the reply is dropped as malformed. The reply is decoded
// here, on the goroutine that pulled it, and applied on the loop.
func (c *Coordinator) replyInput(m jetstream.Msg) input {
	r, err := wirejson.DecodeReply(m.Data())
	if err == nil {
		err = c.checkAnswer(m.Data())
	}
	if err != nil {
		c.log.Error("dropping malformed reply", "subject", messages.Clip(m.Subject()), "err", err)
		if !messages.ValidToken(r.SagaID) || m.Subject() != r.Subject() {
			_ = m.Term()
			return nil
		}
		// It names its saga, step and seq, on its step's subject: the
		// command in flight there, when it is that one, is answered.
		return func(now time.Time, out *saga.Outbox) func(error) {
			c.settleEarly(m, r.SagaID)
			if cmd, ok := c.engine.Command(r.SagaID); ok && cmd.Saga == r.Saga && cmd.Step == r.Step && cmd.Seq == r.Seq &&
				errors.Is(c.answerMalformed(cmd, err, now, out), saga.ErrEarly) {
				return c.holdEarly(m, &r, now)
			}
			return func(err error) {
				if err == nil {
					_ = m.Term()
				}
			}
		}
	}
	if m.Subject() != r.Subject() {
		// Its subject names the role it came from (permissions), and
		// that role does not own the step it names: refused, and counted
		// so.
		c.refused.Add(1)
		c.log.Error("dropping reply on the wrong subject", "subject", messages.Clip(m.Subject()), "saga_id", r.SagaID)
		_ = m.Term()
		return nil
	}
	return func(now time.Time, out *saga.Outbox) func(error) {
		c.settleEarly(m, r.SagaID)
		// Permissions let a role publish only the reply subjects of its
		// own steps, so the subject names the role a reply came from.
		if why := c.forged(&r); why != "" {
			c.refuse("reply", c.subjectRole(r.SagaID, r.Saga, r.Step), slog.LevelWarn, "saga_id", r.SagaID, "saga", r.Saga, "step", r.Step,
				"action", r.Action, "seq", r.Seq, "attempt", r.Attempt, "why", why)
			_ = m.Term()
			return nil
		}
		if owner := c.otherRole(&r); owner != "" {
			// An agent that serves another role's step by mistake, and
			// says so: refused as its records are, and the command sent
			// again for the step's own role.
			c.refuse("reply", c.subjectRole(r.SagaID, r.Saga, r.Step), slog.LevelWarn, "saga_id", r.SagaID, "saga", r.Saga, "step", r.Step,
				"action", r.Action, "seq", r.Seq, "claimed_role", r.Role, "why", "the step belongs to role "+owner)
			if cmd, ok := c.engine.Command(r.SagaID); ok && cmd.Step == r.Step && cmd.Seq == r.Seq {
				c.sendAgain(cmd, r.Role, owner)
			}
			_ = m.Term()
			return nil
		}
		// A reply's effect is always stored (see durability.go).
		err := c.applyAnswer(r, now, out)
		switch {
		case errors.Is(err, saga.ErrEarly):
			c.log.Debug("early reply held back", "saga_id", r.SagaID, "step", r.Step, "err", err)
			return c.holdEarly(m, &r, now)
		case errors.Is(err, saga.ErrStale):
			c.log.Debug("stale reply ignored", "saga_id", r.SagaID, "step", r.Step, "attempt", r.Attempt, "err", err)
		case errors.Is(err, saga.ErrUnknownSaga):
			// The usual case: a late answer for a saga that ended (timed
			// out, say), which the coordinator no longer holds. After a
			// restart there may be thousands: said at info once a minute,
			// the others at debug.
			args := []any{"saga_id", r.SagaID, "step", r.Step, "action", r.Action}
			if !c.warns.Log(slog.LevelInfo, ignoredReply, ignoredReply, args...) {
				c.log.Debug(ignoredReply, args...)
			}
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

// otherRole returns the role owning r's step when r names another role
// as its agent's; "" when r names none, or the owner, or its step is
// unknown.
func (c *Coordinator) otherRole(r *messages.Reply) string {
	if r.Role == "" {
		return ""
	}
	if owner := c.roleOf(r.SagaID, r.Saga, r.Step); owner != r.Role {
		return owner
	}
	return ""
}

// ignoredReply is the log message of a reply for a saga the coordinator
// does not hold.
const ignoredReply = "reply ignored: its saga is not active (it ended, or never started)"

// headerRoom is the room left in a message the coordinator publishes for
// its headers, which the server's payload limit counts with its data:
// natsaga's own (a batch's count, an expected sequence) and a trace's
// (traceparent, and tracestate of at most 512 characters).
const headerRoom = 1 << 10

// dataRoom is the most bytes of data a message the coordinator publishes
// may take: the server's payload limit less headerRoom, and at most
// messages.MaxPayload, which agents read. A batch filled to the limit
// without its headers was refused, ending the term, again at every
// recovery.
func (c *Coordinator) dataRoom() int {
	return int(min(c.nc.MaxPayload()-headerRoom, messages.MaxPayload))
}

// checkAnswer returns an error wrapping messages.ErrTooLarge when an
// answer (a reply or a record) is more than an eighth of the server's
// payload limit, and one wrapping messages.ErrBadRequest when it is not
// UTF-8. With a start's context held to a quarter, the state of a saga
// whose answers are each within the limit still fits one message, so it
// can always be stored.
func (c *Coordinator) checkAnswer(data []byte) error {
	if limit := c.nc.MaxPayload() / 8; int64(len(data)) > limit {
		return fmt.Errorf("answer of %d bytes, limit %d (an eighth of the server's payload limit): %w", len(data), limit, messages.ErrTooLarge)
	}
	return messages.CheckUTF8(data)
}

// forged says why r cannot be an answer of the role owning its step to a
// command the coordinator sent ("" when it can): its saga holds no such
// step, or it names a command not yet sent, or the action of another. An
// answer to an earlier command is only stale, not forged.
func (c *Coordinator) forged(r *messages.Reply) string {
	cmd, ok := c.engine.Command(r.SagaID)
	if !ok {
		return ""
	}
	if r.Saga != cmd.Saga {
		return "saga " + r.Saga + ", the saga is a " + cmd.Saga
	}
	if c.roleOf(r.SagaID, r.Saga, r.Step) == "" {
		return "no step " + r.Step + " in saga " + r.Saga
	}
	if r.Step != cmd.Step {
		return ""
	}
	switch {
	case r.Seq > cmd.Seq:
		return fmt.Sprintf("seq %d, command in flight has seq %d", r.Seq, cmd.Seq)
	case r.Seq == cmd.Seq && r.Action != cmd.Action:
		return fmt.Sprintf("action %s, command in flight is a %s", r.Action, cmd.Action)
	case r.Seq == cmd.Seq && r.Attempt > cmd.Attempt:
		return fmt.Sprintf("attempt %d, command in flight is attempt %d", r.Attempt, cmd.Attempt)
	}
	return ""
}
