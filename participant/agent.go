package participant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.opentelemetry.io/otel/trace"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/internal/jserr"
	"github.com/natsaga/natsaga/internal/pull"
	"github.com/natsaga/natsaga/internal/tracing"
	"github.com/natsaga/natsaga/internal/warnings"
	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/messages"
)

// Options configures an [Agent]. Role and Steps are required.
type Options struct {
	// Role is the agent role, for example "government": the role the saga
	// definitions name for the steps it serves. Its state lives in the
	// role's state stream, its barrier records in the role's record
	// stream, where the coordinator reads them as the agent's answers.
	Role  string
	Steps []agent.Step
	// Name identifies this process in logs and statistics. Empty means
	// "<role>-<pid>-<random>".
	Name string
	// Concurrency is how many commands are handled at once. 0 means
	// [DefaultConcurrency].
	// A command whose result the barrier recorded is acknowledged at once:
	// the record is its answer. One answered by a reply (a duplicate, a
	// refusal, a transient error) is acknowledged once the reply is
	// stored, which the agent does not wait for: up to four times
	// Concurrency such commands may be waiting for that, unacknowledged,
	// besides.
	Concurrency int
	// AckWait is how long a command stays with an agent that neither
	// answers nor renews it before JetStream delivers it again, to
	// another copy if one runs. 0 means 5s. It is a setting of the role's
	// consumer, which every copy shares: the copy started last sets it,
	// with a warning in its log when it changes it.
	AckWait time.Duration
	// Replicas is the number of copies of the role's state and record
	// streams when the agent creates them. 0 means 1.
	Replicas int
	// MaxRecordValues bounds the barrier records the agent holds in
	// memory, of the role's record log it reads and follows: beyond it,
	// the records written first are let go, and one is read again from
	// the server when a command needs it (a duplicate, a compensation).
	// 0 means 262,144 (a few tens of MiB).
	MaxRecordValues int
	// Serial makes the role apply its commands one at a time, in the order
	// they were published, across every copy, crash and redelivery. Set it
	// for a role whose state is one key every saga touches (a budget): it
	// is serial anyway, and a coordinator that releases ranked commands in
	// rank order then has them applied in rank order. Set it too for any
	// role where two commands of one tick may touch the same key and their
	// order changes an outcome (a limit checked, then counted): without it,
	// a simulation run is reproducible only when the role's commands
	// commute (docs/simulation.md).
	//
	// How: the role's durable consumer pins one copy at a time (a priority
	// group with the pinned-client policy, [messages.SerialGroup]); the
	// pinned copy runs its commands in delivery order on one worker, and
	// a command that meets a transient failure is tried again in place,
	// never put back behind the ones after it. The copy keeps the state it
	// read or wrote, and reads it again only when another copy may have
	// written it since: when it is pinned anew, or when it meets a command
	// another copy has answered. It commits a run of the executes it holds
	// together (see the package doc). Concurrency does not apply. A serial
	// role must not hold commands for simulation time (Step.Duration).
	Serial bool
	// SkipCopiesCheck skips the check, as the agent starts and once
	// after, that no copy of its role speaks another wire version
	// ([ErrOtherVersion]) or runs serial otherwise ([ErrOtherSerial]).
	// The check believes every agent's micro INFO answer, and every
	// agent's user may answer one (it serves discovery): set it when a
	// forged answer keeps a role's copies from starting, after making
	// sure every copy runs one build.
	SkipCopiesCheck bool
	// Init, when set, runs once the store is open, before any command is
	// handled; it typically seeds state with Init ([Store.Init]).
	Init func(ctx context.Context, s agent.Seeder) error
	// Logger receives the agent's logs. nil discards them.
	Logger *slog.Logger
	// TracerProvider, when set, makes a span of each command's handling,
	// a child of the span context the command's headers carry; handlers
	// get it in their ctx, and replies carry it. nil makes none.
	TracerProvider trace.TracerProvider
	// Metadata is announced in the agent's micro service's metadata,
	// beside the "role", "copy", "pid" and "serial" the agent sets, which it may not
	// name ([Agent.Metadata]). natsaga's programs put there, under
	// "metrics", the address they serve metrics and health on.
	Metadata map[string]string
}

// Validate returns an error wrapping [messages.ErrBadRequest] when o is
// unusable: a bad role or name, no steps, a step with a bad token, the
// reserved name "compensate" or no handler, the same step twice, a Serial role with a step that has a
// Duration, metadata under a key the agent sets itself, a concurrency over
// [MaxConcurrency], or a negative concurrency, ack wait, replicas or
// record values.
func (o *Options) Validate() error {
	var errs []error
	errs = append(errs, messages.CheckToken("role", o.Role))
	if o.Name != "" {
		errs = append(errs, messages.CheckToken("agent", o.Name))
	}
	if len(o.Steps) == 0 {
		errs = append(errs, fmt.Errorf("no steps: %w", messages.ErrBadRequest))
	}
	for _, k := range ownMetadata {
		if _, ok := o.Metadata[k]; ok {
			errs = append(errs, fmt.Errorf("metadata %q is the agent's own: %w", k, messages.ErrBadRequest))
		}
	}
	seen := map[string]bool{}
	for _, s := range o.Steps {
		errs = append(errs, messages.CheckToken("saga", s.Saga), messages.CheckToken("step", s.Name))
		if s.Name == messages.CompensateToken {
			// No definition has it: its compensation's subject would end
			// in the execute's of another step.
			errs = append(errs, fmt.Errorf("step %s.%s: the name is reserved: %w", s.Saga, s.Name, messages.ErrBadRequest))
		}
		if err := s.Handler.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("step %s.%s: %w", s.Saga, s.Name, err))
		}
		if seen[s.Saga+"."+s.Name] {
			errs = append(errs, fmt.Errorf("step %s.%s twice: %w", s.Saga, s.Name, messages.ErrBadRequest))
		}
		seen[s.Saga+"."+s.Name] = true
	}
	for _, s := range o.Steps {
		if o.Serial && s.Duration != nil {
			errs = append(errs, fmt.Errorf("step %s.%s: its Duration holds commands for simulation time, which a Serial role, "+
				"applying its commands one at a time in order, cannot: drop Serial or the step's Duration: %w", s.Saga, s.Name, messages.ErrBadRequest))
		}
	}
	if o.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("concurrency %d: at most %d: %w", o.Concurrency, MaxConcurrency, messages.ErrBadRequest))
	}
	if o.Concurrency < 0 || o.AckWait < 0 || o.Replicas < 0 || o.MaxRecordValues < 0 {
		errs = append(errs, fmt.Errorf("negative concurrency, ack wait, replicas or record values: %w", messages.ErrBadRequest))
	}
	return errors.Join(errs...)
}

// Agent serves one role's steps: it pulls their commands from the shared
// durable consumer of the role, runs them through the role's [Store], and
// publishes the replies. Several Agent processes of one role share the work;
// each command is handled by one of them at a time.
type Agent struct {
	// ran is set by the first Run.
	ran   atomic.Bool
	nc    *nats.Conn
	js    jetstream.JetStream
	opts  Options
	log   *slog.Logger
	steps map[stepKey]*agent.Step
	store *Store
	// replies carries the replies published asynchronously, in order, to
	// the goroutine that acknowledges their commands once they are stored;
	// each serving after the first makes its own (runOnce).
	replies chan pendingReply

	tick atomic.Int64
	// warns says a bad or an ignored tick, and a command of a step this
	// copy does not serve, at most once a minute each: anyone who may
	// publish on natsaga.tick, or a role rolling over to a new step, could
	// otherwise fill the agent's log.
	warns *warnings.Limiter
	// pin is the pin id of the last command a serial copy took; only its
	// one worker (serialWork) touches it.
	pin string
	// batch bounds the commands a serial copy runs together: maxBatch,
	// or 1 to run each alone (the benchmark's comparison).
	batch int
	mu    sync.Mutex
	held  []*heldJob // commands waiting for simulation time
	// letHeldGo is set once the agent stops: a command it would hold is
	// left for another copy instead (runHeld).
	letHeldGo bool
	// inHand holds the messages taken in and not yet settled (wire.go).
	inHand map[*wireBatch]struct{}
	wake   chan struct{}

	handled, executed, compensated, duplicates, refused, redelivered, rejected, batches, batched, messages atomic.Int64
	// serving is true while Run pulls commands; pulling holds, while
	// serving, why the role's consumer does not pull now (nil: it does).
	serving atomic.Bool
	pulling atomic.Pointer[error]
	// saidKeptAcked: a serial copy has said the command stream stores
	// commands acknowledged already (serial.go, keptAcked).
	saidKeptAcked atomic.Bool
	// fence is the wait a serial copy pinned anew last said, the first
	// command it waits for and its own (serial.go, nothingBefore): said
	// at info once, and at debug at each look after. The serial worker's.
	fence [2]uint64
	// served is set once Run has served, by its goroutine.
	served bool
	// opened is the store once Run has opened it, for other goroutines
	// (see Store).
	opened atomic.Pointer[Store]
	// calls are the handler calls running (slow.go).
	calls *calls
}

// stepKey finds a step without building a string per command.
type stepKey struct{ saga, step string }

// pendingReply is a reply being stored, and the command it answers.
type pendingReply struct {
	stored jetstream.PubAckFuture
	msg    jetstream.Msg
	cmd    *messages.Command
}

type heldJob struct {
	due int64
	cmd messages.Command
	msg jetstream.Msg
}

// New returns an agent on nc. It returns an error when opts do not validate.
func New(nc *nats.Conn, opts Options) (*Agent, error) {
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("agent options: %w", err)
	}
	if nc == nil {
		return nil, errors.New("agent: no NATS connection (nil)")
	}
	if opts.Name == "" {
		opts.Name = fmt.Sprintf("%s-%d-%s", opts.Role, os.Getpid(), nuid.Next()[:6])
	}
	if opts.Concurrency == 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.AckWait == 0 {
		opts.AckWait = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{nc: nc, js: js, opts: opts, log: log.With("agent", opts.Name, "role", opts.Role),
		steps: map[stepKey]*agent.Step{}, inHand: map[*wireBatch]struct{}{}, wake: make(chan struct{}, 1), batch: maxBatch, replies: make(chan pendingReply, 4*opts.Concurrency)}
	a.warns = warnings.New(a.log, time.Minute)
	// Its workers, and as many commands held for simulation time.
	a.calls = newCalls(2*opts.Concurrency + 1)
	for _, s := range opts.Steps {
		s.Handler = a.watched(s.Handler)
		a.steps[stepKey{s.Saga, s.Name}] = &s
	}
	return a, nil
}

// DefaultConcurrency is the commands an agent handles at once unless told
// otherwise. A command spends most of its time waiting for the store's
// round trips, so a copy handling fewer leaves its core idle: floodsim's
// households made a 10,000-household run take 45 s at 16, 35 s at 64 and
// 36 s at 256 (BENCHMARKS.md).
const DefaultConcurrency = 64

// MaxConcurrency bounds Options.Concurrency: each command in hand holds a
// goroutine and buffers sized by it, and past a few thousand a copy only
// queues on its two cores' worth of server round trips.
const MaxConcurrency = 4096

// maxAckPending is the consumer's max_ack_pending.
const maxAckPending = 8192

// consumerConfig is the role's durable consumer on the command stream.
// Every copy of the role creates it the same.
func (a *Agent) consumerConfig() jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:        messages.CommandConsumer(a.opts.Role),
		FilterSubjects: a.Subjects(),
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        a.opts.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
		// The coordinator may send this role's commands in batches.
		Metadata: map[string]string{messages.WireMetadata: strconv.Itoa(messages.BatchVersion)},
	}
	if a.opts.Serial {
		// One copy at a time gets the commands; another is pinned when
		// the pinned one has not pulled for an ack wait.
		c.PriorityPolicy = jetstream.PriorityPolicyPinned
		c.PriorityGroups = []string{messages.SerialGroup}
		c.PinnedTTL = a.opts.AckWait
	}
	return c
}

// narrowed returns the subjects the consumer configured as was took and
// now does not.
func narrowed(was, now jetstream.ConsumerConfig) []string {
	var dropped []string
	for _, subj := range append([]string{was.FilterSubject}, was.FilterSubjects...) {
		if subj != "" && !slices.Contains(now.FilterSubjects, subj) {
			dropped = append(dropped, subj)
		}
	}
	return dropped
}

// deliverSkipped has the role's consumer, whose filter this copy has just
// widened from was to now, deliver again every command stored on a subject
// it added. The consumer passed over those while its filter left them out
// (a step no running copy served, such as a step a newly registered
// definition gave the role), and a consumer never goes back by itself.
// It resets the consumer to the stream's first message: in a work queue
// every message still stored is unanswered (but for one a killed server
// kept after its acknowledgement: see nothingBefore), so the commands in
// flight with other copies, and any such, come again too, and the
// barrier answers those from their records.
func (a *Agent) deliverSkipped(ctx context.Context, was, now jetstream.ConsumerConfig) error {
	had := map[string]bool{was.FilterSubject: true}
	for _, subj := range was.FilterSubjects {
		had[subj] = true
	}
	var added []string
	for _, subj := range now.FilterSubjects {
		if !had[subj] {
			added = append(added, subj)
		}
	}
	if len(added) == 0 {
		return nil // the usual case: a copy like the others, or a reopen
	}
	st, err := a.js.Stream(ctx, messages.CommandStream)
	if err != nil {
		return err
	}
	var waiting, first uint64
	for _, subj := range added {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return err
		}
		for _, n := range info.State.Subjects {
			waiting += n
		}
		first = info.State.FirstSeq
	}
	if waiting == 0 {
		return nil
	}
	a.log.Info("commands stored before this role's consumer asked for their steps: delivering them again",
		"commands", waiting, "from_seq", first)
	_, err = a.js.ResetConsumerToSequence(ctx, messages.CommandStream, now.Durable, first)
	return err
}

// serialPull are the options of a serial copy's pull: short pulls with
// frequent heartbeats notice a restarted server within seconds rather
// than the client's default 30; they name the role's group, and bring a
// batch's worth. A serial copy takes in every message the moment it
// arrives (see Run), so none waits unkept in the pull's buffer.
func serialPull() []jetstream.PullMessagesOpt {
	return []jetstream.PullMessagesOpt{jetstream.PullMaxMessages(maxBatch), jetstream.PullExpiry(4 * time.Second),
		jetstream.PullHeartbeat(time.Second), jetstream.PullPriorityGroup(messages.SerialGroup)}
}

// Name is the agent's name.
func (a *Agent) Name() string { return a.opts.Name }

// Store returns the agent's state store once Run has opened it, and nil
// before. It is safe to call from any goroutine while Run runs, for
// example to read state for metrics.
func (a *Agent) Store() *Store { return a.opened.Load() }

// Stats returns the agent's counters.
func (a *Agent) Stats() messages.AgentStats {
	st := messages.AgentStats{
		V: messages.Version, Role: a.opts.Role, Agent: a.opts.Name, PID: os.Getpid(),
		Handled: a.handled.Load(), Messages: a.messages.Load(), Executed: a.executed.Load(), Compensated: a.compensated.Load(),
		Duplicates: a.duplicates.Load(), Refused: a.refused.Load(), Redelivered: a.redelivered.Load(),
		Rejected: a.rejected.Load(), Batches: a.batches.Load(), Batched: a.batched.Load(),
	}
	if s := a.opened.Load(); s != nil {
		st.RecordMessages, st.Records = s.Written()
		st.Conflicts = s.Conflicts()
	}
	return st
}

// Subjects are the command subjects the agent consumes.
func (a *Agent) Subjects() []string {
	var subs []string
	for _, s := range a.opts.Steps {
		subs = append(subs, messages.ExecuteSubject(s.Saga, s.Name), messages.CompensateSubject(s.Saga, s.Name))
	}
	return subs
}

// Run serves commands until ctx is cancelled, then stops pulling, finishes
// the commands in hand and returns nil. Commands held for simulation time
// are left unacknowledged, for another copy or a restart.
//
// A set-up that fails for a while only (JetStream timing out or answering
// "temporarily unavailable", as a cluster does while it elects its
// leaders, or the connection down) is logged and tried again, at growing
// intervals up to 8 s. Run returns an error when it cannot set
// up its store, consumer or subscriptions for another reason (no
// JetStream, a consumer the server refuses, Options.Init failing, the
// connection closed), unless ctx was cancelled meanwhile; before anything,
// it returns an error wrapping [ErrOtherVersion] while copies of its role
// that announce another wire version run. Serving, it
// returns an error wrapping nats.ErrConnectionClosed when its connection
// closes for good (its reconnects ran out), leaving the commands in hand
// to be delivered again. A serving whose role's state or record stream is
// gone from the server (deleted, or the server back with an empty store)
// ends the same way, and Run sets up again, which makes them anew. The
// handlers' context ends one ack wait after ctx; a handler still running
// one ack wait after that is left behind, and Run returns
// [ErrHandlerStuck]. An Agent runs once: a second Run returns
// [ErrRanBefore] at once.
func (a *Agent) Run(ctx context.Context) error {
	if !a.ran.CompareAndSwap(false, true) {
		return ErrRanBefore
	}
	watch, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	go a.watchCalls(watch)
	pause := setupPause
	for {
		err := a.runOnce(ctx)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil && errors.Is(err, context.Canceled):
			return nil
		case ctx.Err() != nil || !temporary(err) || a.nc.IsClosed():
			return err
		}
		a.log.Warn("agent set-up failed for now; trying again", "err", err, "in", pause)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, maxSetupPause)
	}
}

// ErrRanBefore is returned by a second [Agent.Run]: an agent runs once;
// make another with [New].
var ErrRanBefore = errors.New("agent: Run was called before (make a new agent to run again)")

// setupPause is the first wait before Run tries a failed set-up again;
// maxSetupPause is the longest.
const (
	setupPause    = 250 * time.Millisecond
	maxSetupPause = 8 * time.Second
)

// temporary reports whether err is one that passes by itself: JetStream
// timing out, or answering that its cluster cannot serve the request yet
// (while it elects its leaders, or a stream or consumer is offline during
// a restart), no responders yet, or a connection reconnecting, or a
// stream not found: set-up makes the role's streams before it opens them,
// and a cluster may not know one it has just made on every node yet (seen
// in the compose demo: an agent stopped, where the next try served). A
// refusal (a configuration the server cannot serve, such as replicas on a
// single server, no JetStream, a permission the server denies at once) is
// not.
func temporary(err error) bool {
	if errors.Is(err, ErrNoJetStream) {
		return false
	}
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return !jserr.Refused(err)
	}
	for _, tmp := range []error{context.DeadlineExceeded, nats.ErrTimeout, nats.ErrNoResponders,
		nats.ErrDisconnected, nats.ErrConnectionReconnecting} {
		if errors.Is(err, tmp) {
			return true
		}
	}
	return false
}

// runOnce is Run, but for the error of a set-up cancelled by ctx.
func (a *Agent) runOnce(ctx context.Context) error {
	// Before anything of the role is made: the record stream this copy
	// creates is what tells a coordinator that the role speaks version 3.
	if a.opts.SkipCopiesCheck {
		a.log.Warn("the check of the role's copies is skipped: every copy must run one build, serial alike")
	} else if err := a.checkCopies(ctx); err != nil {
		return err
	}
	store, err := OpenStore(ctx, a.nc, a.opts.Role, true, a.opts.Replicas)
	if err != nil {
		return err
	}
	store.maxRecordValues = a.opts.MaxRecordValues
	store.logger = a.log
	store.exclusive = a.opts.Serial
	defer store.Close()
	// The role's records are read before the first command: a copy that
	// cannot read them fails now.
	if _, err := store.records(ctx); err != nil {
		return err
	}
	a.store = store
	a.opened.Store(store)
	if a.opts.Init != nil {
		if err := a.opts.Init(ctx, store); err != nil {
			return fmt.Errorf("agent init: %w", err)
		}
	}
	if _, err := a.js.Stream(ctx, messages.CommandStream); errors.Is(err, jetstream.ErrStreamNotFound) {
		a.log.Info("waiting for a coordinator to create the command stream", "stream", messages.CommandStream)
	}
	commands, err := waitStream(ctx, a.js, messages.CommandStream)
	if err != nil {
		return fmt.Errorf("agent: waiting for the coordinator's streams: %w", err)
	}
	a.warnUnknownSteps(commands.CachedInfo().Config.Subjects)
	// in takes the messages pulled to the workers (intake.go).
	var in intake
	// The consumer is created here, so that an agent that cannot have it
	// fails at once, and again by the pull loop whenever it was lost.
	open := func(ctx context.Context) (jetstream.MessagesContext, error) { return a.pullCommands(ctx, &in) }
	tickSub, err := a.nc.Subscribe(messages.TickSubject, a.onTick)
	if err != nil {
		return fmt.Errorf("agent ticks: %w", err)
	}
	defer tickSub.Unsubscribe()
	// The clock as the coordinator holds it now: a copy started mid-run
	// has missed the ticks sent before it subscribed, and its held
	// commands would otherwise wait for the next tick a driver sends.
	learnt := make(chan struct{})
	defer func() { <-learnt }()
	learnCtx, stopLearning := context.WithCancel(ctx)
	defer stopLearning()
	go func() {
		defer close(learnt)
		a.learnTick(learnCtx)
	}()
	first, err := open(ctx)
	if err != nil {
		return err
	}
	// Announced only now: a driver that waits for the agents by their
	// micro services (floodsim's -expect-agents) starts once each copy
	// pulls, not while one is still creating its consumer, which a cluster
	// electing its leaders can hold up for seconds, and which may fail.
	svc, err := a.serve()
	if err != nil {
		first.Stop()
		return err
	}
	defer func() { _ = svc.Stop() }()
	a.serving.Store(true)
	defer a.serving.Store(false)

	// The steps by name, as the definitions name them: a step misnamed
	// in one or the other shows here, not only as commands that wait.
	steps := make([]string, len(a.opts.Steps))
	for i, st := range a.opts.Steps {
		steps[i] = st.Saga + "." + st.Name
	}
	a.log.Info("agent serving", "subjects", len(a.Subjects()), "steps", strings.Join(steps, " "))
	if p := a.nc.MaxPayload(); p < minPayload {
		a.log.Warn("the server's payload limit leaves little room for a step's output: natsaga wants 64 KiB or more",
			"max_payload", p, "most_output_bytes", messages.MaxOutputFor(p))
	}

	if a.served {
		// A serving after one that ended (its store lost) starts afresh:
		// what the one before held comes back from the server after its
		// ack wait.
		a.replies = make(chan pendingReply, 4*a.opts.Concurrency)
		a.mu.Lock()
		a.held, a.inHand = nil, map[*wireBatch]struct{}{}
		a.mu.Unlock()
		a.pin = ""
	}
	a.served = true

	// ctx ends too when the connection closes for good, or the role's
	// streams are gone (stopServing).
	ctx, stopServing := context.WithCancelCause(ctx)
	defer stopServing(nil)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.watchStore(ctx, store, stopServing)
	}()
	rechecked := make(chan struct{})
	defer func() {
		stopServing(nil) // ends the recheck's wait, on every way out
		<-rechecked
	}()
	go func() {
		defer close(rechecked)
		if !a.opts.SkipCopiesCheck {
			a.recheckCopies(ctx, stopServing)
		}
	}()
	// Commands in hand are finished after ctx ends, within a grace of one
	// ack wait: past it, JetStream would redeliver them anyway.
	inHand, abandon := context.WithCancel(context.WithoutCancel(ctx))
	defer abandon()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(a.opts.AckWait, abandon) })
	defer stopGrace()
	kept := make(chan struct{})
	go func() {
		defer close(kept)
		a.keepInHandUntil(inHand)
	}()
	defer func() {
		abandon()
		<-kept
	}()

	acked := make(chan struct{})
	go func() {
		defer close(acked)
		a.ackStored(inHand)
	}()
	var wg sync.WaitGroup
	if a.opts.Serial {
		in = a.serialIntake(inHand, &wg)
	} else {
		in = a.sharedIntake(inHand, &wg)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.runHeld(ctx, inHand)
	}()
	// On shutdown the pull loop drains what was pulled, or, with the
	// server gone, stops at once: what it held comes back to another copy
	// after its ack wait.
	opened := false
	defer a.pulling.Store(nil)
	health := func(err error) {
		if err == nil {
			a.pulling.Store(nil)
		} else {
			a.pulling.Store(&err)
		}
	}
	err = pull.Loop(ctx, inHand, a.log, pull.Options{Closed: a.nc.IsClosed, Connected: a.nc.IsConnected, Health: health}, func(ctx context.Context) (jetstream.MessagesContext, error) {
		if !opened {
			opened = true
			return first, nil
		}
		return open(ctx)
	}, in.take)
	if err != nil {
		// The connection's reconnects ran out: nothing in hand can be
		// answered or acknowledged any more, and a program started again
		// connects anew.
		stopServing(nil)
		abandon()
	}
	in.done()
	if stuck := a.waitWorkers(&wg, inHand); stuck != nil {
		// A handler that ignores its context's end would hold the agent
		// for ever. Run stops without it, and leaves its replies open, so
		// that it may still end without harm: its command comes back to
		// a copy after its ack wait, and the barrier answers it.
		stopServing(nil)
		<-watched
		a.log.Error("a handler did not return when its context ended: stopping without it; its command is delivered again", "err", stuck)
		return fmt.Errorf("agent: %w", stuck)
	}
	close(a.replies)
	<-acked
	stopServing(nil)
	<-watched
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errStoreLost):
		return fmt.Errorf("agent: %w", cause) // Run sets up again
	case errors.Is(cause, ErrOtherSerial):
		return cause
	}
	a.log.Info("agent stopped", "handled", a.handled.Load())
	return nil
}

// ErrHandlerStuck is returned by [Agent.Run] when a handler has not
// returned one ack wait after its context ended (one ack wait after the
// context given to Run ended): a handler must return once its context
// ends.
var ErrHandlerStuck = errors.New("a handler did not return when its context ended")

// waitWorkers waits until the workers on wg are done, and returns
// ErrHandlerStuck when they are not one ack wait after inHand, their
// context, ended.
func (a *Agent) waitWorkers(wg *sync.WaitGroup, inHand context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		wg.Wait()
	}()
	select {
	case <-done:
		return nil
	case <-inHand.Done():
	}
	select {
	case <-done:
		return nil
	case <-time.After(a.opts.AckWait):
		return fmt.Errorf("%w: still running %s after it", ErrHandlerStuck, a.opts.AckWait)
	}
}

// errStoreLost ends a serving whose role's state or record stream is gone
// from the server (deleted, or a server back with an empty store): Run
// then sets the agent up again, which makes them anew. It wraps
// [jetstream.ErrStreamNotFound], so that Run takes it as passing.
var errStoreLost = fmt.Errorf("the role's store is gone from the server: %w", jetstream.ErrStreamNotFound)

// storeCheck spaces watchStore's looks at the role's streams.
var storeCheck = 5 * time.Second

// watchStore looks for the role's streams every storeCheck until ctx
// ends, and ends the serving (lost, with [errStoreLost]) once one is
// missing two looks in a row: a cluster that has just made a stream may
// not know it on every node yet.
func (a *Agent) watchStore(ctx context.Context, store *Store, lost context.CancelCauseFunc) {
	t := time.NewTicker(storeCheck)
	defer t.Stop()
	missed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gone := store.gone(ctx)
		if gone == nil {
			missed = 0
			continue
		}
		if missed++; missed == 2 {
			a.log.Warn("the role's store is gone from the server: setting the agent up again, which makes it anew", "err", gone)
			lost(fmt.Errorf("%w (%w)", errStoreLost, gone))
			return
		}
	}
}

// pullCommands creates or updates the role's consumer and pulls from it:
// one message at a time for a serial copy, and for a shared one as in
// has room.
func (a *Agent) pullCommands(ctx context.Context, in *intake) (jetstream.MessagesContext, error) {
	cfg := a.consumerConfig()
	before, err := a.js.Consumer(ctx, messages.CommandStream, cfg.Durable)
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("agent consumer: %w", err)
	}
	cons, err := a.js.CreateOrUpdateConsumer(ctx, messages.CommandStream, cfg)
	if err != nil {
		return nil, fmt.Errorf("agent consumer: %w", a.overlap(ctx, cfg, err))
	}
	if before != nil {
		if was := before.CachedInfo().Config.AckWait; was != cfg.AckWait {
			a.log.Warn("this copy changes the ack wait of the role's consumer, which every copy shares",
				"consumer", cfg.Durable, "was", was, "now", cfg.AckWait)
		}
		if dropped := narrowed(before.CachedInfo().Config, cfg); len(dropped) > 0 {
			a.log.Warn("this copy narrows the role's consumer, which every copy shares, to the steps it serves: the commands of the steps it drops go to no copy until one that serves them starts again (a copy of an older build, or one whose steps are bound wrongly, started last?)",
				"consumer", cfg.Durable, "dropped", dropped)
		}
		if err := a.deliverSkipped(ctx, before.CachedInfo().Config, cfg); err != nil {
			return nil, fmt.Errorf("agent consumer: %w", err)
		}
	}
	if a.opts.Serial {
		return cons.Messages(serialPull()...)
	}
	// in's workers start after the first pull opens: room is looked up
	// when a fetch asks.
	return newFetcher(cons, func(ctx context.Context) bool { return in.room(ctx) }), nil
}

func (a *Agent) onTick(m *nats.Msg) {
	// A tick a JetStream consumer delivers (its reply is $JS.ACK.…) was
	// not sent by a driver: a user allowed a consumer on any stream may
	// have it deliver here what the stream holds.
	if err := messages.CheckReply(m.Reply); err != nil {
		a.warns.Warn("tick not from a driver ignored", "err", err)
		return
	}
	var t messages.Tick
	if err := messages.Decode(m.Data, &t); err != nil {
		a.warns.Warn("bad tick", "err", err)
		return
	}
	if err := messages.CheckTick(a.tick.Load(), t.Tick); err != nil {
		a.warns.Warn("tick ignored", "tick", t.Tick, "err", err)
		return
	}
	a.advance(t.Tick)
}

// learnTick asks the coordinator's summary for the current tick, as a
// copy that starts mid-run must (docs/protocol.md, "A minimal agent"),
// and moves the agent's clock to it. It asks again while no coordinator
// serves the summary yet (no responders), until ctx ends; a request that
// is not answered (the agent's user may not publish natsaga.summary, and
// the server drops it) is not sent again: the clock then moves with the
// next tick heard.
func (a *Agent) learnTick(ctx context.Context) {
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := a.nc.RequestWithContext(rctx, messages.SummarySubject, nil)
		cancel()
		if err != nil && !errors.Is(err, nats.ErrNoResponders) {
			if ctx.Err() == nil {
				a.log.Warn("the clock is not learnt from natsaga.summary, which did not answer (may this agent's NATS user publish it?); it moves with the next tick heard",
					"err", err)
			}
			return
		}
		if err == nil {
			var s messages.Summary
			if err := messages.Decode(m.Data, &s); err != nil {
				a.log.Warn("bad summary", "err", err)
			} else if s.Tick < 0 {
				a.log.Warn("summary's tick ignored", "tick", s.Tick)
			} else {
				// The coordinator's own clock, answered to this agent's
				// inbox: taken whatever its distance from this copy's,
				// which starts at 0 (a tick heard is held to MaxTickJump
				// ahead, and would never reach a clock past it).
				a.advance(s.Tick)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// advance moves the agent's clock to tick, unless it is there already, and
// wakes the held commands. The clock moves with the ticks the agent hears
// (each at most messages.MaxTickJump ahead, as the coordinator takes them)
// and with the tick of each command it receives, so an agent started late
// catches up with the coordinator's clock.
// follow moves the clock to a command's tick, which the coordinator's
// clock has reached; a tick more than [messages.MaxTickJump] ahead of the
// agent's clock is ignored, as such a tick on natsaga.tick is (no
// coordinator sends one), and said at most once a minute.
func (a *Agent) follow(tick int64) {
	if err := messages.CheckTick(a.tick.Load(), tick); err != nil {
		a.warns.Warn("command tick ignored", "tick", tick, "err", err)
		return
	}
	a.advance(tick)
}

func (a *Agent) advance(tick int64) {
	for {
		cur := a.tick.Load()
		if tick <= cur {
			return
		}
		if a.tick.CompareAndSwap(cur, tick) {
			break
		}
	}
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// handle disposes of one delivered command. ctx is not cancelled by
// shutdown, so a command in hand is finished.
func (a *Agent) handle(ctx context.Context, m jetstream.Msg) {
	cmd, step, ok := a.receive(m)
	if !ok {
		return
	}
	if cmd.Action == messages.Execute && step.Duration != nil {
		d, err := step.Ticks(&cmd)
		if err != nil {
			// The model's Duration panicked: the execute is answered
			// with it, through the barrier, as its handler's error.
			failing := *step
			failing.Handler.Execute = func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) { return nil, err }
			a.run(ctx, &cmd, &failing, m)
			return
		}
		if d > 0 {
			// A command resent after a coordinator restart may find its
			// step done already: it is answered at once, not held again.
			rec, _, err := a.store.Branch(ctx, cmd.SagaID, cmd.Step)
			if a.triesInPlace(m) {
				// A record that does not decode is no store failure: it
				// is answered below, not tried again.
				unreachable := func(err error) error {
					if errors.Is(err, errBadRecord) {
						return nil
					}
					return err
				}
				_ = a.tryInPlace(ctx, &cmd, m, "store unavailable", unreachable(err), func() error {
					rec, _, err = a.store.Branch(ctx, cmd.SagaID, cmd.Step)
					return unreachable(err)
				})
			}
			switch {
			case errors.Is(err, errBadRecord):
				// Not held: run, it is answered error (Store.Do).
			case err != nil:
				a.cmdLog(&cmd).Warn("store unavailable; command will be redelivered", "err", err)
				_ = m.NakWithDelay(time.Second)
				return
			case !rec.Execute.Done() && rec.Compensate == nil:
				a.hold(ctx, &cmd, m, messages.AddTicks(cmd.Tick, d))
				return
			}
		}
	}
	a.run(ctx, &cmd, step, m)
}

// receive decodes m and finds the step it is for, counting a redelivery and
// moving the clock to its tick. A command that is malformed, or on another
// step's subject, is dropped (terminated), logged and counted. One for a
// step of the role that this copy does not serve (a copy of an older
// build, while newer ones that serve it run beside it) is put back, to be
// delivered again after notServedDelay, to a copy that serves it or, when
// none runs yet, to wait for one, as a command waits for its agent.
// receive then reports false.
func (a *Agent) receive(m jetstream.Msg) (messages.Command, *agent.Step, bool) {
	if meta, err := m.Metadata(); err == nil && meta.NumDelivered > 1 {
		a.redelivered.Add(1)
	}
	cmd, step, err := a.parse(m)
	switch {
	case errors.Is(err, errNotServed):
		a.warns.Warn("command for a step this copy does not serve: left for a copy that does", "saga", cmd.Saga, "step", cmd.Step, "subject", m.Subject())
		_ = m.NakWithDelay(notServedDelay)
		return cmd, nil, false
	case errors.Is(err, errOtherSubject):
		a.rejected.Add(1)
		a.cmdLog(&cmd).Log(context.Background(), a.dropLevel(m), "dropping command on another step's subject", "subject", m.Subject())
		_ = m.Term()
		return cmd, nil, false
	case err != nil:
		a.rejected.Add(1)
		a.log.Log(context.Background(), a.dropLevel(m), "dropping malformed command", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return cmd, nil, false
	}
	a.follow(cmd.Tick)
	return cmd, step, true
}

// consumerNotUnique is nats-server's JSConsumerWQConsumerNotUniqueErr: a
// consumer of a work-queue stream whose filter overlaps another's.
const consumerNotUnique jetstream.ErrorCode = 10100

// overlap returns err, the server's refusal of the role's consumer cfg,
// saying why when the server's words ("filtered consumer not unique on
// workqueue stream") are that another consumer takes some of its
// subjects: a step belongs to exactly one role. It names the subjects and
// the consumers that take them when this agent's user may list the
// stream's consumers (a foreign agent's filter may be a wildcard), and
// the role's own subjects otherwise.
func (a *Agent) overlap(ctx context.Context, cfg jetstream.ConsumerConfig, err error) error {
	var api *jetstream.APIError
	if !errors.As(err, &api) || api.ErrorCode != consumerNotUnique {
		return err
	}
	taken := a.takenBy(ctx, cfg)
	if len(taken) == 0 {
		taken = cfg.FilterSubjects
	}
	return fmt.Errorf("role %s serves commands another role's consumer takes already: %s; a step belongs to the one role its definition names (agent.Step's Saga is the definition's subject, Name the step's): %w",
		a.opts.Role, strings.Join(taken, ", "), err)
}

// takenBy lists the subjects of cfg that another consumer of the command
// stream takes, with the consumer's name; none when the consumers cannot
// be listed.
func (a *Agent) takenBy(ctx context.Context, cfg jetstream.ConsumerConfig) []string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	stream, err := a.js.Stream(ctx, messages.CommandStream)
	if err != nil {
		return nil
	}
	var found []string
	list := stream.ListConsumers(ctx)
	for info := range list.Info() {
		if info.Name == cfg.Durable {
			continue
		}
		filters := info.Config.FilterSubjects
		if f := info.Config.FilterSubject; f != "" {
			filters = append(filters, f)
		}
		for _, sub := range cfg.FilterSubjects {
			if len(filters) == 0 || slices.ContainsFunc(filters, func(f string) bool { return messages.SubjectMatches(f, sub) }) {
				found = append(found, fmt.Sprintf("%s (consumer %s)", sub, info.Name))
			}
		}
	}
	return found
}

// warnUnknownSteps logs the steps of the agent whose commands the command
// stream, whose subjects are those of every step of every definition the
// coordinators know, does not take (yet): no command comes for them until
// a definition naming them is registered. A step bound by the saga's name
// rather than its subject is the usual cause.
func (a *Agent) warnUnknownSteps(subjects []string) {
	for i := range a.opts.Steps {
		st := &a.opts.Steps[i]
		sub := messages.ExecuteSubject(st.Saga, st.Name)
		if !slices.ContainsFunc(subjects, func(f string) bool { return messages.SubjectMatches(f, sub) }) {
			a.log.Warn("no saga definition the coordinator knows has this step (yet): its commands come only once one is registered; agent.Step's Saga is the definition's subject, not its name",
				"saga", st.Saga, "step", st.Name, "subject", sub)
		}
	}
}

// minPayload is the least server payload limit natsaga is made for: an
// execute's output may then take 7 KiB ([messages.MaxOutputFor]).
const minPayload = 64 << 10

// notServedDelay spaces the deliveries of a command for a step this copy
// does not serve.
const notServedDelay = time.Second

// errNotServed and errOtherSubject are parse's errors for a command of a
// step the agent does not serve, and for one on another step's subject.
var (
	errNotServed    = errors.New("a step this agent does not serve")
	errOtherSubject = errors.New("a command on another step's subject")
)

// parse decodes m and finds the step it is for; it has no effect.
func (a *Agent) parse(m jetstream.Msg) (messages.Command, *agent.Step, error) {
	if err := messages.CheckUTF8(m.Data()); err != nil {
		return messages.Command{}, nil, err
	}
	cmd, err := wirejson.DecodeCommand(m.Data())
	if err != nil {
		return messages.Command{}, nil, err
	}
	if !cmd.OnSubject(m.Subject()) {
		return cmd, nil, errOtherSubject
	}
	step, ok := a.steps[stepKey{cmd.Saga, cmd.Step}]
	if !ok {
		return cmd, nil, errNotServed
	}
	return cmd, step, nil
}

// cmdLog is the agent's logger with cmd's attributes. It is made only when
// something is logged: most commands log nothing.
func (a *Agent) cmdLog(cmd *messages.Command) *slog.Logger {
	return a.log.With("saga_id", cmd.SagaID, "saga", cmd.Saga, "step", cmd.Step, "action", cmd.Action, "attempt", cmd.Attempt)
}

// run executes cmd through the barrier and answers it. A command that
// recorded its result is answered by the record, and acknowledged at once;
// otherwise run publishes a reply, and m is acknowledged by ackStored once
// the reply is stored, so that this worker moves on meanwhile.
func (a *Agent) run(ctx context.Context, cmd *messages.Command, step *agent.Step, m jetstream.Msg) {
	reply, verdict, err := a.store.Do(ctx, cmd, step.Handler)
	if a.triesInPlace(m) {
		err = a.tryInPlace(ctx, cmd, m, "store unavailable", err, func() (err error) {
			reply, verdict, err = a.store.Do(ctx, cmd, step.Handler)
			return err
		})
	}
	if err != nil {
		a.cmdLog(cmd).Warn("store unavailable; command will be redelivered", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	if verdict == agent.Transient && ctx.Err() != nil {
		// The agent stops, and ended the handler's context one ack wait
		// after it stopped pulling: the handler's error is the stop's,
		// not the step's. Answered, it would spend an attempt (and roll
		// back a step allowed one); nothing is recorded, so the command
		// goes to another copy as it is.
		a.cmdLog(cmd).Info("stopping: the command is left for another copy", "reason", reply.Reason)
		_ = m.Nak()
		return
	}
	switch verdict {
	case agent.Applied, agent.Noop:
		if cmd.Action == messages.Execute {
			a.executed.Add(1)
		} else {
			a.compensated.Add(1)
		}
	case agent.Duplicate:
		a.duplicates.Add(1)
		a.cmdLog(cmd).Info("duplicate absorbed")
		if a.opts.Serial {
			// Another copy answered it, and may have written the state.
			a.store.forgetAll()
		}
	case agent.Refused:
		a.refused.Add(1)
		a.cmdLog(cmd).Info("execute refused: its compensation is recorded (this delivery came after it)")
	case agent.Transient:
		if reply.Outcome == messages.Failed {
			// agent.Conclude: a compensation's handler returned Reject.
			a.cmdLog(cmd).Warn("compensation rejected: the coordinator sends it again, and the saga fails when its attempts run out; a compensation must succeed in the end", "reason", reply.Reason)
			break
		}
		a.cmdLog(cmd).Warn("transient failure", "reason", reply.Reason)
	}
	if verdict == agent.Applied || verdict == agent.Noop {
		// This command wrote its result in the barrier record, which the
		// coordinator reads as the answer: no reply is sent.
		a.answered(cmd, m)
		return
	}
	stored, err := a.publishReply(ctx, reply)
	if err != nil && a.triesInPlace(m) {
		err = a.tryInPlace(ctx, cmd, m, "reply not stored", err, func() error { return a.reply(ctx, reply) })
		if err == nil {
			a.answered(cmd, m)
			return
		}
	}
	if err != nil {
		a.cmdLog(cmd).Warn("reply not stored; command will be redelivered", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	a.replies <- pendingReply{stored: stored, msg: m, cmd: cmd}
}

// answered counts cmd handled and acknowledges m, its message: its answer
// is stored.
func (a *Agent) answered(cmd *messages.Command, m jetstream.Msg) {
	a.handled.Add(1)
	if err := m.Ack(); err != nil {
		a.cmdLog(cmd).Warn("ack failed; the command may be redelivered", "err", err)
	}
}

// triesInPlace reports whether a command of m that failed for the store
// must be tried again in place ([Agent.tryInPlace]) rather than left to
// JetStream's redelivery: a serial copy's, which the commands behind it
// must not overtake, and one that shares its message with others, since a
// message is delivered again only once every command of it is settled,
// and one of those may be held for simulation time, whose tick waits for
// this command's answer.
func (a *Agent) triesInPlace(m jetstream.Msg) bool { return a.opts.Serial || sharesItsMessage(m) }

// tryInPlace calls try again, while err (its last error) is not nil, until
// ctx ends, keeping m in hand, and returns the last error. The waits grow
// by 100 ms up to a second.
func (a *Agent) tryInPlace(ctx context.Context, cmd *messages.Command, m jetstream.Msg, what string, err error, try func() error) error {
	for n := 1; err != nil && ctx.Err() == nil; n++ {
		a.cmdLog(cmd).Warn(what+"; trying again", "try", n, "err", err)
		_ = m.InProgress()
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(n)*100*time.Millisecond, time.Second)):
		}
		err = try()
	}
	return err
}

// replyWait bounds the wait for a reply's storage before its command is
// left to be delivered again.
const replyWait = 5 * time.Second

// ackStored acknowledges each command once its reply is stored, in the
// order the replies were published, until a.replies is closed. A reply that
// is not stored within replyWait, or at all, is published again in place
// when its command [Agent.triesInPlace], and has its command delivered
// again otherwise. When inHand ends, the rest are left to JetStream's
// redelivery.
func (a *Agent) ackStored(inHand context.Context) {
	timer := time.NewTimer(replyWait)
	defer timer.Stop()
	for p := range a.replies {
		timer.Reset(replyWait)
		var err error
		select {
		case <-p.stored.Ok():
		case err = <-p.stored.Err():
		case <-timer.C:
			err = errors.New("no acknowledgement from the server")
		case <-inHand.Done():
			continue
		}
		if err != nil && a.triesInPlace(p.msg) {
			// The same message again, trace context and all: a reply
			// stored twice is answered once (the coordinator applies a
			// command's sequence number once).
			sent := p.stored.Msg()
			again := &nats.Msg{Subject: sent.Subject, Data: sent.Data, Header: sent.Header}
			err = a.tryInPlace(inHand, p.cmd, p.msg, "reply not stored", err, func() error { return a.publishStored(inHand, again) })
		}
		if err != nil {
			a.cmdLog(p.cmd).Warn("reply not stored; command will be redelivered", "err", err)
			_ = p.msg.NakWithDelay(time.Second)
			continue
		}
		a.answered(p.cmd, p.msg)
	}
}

// encodeReply names r's sender and returns the message that stores it,
// with the trace context of ctx in its headers. A reply carries no message
// id: after a coordinator restart, the same sequence number may be asked
// again, and must be answered again.
func (a *Agent) encodeReply(ctx context.Context, r messages.Reply) (*nats.Msg, error) {
	r.Agent, r.Role = a.opts.Name, a.opts.Role
	data, err := wirejson.AppendReply(make([]byte, 0, 256), &r)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	m := &nats.Msg{Subject: r.Subject(), Data: data}
	tracing.Inject(ctx, m)
	return m, nil
}

// publishReply publishes r without waiting for it to be stored.
func (a *Agent) publishReply(ctx context.Context, r messages.Reply) (jetstream.PubAckFuture, error) {
	m, err := a.encodeReply(ctx, r)
	if err != nil {
		return nil, err
	}
	return a.js.PublishMsgAsync(m)
}

// reply publishes r and waits until it is stored.
func (a *Agent) reply(ctx context.Context, r messages.Reply) error {
	m, err := a.encodeReply(ctx, r)
	if err != nil {
		return err
	}
	return a.publishStored(ctx, m)
}

// publishStored publishes m and waits, at most replyWait, until it is
// stored.
func (a *Agent) publishStored(ctx context.Context, m *nats.Msg) error {
	pctx, cancel := context.WithTimeout(ctx, replyWait)
	defer cancel()
	_, err := a.js.PublishMsg(pctx, m)
	return err
}

// hold answers "working" and keeps m until the clock reaches due; if the
// answer cannot be stored, m is delivered again.
func (a *Agent) hold(ctx context.Context, cmd *messages.Command, m jetstream.Msg, due int64) {
	working := messages.ReplyTo(cmd, messages.Working, "")
	working.Until = due
	err := a.reply(ctx, working)
	if a.triesInPlace(m) {
		err = a.tryInPlace(ctx, cmd, m, "working reply not stored", err, func() error { return a.reply(ctx, working) })
	}
	if err != nil {
		// Held unanswered, the command would look lost to the
		// coordinator until it is done: have it delivered again instead.
		a.cmdLog(cmd).Warn("working reply not stored; command will be redelivered", "err", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	a.mu.Lock()
	if a.letHeldGo {
		a.mu.Unlock()
		a.cmdLog(cmd).Debug("stopping: a command to hold is left for another copy", "due_tick", due)
		_ = m.NakWithDelay(letGoDelay)
		return
	}
	a.held = append(a.held, &heldJob{due: due, cmd: *cmd, msg: m})
	a.mu.Unlock()
	a.cmdLog(cmd).Debug("holding command for simulation time", "due_tick", due)
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// letGoDelay is how long a command held for simulation time that a
// stopping copy lets go waits before it is delivered again: long enough
// for the copy's own pulls to end, which it would otherwise be delivered
// to, and lost to them until its ack wait.
const letGoDelay = time.Second

// keepInHandUntil keeps every message in hand from being redelivered
// until inHand ends: a copy that stops finishes what it runs within its
// grace, and a command delivered meanwhile to another copy would run
// there too, twice at once should this copy then let it go. The messages
// are kept on a goroutine of their own: the commands of a busy tick may
// take longer to run than the ack wait.
func (a *Agent) keepInHandUntil(inHand context.Context) {
	renew := time.NewTicker(a.opts.AckWait / 3)
	defer renew.Stop()
	for {
		select {
		case <-inHand.Done():
			return
		case <-renew.C:
			a.keepInHand()
		}
	}
}

// runHeld runs held commands as they fall due, at most Concurrency at a
// time, until ctx ends, and then lets the commands still held go to
// another copy. The commands it runs use inHand.
func (a *Agent) runHeld(ctx, inHand context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, a.opts.Concurrency)
	for {
		select {
		case <-ctx.Done():
			a.mu.Lock()
			held := a.held
			a.held, a.letHeldGo = nil, true
			a.mu.Unlock()
			for _, j := range held {
				_ = j.msg.NakWithDelay(letGoDelay)
			}
			if len(held) > 0 {
				a.log.Info("stopping: the commands held for simulation time are left for another copy", "held", len(held))
			}
			return
		case <-a.wake:
			now := a.tick.Load()
			a.mu.Lock()
			var due []*heldJob
			kept := a.held[:0]
			for _, j := range a.held {
				if j.due <= now {
					due = append(due, j)
				} else {
					kept = append(kept, j)
				}
			}
			a.held = kept
			a.mu.Unlock()
			// A serial role holds nothing (New refuses it), so the held
			// commands may run side by side.
			for _, j := range due {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					a.run(inHand, &j.cmd, a.steps[stepKey{j.cmd.Saga, j.cmd.Step}], j.msg)
				})
			}
		}
	}
}
