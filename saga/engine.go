package saga

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/natsaga/natsaga/messages"
)

// Options configures an [Engine]. The zero value works.
type Options struct {
	// KeepFinished keeps finished sagas in memory so Get can return them.
	// A runtime that stores sagas elsewhere leaves it false: then only
	// active and failed sagas stay in memory.
	KeepFinished bool
	// NewID makes saga ids. nil means uuid.NewString. An id it makes
	// must follow the rule of every id (messages.CheckToken); a start
	// given one that does not fails with [ErrBadNewID].
	NewID func() string
	// RecentlyFinished is how many ids of finished sagas the engine keeps
	// without KeepFinished, so that a retried start of a saga that has
	// just finished is recognised (Start returns [ErrTerminal]) rather
	// than run again. 0 (or less) means 65,536; older ids are the runtime's to
	// recognise from its store.
	RecentlyFinished int
	// MaxContext, when positive, bounds a saga's context, in bytes as
	// [messages.Context.EncodedLen] counts them: every command carries
	// it, so a context over an agent's limit would leave the saga
	// unable to run or undo a step. A start over it is refused; a step
	// whose output would grow it past the bound is compensated, with
	// the steps before it, and its output is not kept; and so is a step
	// whose output would make the context and the outputs of the steps
	// (the state's step results) together more than twice the bound.
	MaxContext int
}

// Engine drives sagas. It is a pure state machine: it does no I/O and reads
// no clock. It is not safe for concurrent use; the runtime serialises calls.
type Engine struct {
	opts     Options
	defs     map[string]*Definition // the latest version, by name and by subject
	versions map[versionKey]*Definition
	nDefs    int
	active   map[ID]*Execution
	failed   map[ID]*Execution
	finished map[ID]*Execution
	counts   map[Status]int
	awaiting int
	retrying int
	// answered counts the answers applied (working or final): how a
	// driver waiting for a quiet tick sees the sagas move when the due
	// count does not (a ranked saga's next command is due as its answer
	// comes).
	answered  int64
	recent    recentIDs
	tick      int64
	deadlines deadlineIndex
	retries   retryHeap

	// round is the last round of ranked commands released; open counts the
	// ranked sagas that still owe it an answer; held are the ranked sagas
	// waiting for a later round, and holdRound the round a saga held now
	// joins. tickRound is the first round of the current tick. dueWorking
	// counts the working commands whose declared tick has come.
	// recovering is set from the first Restore to Resume.
	round      int64
	open       int
	held       []*Execution
	holdRound  int64
	tickRound  int64
	dueWorking int
	recovering bool
	// activeBytes is what the active sagas hold, as ActiveBytes counts it.
	activeBytes int64
}

// New returns an engine with no definitions.
func New(opts Options) *Engine {
	if opts.NewID == nil {
		opts.NewID = uuid.NewString
	}
	if opts.RecentlyFinished <= 0 {
		opts.RecentlyFinished = 1 << 16
	}
	return &Engine{
		opts:     opts,
		defs:     map[string]*Definition{},
		versions: map[versionKey]*Definition{},
		active:   map[ID]*Execution{},
		failed:   map[ID]*Execution{},
		finished: map[ID]*Execution{},
		counts:   map[Status]int{},
		recent:   recentIDs{set: map[ID]struct{}{}, ring: make([]ID, opts.RecentlyFinished)},
		deadlines: deadlineIndex{
			buckets: map[int64][]deadline{},
		},
	}
}

// Register stores d under its name and subject. It returns an error wrapping
// [ErrInvalidDefinition], or [ErrDuplicateDefinition] and [ErrTaken].
func (e *Engine) Register(d Definition) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if err := e.checkRoleCase(d); err != nil {
		return err
	}
	if _, ok := e.defs[d.Name]; ok {
		return fmt.Errorf("register %q: %w: %w", d.Name, ErrTaken, ErrDuplicateDefinition)
	}
	if _, ok := e.defs[d.Subject]; ok {
		return fmt.Errorf("register %q: subject %q: %w: %w", d.Name, d.Subject, ErrTaken, ErrDuplicateDefinition)
	}
	n := d.normalized()
	e.defs[n.Name] = n
	e.defs[n.Subject] = n
	e.versions[versionKey{n.Name, n.Version}] = n
	e.nDefs++
	return nil
}

// checkRoleCase returns an error wrapping [ErrInvalidDefinition] when a
// role of d differs only in case from a role of a registered definition:
// a role's streams are named by its name in upper case, so the two would
// share them.
func (e *Engine) checkRoleCase(d Definition) error {
	for i, st := range d.Steps {
		for _, ost := range d.Steps[:i] {
			if ost.Role != st.Role && strings.EqualFold(ost.Role, st.Role) {
				return fmt.Errorf("definition %q: role %q differs only in case from role %q, and would share its streams: %w",
					d.Name, st.Role, ost.Role, ErrInvalidDefinition)
			}
		}
		for _, o := range e.versions {
			for _, ost := range o.Steps {
				if ost.Role != st.Role && strings.EqualFold(ost.Role, st.Role) {
					return fmt.Errorf("definition %q: role %q differs only in case from role %q of %q, and would share its streams: %w",
						d.Name, st.Role, ost.Role, o.Name, ErrInvalidDefinition)
				}
			}
		}
	}
	return nil
}

// versionKey names one version of a definition.
type versionKey struct {
	name    string
	version int64
}

// Update registers d, a definition or a version of one, while sagas run.
// A saga keeps the version it started with to its end; a start after
// Update uses the latest version registered. d may be an older version than
// the latest (as when a runtime reloads every stored version): it is then
// kept for the sagas that run by it, and the latest stays. Update of a
// version already registered with the same content changes nothing.
//
// It returns an error wrapping [ErrInvalidDefinition] for a definition that
// does not validate or that changes the subject of a registered name, and
// [ErrDuplicateDefinition] for a version already registered with another
// content (wrapping [ErrOtherContent] too), or a name or subject taken by
// another definition (wrapping [ErrTaken] too). It reports whether d
// became the latest version.
func (e *Engine) Update(d Definition) (latest bool, err error) {
	return e.update(d, true)
}

// Reload is [Engine.Update] for a version a runtime stored before, as it
// recovers: a step the version gives to another role than a registered
// version does is taken as it was stored, since a release before that rule
// may have stored it and its sagas must still run to their end.
func (e *Engine) Reload(d Definition) (latest bool, err error) {
	return e.update(d, false)
}

func (e *Engine) update(d Definition, keepRoles bool) (latest bool, err error) {
	n, unchanged, err := e.checkUpdate(d, keepRoles)
	if err != nil || unchanged {
		return false, err
	}
	cur, ok := e.defs[n.Name]
	if !ok {
		return true, e.Register(d)
	}
	e.versions[versionKey{n.Name, n.Version}] = n
	if n.Version < cur.Version {
		return false, nil
	}
	e.defs[n.Name] = n
	e.defs[n.Subject] = n
	return true, nil
}

// CheckUpdate returns the error [Engine.Update] of d would return, and
// whether d is registered already, with the same content; it changes
// nothing. A runtime checks a definition before it stores it.
func (e *Engine) CheckUpdate(d Definition) (unchanged bool, err error) {
	_, unchanged, err = e.checkUpdate(d, true)
	return unchanged, err
}

func (e *Engine) checkUpdate(d Definition, keepRoles bool) (n *Definition, unchanged bool, err error) {
	if err := d.Validate(); err != nil {
		return nil, false, err
	}
	if err := e.checkRoleCase(d); err != nil {
		return nil, false, err
	}
	n = d.normalized()
	cur, ok := e.defs[d.Name]
	if ok && cur.Name != d.Name {
		// d's name is another definition's subject: the two would share
		// one entry of defs.
		return nil, false, fmt.Errorf("update %q: the name is the subject of %q: %w: %w", d.Name, cur.Name, ErrTaken, ErrDuplicateDefinition)
	}
	if !ok {
		if other, ok := e.defs[d.Subject]; ok {
			return nil, false, fmt.Errorf("update %q: subject %q is %q's: %w: %w", d.Name, d.Subject, other.Name, ErrTaken, ErrDuplicateDefinition)
		}
		return n, false, nil
	}
	if n.Subject != cur.Subject {
		return nil, false, fmt.Errorf("update %q: subject %q is not %q: %w", d.Name, n.Subject, cur.Subject, ErrInvalidDefinition)
	}
	if old, ok := e.versions[versionKey{n.Name, n.Version}]; ok {
		if reflect.DeepEqual(old, n) {
			return n, true, nil
		}
		return nil, false, fmt.Errorf("update %q: version %d: %w: %w", d.Name, n.Version, ErrOtherContent, ErrDuplicateDefinition)
	}
	// A step's commands travel on subjects of its own, which only its
	// role's consumer may take (the command stream is a work queue): a
	// step of one name keeps its role in every version.
	for _, v := range e.Versions() { // sorted: the error names the earliest
		if v.Name != n.Name || !keepRoles {
			continue
		}
		for _, st := range n.Steps {
			for _, was := range v.Steps {
				if was.Name == st.Name && was.Role != st.Role {
					return nil, false, fmt.Errorf("update %q: step %q is role %q's in version %d, not %q's: a step keeps its role in every version (its commands' subjects are that role's); give the step another name: %w: %w",
						d.Name, st.Name, was.Role, v.Version, st.Role, ErrStepMoved, ErrDuplicateDefinition)
				}
			}
		}
	}
	return n, false, nil
}

// Versions returns every registered version of every definition, sorted
// by name and version.
func (e *Engine) Versions() []*Definition {
	out := make([]*Definition, 0, len(e.versions))
	for _, d := range e.versions {
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b *Definition) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})
	return out
}

// DefinitionVersion returns version v of the definition named name, and
// false when it is not registered.
func (e *Engine) DefinitionVersion(name string, v int64) (*Definition, bool) {
	d, ok := e.versions[versionKey{name, v}]
	return d, ok
}

// DefinitionOf returns the definition x runs by: the version it records,
// or the latest for a saga stored before versions existed. It returns
// false when that version is not registered.
func (e *Engine) DefinitionOf(x *Execution) (*Definition, bool) {
	d, ok := e.defs[x.Definition]
	if ok && x.Version != 0 {
		d, ok = e.versions[versionKey{x.Definition, x.Version}]
	}
	return d, ok
}

// Definition returns the definition registered under name or subject.
func (e *Engine) Definition(nameOrSubject string) (*Definition, bool) {
	d, ok := e.defs[nameOrSubject]
	return d, ok
}

// Definitions returns the registered definitions, sorted by name.
func (e *Engine) Definitions() []*Definition {
	var out []*Definition
	for k, d := range e.defs {
		if k == d.Name {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *Definition) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// known names the saga types a start may name, for an error: "known: a,
// b, c", the first 20 by name.
func (e *Engine) known() string {
	const most = 20
	var names []string
	for _, d := range e.Definitions() {
		names = append(names, d.Name)
		if d.Subject != d.Name {
			names[len(names)-1] += " (" + d.Subject + ")"
		}
	}
	if len(names) == 0 {
		return "no saga type is defined"
	}
	if len(names) > most {
		return fmt.Sprintf("known: %s and %d more", strings.Join(names[:most], ", "), len(names)-most)
	}
	return "known: " + strings.Join(names, ", ")
}

// Tick returns the current simulation tick.
func (e *Engine) Tick() int64 { return e.tick }

// Start begins a saga of the definition named (or with subject) def with the
// given context, at the current tick, and puts its first command in out.
//
// id may be empty, and the engine makes one. When a saga with id already
// exists, Start returns it unchanged and puts nothing in out, so a client
// may retry a start safely; when it has finished and is no longer held,
// Start returns an error wrapping [ErrTerminal]. It returns an error
// wrapping [ErrUnknownDefinition] or [messages.ErrBadRequest] for a bad
// request.
func (e *Engine) Start(id ID, def string, ctx messages.Context, out *Outbox) (*Execution, error) {
	return e.StartWith(id, def, ctx, StartOptions{}, out)
}

// StartOptions are the choices of a simulation driver when it starts a
// saga. The zero value starts an unranked saga at once.
type StartOptions struct {
	// Rank, when positive, ranks the saga: its commands are released in
	// rounds, in rank order (see [Engine.Resume] and docs/simulation.md).
	Rank int64
	// Tick, when ahead of the clock, schedules the start: the saga is
	// pending until AdvanceTick reaches Tick, and starts then, with the
	// other starts and the timeouts of that tick, in one round.
	Tick int64
}

// StartWith is [Engine.Start] with the driver's options o. It returns an
// error wrapping [messages.ErrBadRequest] for a negative rank or tick, or
// a tick more than [messages.MaxTickJump] ahead of the clock.
func (e *Engine) StartWith(id ID, def string, ctx messages.Context, o StartOptions, out *Outbox) (*Execution, error) {
	e.holdRound = e.round + 1
	d, ok := e.defs[def]
	if !ok {
		return nil, fmt.Errorf("start %q (%s): %w", def, e.known(), ErrUnknownDefinition)
	}
	if o.Rank < 0 {
		return nil, fmt.Errorf("start %q: rank %d is negative (0: no rank; a driver ranks from 1): %w", def, o.Rank, messages.ErrBadRequest)
	}
	if o.Tick < 0 {
		return nil, fmt.Errorf("start %q: tick %d is negative: %w", def, o.Tick, messages.ErrBadRequest)
	}
	if o.Tick > e.tick {
		if err := messages.CheckTick(e.tick, o.Tick); err != nil {
			return nil, fmt.Errorf("start %q scheduled: %w", def, err)
		}
	}
	if id == "" {
		id = e.opts.NewID()
		if messages.CheckToken("saga_id", id) != nil {
			return nil, fmt.Errorf("start %q: %w: %q", def, ErrBadNewID, messages.Clip(id))
		}
	} else if err := messages.CheckToken("saga_id", id); err != nil {
		return nil, err
	}
	if x := e.lookup(id); x != nil {
		if x.Saga != d.Subject {
			return nil, IDTaken(id, x.Saga, def)
		}
		return x, nil
	}
	if e.recent.has(id) {
		return nil, fmt.Errorf("start %s: %w", id, ErrTerminal)
	}
	if ctx == nil {
		ctx = messages.Context{}
	}
	size, depth := ctx.Measure()
	if e.opts.MaxContext > 0 && size > e.opts.MaxContext {
		return nil, fmt.Errorf("start %q: context of %d bytes, limit %d (every command carries it): %w", def, size, e.opts.MaxContext, messages.ErrTooLarge)
	}
	if depth > messages.MaxContextDepth {
		return nil, fmt.Errorf("start %q: context nested %d deep, limit %d: %w", def, depth, messages.MaxContextDepth, messages.ErrBadRequest)
	}
	x := &Execution{
		ID: id, Definition: d.Name, Version: d.Version, Saga: d.Subject, Status: Pending, Context: ctx, Rank: o.Rank,
		Current: -1, StartedTick: e.tick, Completed: []string{}, History: make([]Transition, 0, 8), def: d,
	}
	e.active[id] = x
	e.count(x, size)
	e.counts[Pending]++
	e.record(x, Transition{Tick: e.tick, Status: Pending})
	if o.Tick > e.tick {
		x.StartedTick = o.Tick
		e.addDeadline(o.Tick, deadline{id: id, kind: startDeadline})
		out.Changed = append(out.Changed, x)
		return x, nil
	}
	e.begin(x, out)
	e.release(out)
	return x, nil
}

// begin moves the pending saga x to in progress at the current tick and
// dispatches its first step.
func (e *Engine) begin(x *Execution, out *Outbox) {
	x.StartedTick = e.tick
	e.setStatus(x, InProgress, "", out)
	e.addDeadline(deadlineAfter(x.StartedTick, x.def.TimeoutTicks), deadline{id: x.ID, kind: wholeDeadline})
	e.dispatch(x, 0, messages.Execute, out)
}

// ApplyReply applies an agent's reply at wall-clock time now (used only to
// schedule retries) and puts what follows in out. It returns an error
// wrapping [ErrUnknownSaga] for a saga it does not hold, [ErrBadReply] for a
// reply that cannot belong to the saga, [ErrStale] for a reply that
// matches no outstanding command, and [ErrEarly] for an answer that came
// before its time (its command's round is not released, or its working
// command's declared tick has not come); in every such case nothing
// changes that is stored. (An answer held back before its working
// command's declared tick is noted in memory: see [Engine.AdvanceTick].)
func (e *Engine) ApplyReply(r messages.Reply, now time.Time, out *Outbox) error {
	x, ok := e.active[r.SagaID]
	if !ok {
		if x = e.lookup(r.SagaID); x != nil {
			return fmt.Errorf("reply for saga %s (%s): %w: %w", r.SagaID, x.Status, ErrStale, ErrTerminal)
		}
		return fmt.Errorf("reply for saga %s: %w", r.SagaID, ErrUnknownSaga)
	}
	if _, ok := x.def.Step(r.Step); r.Saga != x.Saga || !ok {
		return fmt.Errorf("reply for saga %s names %s.%s: %w", r.SagaID, r.Saga, r.Step, ErrBadReply)
	}
	if !r.Outcome.Valid() {
		return fmt.Errorf("reply for saga %s: outcome %q: %w", r.SagaID, r.Outcome, ErrBadReply)
	}
	// A reply settles only the command outstanding now: the same seq and
	// attempt. An answer to an earlier attempt (say a redelivered "error"
	// after the retry was sent) or to an earlier round of compensation (before
	// RetryCompensation) is stale; the agent answers the current command too.
	if x.Current < 0 || r.Step != x.step().Name || r.Action != x.Action ||
		r.Seq != x.Seq || r.Attempt != x.Attempt || !x.RetryAt.IsZero() {
		return fmt.Errorf("reply for saga %s %s %s attempt %d seq %d: %w", r.SagaID, r.Action, r.Step, r.Attempt, r.Seq, ErrStale)
	}
	if x.held && !e.recovering {
		return fmt.Errorf("reply for saga %s %s: round %d not released: %w", r.SagaID, r.Step, x.Round, ErrEarly)
	}
	if r.Outcome == messages.Working {
		if !x.Awaiting {
			return fmt.Errorf("working reply for saga %s %s: %w", r.SagaID, r.Step, ErrStale)
		}
		e.setAwaiting(x, false)
		e.answered++
		x.Working, x.Until = true, r.Until
		note := "working"
		if r.Until > 0 {
			note = fmt.Sprintf("working until tick %d", r.Until)
		}
		e.record(x, Transition{Tick: e.tick, Status: x.Status, Step: r.Step, Action: r.Action, Attempt: r.Attempt, Note: note})
		out.Changed = append(out.Changed, x)
		switch {
		case r.Until > 0 && r.Until <= e.tick:
			// Due now: it still owes its round an answer.
			e.setDue(x, true)
		case r.Until > 0:
			e.setOpen(x, false)
			e.addDeadline(r.Until, deadline{id: x.ID, gen: x.gen, kind: dueDeadline})
		default:
			e.setOpen(x, false)
		}
		e.release(out)
		return nil
	}
	if x.Working && x.Until > e.tick {
		x.earlyGen = x.gen
		return fmt.Errorf("reply for saga %s %s before tick %d: %w", r.SagaID, r.Step, x.Until, ErrEarly)
	}
	// Kept in the history and the error: clipped, or an agent's long
	// reasons, retry after retry, would outgrow the state's one message.
	r.Reason = messages.ClipReason(r.Reason)
	e.holdRound = max(x.Round+1, e.round+1)
	if e.recovering {
		e.holdRound = x.Round + 1
	}
	e.setOpen(x, false)
	e.setDue(x, false)
	e.answered++
	x.Working, x.Until, x.earlyGen = false, 0, 0
	if x.Action == messages.Execute {
		e.executeReply(x, r, now, out)
	} else {
		e.compensateReply(x, r, now, out)
	}
	e.release(out)
	return nil
}

func (e *Engine) executeReply(x *Execution, r messages.Reply, now time.Time, out *Outbox) {
	st := x.step()
	switch r.Outcome {
	case messages.OK:
		outLen := -1 // not taken
		if len(r.Output) > 0 {
			merged := x.Context.Clone()
			merged.Merge(r.Output)
			var why string
			if outLen, why = e.outputRefused(x, merged, r.Output); why != "" {
				// The step ran: it is compensated too, with the context
				// as it was, which every command of the saga fits.
				e.rollback(x, RolledBack, x.Current, "step "+st.Name+": "+why, out)
				return
			}
			x.Context = merged
			// Held twice: merged into the context, and as the step's
			// result. Counted at the output's size for the context
			// too, though a key it replaces may have held more or less.
			e.charge(x, 2*outLen)
		}
		x.Completed = append(x.Completed, st.Name)
		x.setResult(st.Name, r.Output, outLen)
		if x.Current+1 < len(x.def.Steps) {
			e.dispatch(x, x.Current+1, messages.Execute, out)
			return
		}
		e.setAwaiting(x, false)
		x.Current = -1
		x.Action = ""
		e.finish(x, Completed, "", out)
	case messages.Failed:
		e.rollback(x, RolledBack, x.Current-1, fmt.Sprintf("step %s failed: %s", st.Name, r.Reason), out)
	case messages.Error:
		if x.Attempt < st.Retry.MaxAttempts {
			e.scheduleRetry(x, now.Add(st.Retry.delay(x.Attempt)), "error: "+r.Reason, out)
			return
		}
		// The step may yet take effect through a redelivery, so it is
		// compensated too; its agent answers "nothing to undo" if not.
		e.rollback(x, RolledBack, x.Current,
			fmt.Sprintf("step %s: transient error after %d attempts: %s", st.Name, x.Attempt, r.Reason), out)
	}
}

// outputRefused returns why a step's ok output may not be kept in x,
// merged into its context as merged, and "" when it may:
//   - the context would pass Options.MaxContext (every command carries
//     it, and an agent reads at most so much);
//   - the output nests deeper than messages.MaxContextDepth (no decoder
//     would read the saga's state back);
//   - the context and the step results, which keep every step's output,
//     would pass twice Options.MaxContext: each output is within the reply
//     limit and the context within its own, but with enough steps the
//     state would outgrow the one message it is stored in, and the
//     coordinator could store nothing at all.
//
// It runs for every answer with an output, on the coordinator's loop:
// each size is taken once, and the results' as they grow (setResult). It
// returns the output's size too.
func (e *Engine) outputRefused(x *Execution, merged, output messages.Context) (outLen int, why string) {
	outLen, depth := output.Measure()
	size := 0
	if e.opts.MaxContext > 0 {
		if size = merged.EncodedLen(); size > e.opts.MaxContext {
			return outLen, fmt.Sprintf("its output would make the context %d bytes, limit %d", size, e.opts.MaxContext)
		}
	}
	if depth > messages.MaxContextDepth {
		return outLen, fmt.Sprintf("its output nests %d deep, limit %d", depth, messages.MaxContextDepth)
	}
	if e.opts.MaxContext > 0 {
		if n := size + x.resultsSize() + outLen; n > 2*e.opts.MaxContext {
			return outLen, fmt.Sprintf("its output would make the context and the step results %d bytes, limit %d", n, 2*e.opts.MaxContext)
		}
	}
	return outLen, ""
}

func (e *Engine) compensateReply(x *Execution, r messages.Reply, now time.Time, out *Outbox) {
	st := x.step()
	if r.Outcome == messages.OK {
		x.Compensated = append(x.Compensated, st.Name)
		e.nextCompensation(x, x.Current-1, out)
		return
	}
	e.compensationFailed(x, fmt.Sprintf("compensation of %s: %s: %s", st.Name, r.Outcome, r.Reason), now, out)
}

func (e *Engine) compensationFailed(x *Execution, reason string, now time.Time, out *Outbox) {
	p := x.def.CompensationRetry
	if x.Attempt < p.MaxAttempts {
		e.scheduleRetry(x, now.Add(p.delay(x.Attempt)), reason, out)
		return
	}
	x.Error = fmt.Sprintf("%s (after %d attempts)", reason, x.Attempt)
	e.setAwaiting(x, false)
	e.finish(x, Failed, x.Error, out)
}

// rollback starts compensating x from step index from down to 0, and ends
// it with cause.
func (e *Engine) rollback(x *Execution, cause Status, from int, reason string, out *Outbox) {
	x.Cause = cause
	x.Error = reason
	e.setStatus(x, Compensating, reason, out)
	e.nextCompensation(x, from, out)
}

func (e *Engine) nextCompensation(x *Execution, idx int, out *Outbox) {
	if idx >= 0 {
		e.dispatch(x, idx, messages.Compensate, out)
		return
	}
	e.setAwaiting(x, false)
	x.Current = -1
	x.Action = ""
	e.finish(x, x.Cause, x.Error, out)
}

// dispatch sends the first attempt of action for step idx.
func (e *Engine) dispatch(x *Execution, idx int, action messages.Action, out *Outbox) {
	x.Current = idx
	x.Action = action
	x.Attempt = 1
	x.DispatchedTick = e.tick
	x.gen++
	e.setDue(x, false)
	x.Working, x.Until = false, 0
	// Only an execute times out. A compensation must happen: it waits for
	// its agent (JetStream keeps redelivering it) however many ticks pass.
	if action == messages.Execute {
		e.addDeadline(deadlineAfter(e.tick, x.step().TimeoutTicks), deadline{id: x.ID, gen: x.gen})
	}
	e.send(x, "", out)
}

// send emits x's outstanding command with a new sequence number. A ranked
// saga's new command waits for its round (see [Engine.Resume]); a retry
// goes out at once, in the round it belongs to already.
func (e *Engine) send(x *Execution, note string, out *Outbox) {
	x.Seq++
	e.clearRetry(x)
	e.setAwaiting(x, true)
	e.record(x, Transition{Tick: e.tick, Status: x.Status, Step: x.step().Name, Action: x.Action, Attempt: x.Attempt, Note: note})
	out.Changed = append(out.Changed, x)
	if x.Rank > 0 && note != "retry" {
		e.hold(x, true)
		return
	}
	out.Commands = append(out.Commands, x.command())
}

// hold keeps the ranked saga x for the round e.holdRound; publish says
// whether its command goes out when that round is released.
func (e *Engine) hold(x *Execution, publish bool) {
	e.setOpen(x, false)
	x.Round = e.holdRound
	x.publish = publish
	if !x.held {
		x.held = true
		e.held = append(e.held, x)
	}
}

// release releases the next round, once no ranked saga owes the current
// one an answer: the held sagas of the lowest round held join it, and
// their commands go out in rank order.
func (e *Engine) release(out *Outbox) {
	for !e.recovering && e.open == 0 && len(e.held) > 0 {
		slices.SortFunc(e.held, func(a, b *Execution) int {
			return cmp.Or(cmp.Compare(a.Round, b.Round), cmp.Compare(a.Rank, b.Rank), cmp.Compare(a.ID, b.ID))
		})
		next := e.held[0].Round
		n := 0
		for n < len(e.held) && e.held[n].Round == next {
			x := e.held[n]
			n++
			x.held = false
			if x.Status.Terminal() || x.Current < 0 {
				continue
			}
			e.setOpen(x, true)
			if x.publish && x.RetryAt.IsZero() {
				out.Commands = append(out.Commands, x.command())
			}
		}
		rest := copy(e.held, e.held[n:])
		clear(e.held[rest:])
		e.held = e.held[:rest]
		e.round = next
	}
}

// setOpen counts x towards the released round, or stops counting it.
func (e *Engine) setOpen(x *Execution, v bool) {
	if x.open == v {
		return
	}
	x.open = v
	if v {
		e.open++
	} else {
		e.open--
	}
}

// setDue counts x as a working command whose declared tick has come, or
// stops counting it.
func (e *Engine) setDue(x *Execution, v bool) {
	if x.due == v {
		return
	}
	x.due = v
	if v {
		e.dueWorking++
	} else {
		e.dueWorking--
	}
}

func (e *Engine) scheduleRetry(x *Execution, at time.Time, reason string, out *Outbox) {
	e.setAwaiting(x, false)
	// A retry belongs to the round of the command it repeats.
	if x.Rank > 0 && !x.held {
		e.setOpen(x, true)
	}
	if x.RetryAt.IsZero() {
		e.retrying++
	}
	x.RetryAt = at
	e.record(x, Transition{Tick: e.tick, Status: x.Status, Step: x.step().Name, Action: x.Action, Attempt: x.Attempt, Note: "retry scheduled after " + reason})
	e.retries.push(retry{at: at, id: x.ID, seq: x.Seq})
	out.Changed = append(out.Changed, x)
}

// Wake resends the commands whose retry backoff has passed by now, and puts
// them in out.
func (e *Engine) Wake(now time.Time, out *Outbox) {
	for e.retries.Len() > 0 && !e.retries.peek().at.After(now) {
		r := e.retries.pop()
		x, ok := e.active[r.id]
		if !ok || x.Seq != r.seq || x.RetryAt.IsZero() {
			continue
		}
		x.Attempt++
		e.send(x, "retry", out)
	}
	e.release(out)
}

// NextWake returns when Wake next has work to do, and false when no retry
// is scheduled.
func (e *Engine) NextWake() (time.Time, bool) {
	for e.retries.Len() > 0 {
		r := e.retries.peek()
		if x, ok := e.active[r.id]; ok && x.Seq == r.seq && !x.RetryAt.IsZero() {
			return r.at, true
		}
		e.retries.pop()
	}
	return time.Time{}, false
}

// AdvanceTick moves the simulation clock to tick and times out what expired,
// putting the resulting commands and the expired sagas' ids in out. A tick
// at or below the current one changes nothing. A tick more than
// [messages.MaxTickJump] ahead changes nothing either, and AdvanceTick
// returns an error wrapping [messages.ErrBadRequest]. Its cost is
// proportional to the number of deadlines that fall due.
//
// The timeouts, the scheduled starts and the working commands that fall due
// at the tick form one round for the ranked sagas: it is released, in rank
// order, once the round before it is answered.
//
// A working command whose final answer came before the tick its agent
// declared, within the step's time, was held back ([ErrEarly]) and will
// be offered again: a tick that moves the clock past that declared tick
// and past the step's or the saga's timeout at once does not time it out.
// It is due, and the timeout waits one tick more for the answer.
func (e *Engine) AdvanceTick(tick int64, out *Outbox) error {
	if tick <= e.tick {
		return nil
	}
	if err := messages.CheckTick(e.tick, tick); err != nil {
		return err
	}
	from := e.tick
	e.tick = tick
	e.holdRound = e.round + 1
	e.tickRound = e.holdRound
	e.fireDeadlines(from, out)
	e.release(out)
	return nil
}

// TickRound is the first round of the current tick: the round that its
// scheduled starts, its timeouts and the working commands falling due at
// it joined (0 before the first tick). A durable runtime that stores a
// scheduled saga when it is scheduled, and not again when it begins,
// stores the tick with this round, for [Engine.BeginScheduled].
func (e *Engine) TickRound() int64 { return e.tickRound }

// BeginScheduled begins, during a recovery (between [Engine.Restore] and
// [Engine.Resume]), every restored pending saga scheduled for tick, the
// clock as stored, in round, the first round of that tick as
// [Engine.TickRound] gave it; it returns their ids, sorted. The sagas
// begin as AdvanceTick began them in the run before: at tick, in round,
// so that the rounds that follow, and the order of their commands, are
// the same. The clock restored may be ahead of tick, when a saga was
// stored at a later tick whose clock was not: it stays there. It does
// nothing outside a recovery, for a round below 1, or when the clock
// restored is behind tick. What it puts in out.Changed must be stored;
// its commands, and its events, are not to be sent: after Resume,
// [Engine.Outstanding] lists the commands to send again.
func (e *Engine) BeginScheduled(tick, round int64, out *Outbox) []ID {
	if !e.recovering || round < 1 || tick > e.tick {
		return nil
	}
	var ids []ID
	for id, x := range e.active {
		if x.Status == Pending && x.StartedTick == tick {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	now := e.tick
	e.tick, e.holdRound = tick, round
	for _, id := range ids {
		e.begin(e.active[id], out)
	}
	e.tick = now
	if tick == now {
		e.tickRound = round
	}
	return ids
}

// fireDeadlines applies the deadlines due at or before the current tick,
// which moved from tick from.
func (e *Engine) fireDeadlines(from int64, out *Outbox) {
	e.deadlines.due(e.tick, func(at int64, d deadline) {
		x, ok := e.active[d.id]
		if !ok {
			return
		}
		switch d.kind {
		case startDeadline:
			if x.Status == Pending {
				e.begin(x, out)
			}
		case dueDeadline:
			if x.Working && d.gen == x.gen && x.Current >= 0 {
				e.makeDue(x, out)
			}
		case wholeDeadline:
			if x.Status == InProgress && !e.postponed(x, from, at, d) {
				e.timeout(x, "saga exceeded its timeout of "+ticks(x.def.TimeoutTicks), out)
			}
		default:
			if d.gen == x.gen && x.Status == InProgress && !e.postponed(x, from, at, d) {
				e.timeout(x, "step "+x.step().Name+" not answered within "+ticks(x.step().TimeoutTicks), out)
			}
		}
	})
}

// postponed moves d, a timeout of x due at tick at, to the next tick when
// x's agent gave its final answer in time: before the tick it declared
// (so it was held back, to be offered again), which is before at, and which
// the clock jumped over, moving from tick from. Ticks one at a time see
// that answer applied at its tick; a tick that jumps past at does not time
// out an answer already in hand. Should the answer not be applied by the
// next tick, d times x out then.
func (e *Engine) postponed(x *Execution, from, at int64, d deadline) bool {
	if x.earlyGen != x.gen || !x.Working || x.Until <= from || x.Until >= at {
		return false
	}
	e.addDeadline(messages.AddTicks(e.tick, 1), d)
	return true
}

// deadlineAfter is the tick at which something started at tick from with
// a timeout of timeout ticks times out: from+timeout+1, saturated.
func deadlineAfter(from, timeout int64) int64 {
	return messages.AddTicks(messages.AddTicks(from, timeout), 1)
}

// makeDue marks x's working command due: its agent's answer is expected
// now. A ranked saga joins the next round, which waits for that answer; the
// round it joins is stored.
func (e *Engine) makeDue(x *Execution, out *Outbox) {
	e.setDue(x, true)
	if x.Rank > 0 && !x.held { // held already: Resume placed it
		e.hold(x, false)
		out.Changed = append(out.Changed, x)
	}
}

// addDeadline adds d, due at tick at. When superseded deadlines outnumber
// the live ones, at most two per active saga, it first drops them, so the
// index follows the sagas in flight rather than every saga ever started,
// even when no tick comes; each compaction is paid for by the deadlines
// added since the last one.
func (e *Engine) addDeadline(at int64, d deadline) {
	if d.kind == startDeadline || d.kind == dueDeadline {
		// Not bound by the sagas in flight: never compacted away early.
		e.deadlines.add(at, d)
		return
	}
	if e.deadlines.n >= 4*len(e.active)+1024 {
		e.deadlines.compact(e.liveDeadline)
	}
	e.deadlines.add(at, d)
}

// liveDeadline reports whether d can still do something to its saga.
func (e *Engine) liveDeadline(d deadline) bool {
	x, ok := e.active[d.id]
	if !ok {
		return false
	}
	switch d.kind {
	case startDeadline:
		return x.Status == Pending
	case dueDeadline:
		return x.Working && d.gen == x.gen
	case wholeDeadline:
		return x.Status == InProgress
	}
	return x.Status == InProgress && d.gen == x.gen
}

func (e *Engine) timeout(x *Execution, reason string, out *Outbox) {
	out.Expired = append(out.Expired, x.ID)
	// The step in flight may have run, so it is compensated as well.
	e.rollback(x, TimedOut, x.Current, reason, out)
}

// Rollback aborts an active saga: it compensates the steps completed and the
// one in flight, in reverse order, and ends rolled_back with reason. It
// returns an error wrapping [ErrUnknownSaga] or [ErrTerminal].
func (e *Engine) Rollback(id ID, reason string, out *Outbox) error {
	x, ok := e.active[id]
	if !ok {
		if e.lookup(id) != nil {
			return fmt.Errorf("rollback %s: %w", id, ErrTerminal)
		}
		return fmt.Errorf("rollback %s: %w", id, ErrUnknownSaga)
	}
	if x.Status == Compensating {
		return nil
	}
	e.holdRound = e.round + 1
	e.rollback(x, RolledBack, x.Current, "aborted: "+reason, out)
	e.release(out)
	return nil
}

// RetryCompensation puts a failed saga back to compensating, resuming with
// the compensation that failed, with a fresh attempt budget. It returns an
// error wrapping [ErrUnknownSaga] or [ErrNotFailed].
func (e *Engine) RetryCompensation(id ID, out *Outbox) error {
	x, ok := e.failed[id]
	if !ok {
		if e.lookup(id) != nil {
			return fmt.Errorf("retry %s: %w", id, ErrNotFailed)
		}
		return fmt.Errorf("retry %s: %w", id, ErrUnknownSaga)
	}
	if x.Current < 0 {
		return fmt.Errorf("retry %s: no compensation to resume: %w", id, ErrNotFailed)
	}
	delete(e.failed, id)
	e.active[id] = x
	e.countAll(x)
	// The saga ends with its cause again, so it gets back the reason it
	// started compensating, which the compensation failure replaced.
	x.Error = x.rollbackReason()
	e.holdRound = e.round + 1
	e.setStatus(x, Compensating, "operator retry", out)
	e.dispatch(x, x.Current, messages.Compensate, out)
	e.release(out)
	return nil
}

// record appends t to x's history and holds the history to its bounds
// ([MaxHistory]): over them, it drops the oldest transition that is
// neither the first, nor the one [Execution.rollbackReason] reads, nor t.
func (e *Engine) record(x *Execution, t Transition) {
	was := x.historySize()
	size := was + transitionSize(&t)
	x.History = append(x.History, t)
	x.historyLen = size
	limit := e.opts.MaxContext
	if limit <= 0 {
		limit = messages.MaxContext
	}
	for len(x.History) > MaxHistory || x.historyLen > limit {
		keep := -1 // the transition rollbackReason reads
		for i, h := range x.History {
			if h.Status == Compensating && h.Step == "" {
				keep = i
				break
			}
		}
		drop := 1
		if drop == keep {
			drop++
		}
		if drop >= len(x.History)-1 {
			break // the first, the cause and t: nothing more to drop
		}
		x.historyLen -= transitionSize(&x.History[drop])
		x.History = slices.Delete(x.History, drop, drop+1)
		x.HistoryDropped++
	}
	e.charge(x, x.historyLen-was)
}

func (e *Engine) setStatus(x *Execution, s Status, note string, out *Outbox) {
	e.counts[x.Status]--
	e.counts[s]++
	x.Status = s
	e.record(x, Transition{Tick: e.tick, Status: s, Note: note})
	out.Events = append(out.Events, messages.Event{V: messages.Version, SagaID: x.ID, Saga: x.Saga, Status: string(s), Tick: e.tick, Reason: note})
	out.Changed = append(out.Changed, x)
}

func (e *Engine) finish(x *Execution, s Status, note string, out *Outbox) {
	e.clearRetry(x)
	e.setOpen(x, false)
	e.setDue(x, false)
	x.Working, x.Until = false, 0
	e.setStatus(x, s, note, out)
	delete(e.active, x.ID)
	e.uncount(x)
	switch {
	case s == Failed:
		e.failed[x.ID] = x
	case e.opts.KeepFinished:
		e.finished[x.ID] = x
	default:
		e.recent.add(x.ID)
	}
}

func (e *Engine) clearRetry(x *Execution) {
	if !x.RetryAt.IsZero() {
		e.retrying--
		x.RetryAt = time.Time{}
	}
}

func (e *Engine) setAwaiting(x *Execution, v bool) {
	if x.Awaiting == v {
		return
	}
	x.Awaiting = v
	if v {
		e.awaiting++
	} else {
		e.awaiting--
	}
}

func (e *Engine) lookup(id ID) *Execution {
	if x, ok := e.active[id]; ok {
		return x
	}
	if x, ok := e.failed[id]; ok {
		return x
	}
	return e.finished[id]
}

// Holds reports whether the engine holds saga id: active, failed, or
// finished and kept. Unlike Get, it copies nothing.
func (e *Engine) Holds(id ID) bool { return e.lookup(id) != nil }

// StepRole returns the role of step in the definition, of the version saga
// id runs by, "" when the engine does not hold the saga or its definition
// has no such step. Unlike Get, it copies nothing.
func (e *Engine) StepRole(id ID, step string) string {
	x := e.lookup(id)
	if x == nil || x.def == nil {
		return ""
	}
	if st, ok := x.def.Step(step); ok {
		return st.Role
	}
	return ""
}

// Get returns a copy of the saga with id: an active or failed one, or a
// finished one when Options.KeepFinished is set. It returns an error
// wrapping [ErrUnknownSaga] when there is none.
func (e *Engine) Get(id ID) (Execution, error) {
	x := e.lookup(id)
	if x == nil {
		return Execution{}, fmt.Errorf("get %s: %w", id, ErrUnknownSaga)
	}
	return x.Clone(), nil
}

// Active returns copies of the active sagas, oldest first.
func (e *Engine) Active() []Execution { return e.ListAfter("", nil, 0) }

// List returns copies of at most limit (0: no limit) sagas with status,
// oldest first. Finished sagas other than failed ones are listed only with
// Options.KeepFinished. An empty status lists the active sagas.
func (e *Engine) List(status Status, limit int) []Execution {
	return e.ListAfter(status, nil, limit)
}

// ListCursor is a place in List's order, oldest first: the saga listed
// last on a page.
type ListCursor struct {
	StartedTick int64
	ID          ID
}

// CursorOf returns the cursor that follows x in List's order.
func CursorOf(x *Execution) ListCursor { return ListCursor{StartedTick: x.StartedTick, ID: x.ID} }

// ListAfter is List from just after the cursor after (nil: from the
// first), so that pages of a long list can be read one after another.
func (e *Engine) ListAfter(status Status, after *ListCursor, limit int) []Execution {
	var m map[ID]*Execution
	switch {
	case status == Failed:
		m = e.failed
	case status.Terminal():
		m = e.finished
	default:
		m = e.active
	}
	xs := make([]*Execution, 0, min(len(m), 1024))
	for _, x := range m {
		if status != "" && x.Status != status {
			continue
		}
		if after != nil && compareCursor(CursorOf(x), *after) <= 0 {
			continue
		}
		xs = append(xs, x)
	}
	slices.SortFunc(xs, func(a, b *Execution) int { return compareCursor(CursorOf(a), CursorOf(b)) })
	if limit > 0 && len(xs) > limit {
		xs = xs[:limit]
	}
	out := make([]Execution, len(xs))
	for i, x := range xs {
		out[i] = x.Clone()
	}
	return out
}

func compareCursor(a, b ListCursor) int {
	return cmp.Or(cmp.Compare(a.StartedTick, b.StartedTick), cmp.Compare(a.ID, b.ID))
}

// ActiveBytes returns the bytes the active sagas hold, approximately: for
// each, its context as it started (as [messages.Context.EncodedLen]
// counts it), twice the size of every step output merged into it (the
// output is kept in the context and among the step results; a key it
// replaces is not taken off), and its history's size, counted from the
// saga's start, or from its retry or restore (when what it holds is
// taken whole), until it ends. What a saga holds is never counted down
// while it is active but as its history drops old entries, so the count
// may run above what is held, never far below. It leaves out what every
// saga holds whatever its input (ids, step lists, indexes), which a count
// of sagas bounds, and the failed and finished sagas.
func (e *Engine) ActiveBytes() int64 { return e.activeBytes }

// charge counts n more bytes (or fewer, negative) held by x, while x is
// active (counted).
func (e *Engine) charge(x *Execution, n int) {
	if x.counted {
		x.charged += n
		e.activeBytes += int64(n)
	}
}

// count starts counting what x, now active, holds: n bytes.
func (e *Engine) count(x *Execution, n int) {
	x.counted, x.charged = true, n
	e.activeBytes += int64(n)
}

// countAll counts what x, active again or restored, holds, whole.
func (e *Engine) countAll(x *Execution) {
	e.count(x, x.Context.EncodedLen()+x.resultsSize()+x.historySize())
}

// uncount stops counting what x, no longer active, holds.
func (e *Engine) uncount(x *Execution) {
	e.activeBytes -= int64(x.charged)
	x.counted, x.charged = false, 0
}

// Summary counts the definitions and the sagas by status.
func (e *Engine) Summary() messages.Summary {
	return messages.Summary{
		V:          messages.Version,
		Tick:       e.tick,
		Registered: e.nDefs,
		Active:     len(e.active),
		Completed:  e.counts[Completed],
		RolledBack: e.counts[RolledBack],
		TimedOut:   e.counts[TimedOut],
		Failed:     e.counts[Failed],
		Awaiting:   e.awaiting,
		Retrying:   e.retrying,
		Due:        e.awaiting + e.retrying + e.dueWorking,
		Answered:   e.answered,
	}
}

// RestoreClock advances the clock to tick, the clock stored, when it is
// ahead, as the coordinator does when it restarts: a clock moved on while
// no saga changed is not behind the last tick applied. Like [Engine.Restore]
// it begins a recovery.
func (e *Engine) RestoreClock(tick int64) {
	e.recovering = true
	e.tick = max(e.tick, tick)
}

// RestoreFinished counts a stored saga that finished with st (completed,
// rolled_back or timed_out) at tick lastTick, as [Engine.Restore] counts
// such a saga, for a caller that knows its end but not its whole state:
// the coordinator reads only the headers of the sagas its bucket keeps
// for the retention. It advances the clock to lastTick when it is ahead.
// It returns an error for any other status.
func (e *Engine) RestoreFinished(st Status, lastTick int64) error {
	if !st.Terminal() || st == Failed {
		return fmt.Errorf("restore a finished saga: status %q is not completed, rolled_back or timed_out", st)
	}
	e.recovering = true
	e.tick = max(e.tick, lastTick)
	e.counts[st]++
	return nil
}

// Restore loads a stored saga into the engine, as the coordinator does when
// it restarts, and advances the clock to tick when it is ahead. An active
// saga's deadlines and retry are set again; its outstanding command keeps
// the sequence number x holds, and is not resent (see [Execution.Command]). A finished saga other than a
// failed one is only counted, unless Options.KeepFinished is set. It returns an error
// wrapping [ErrUnknownDefinition] when the saga's definition is not
// registered.
//
// From the first Restore until [Engine.Resume], no round of ranked sagas
// is released: the caller restores every saga, may apply the answers the
// agents recorded meanwhile, and then calls Resume.
func (e *Engine) Restore(x Execution, tick int64) error {
	d, ok := e.DefinitionOf(&x)
	if !ok {
		return fmt.Errorf("restore %s: definition %q version %d: %w", x.ID, x.Definition, x.Version, ErrUnknownDefinition)
	}
	if err := x.holdsTogether(d); err != nil {
		return fmt.Errorf("restore %s: %w: %w", x.ID, err, ErrInvalidDefinition)
	}
	if e.lookup(x.ID) != nil {
		return nil
	}
	e.recovering = true
	e.tick = max(e.tick, tick)
	if n := len(x.History); n > 0 {
		// The clock is stored apart from the sagas: a crash may keep a
		// saga's change and lose the tick it happened at. The clock was at
		// least at the saga's last transition.
		e.tick = max(e.tick, x.History[n-1].Tick)
	}
	x.def = d
	x.held, x.publish, x.open, x.due = false, false, false, false
	p := &x
	e.counts[x.Status]++
	switch {
	case x.Status == Failed:
		e.failed[x.ID] = p
		return nil
	case x.Status.Terminal():
		if e.opts.KeepFinished {
			e.finished[x.ID] = p
		}
		return nil
	}
	e.active[x.ID] = p
	e.countAll(p)
	if x.Awaiting {
		x.Awaiting = false
		e.setAwaiting(p, true)
	}
	switch x.Status {
	case Pending:
		e.addDeadline(x.StartedTick, deadline{id: x.ID, kind: startDeadline})
	case InProgress:
		e.addDeadline(deadlineAfter(x.StartedTick, d.TimeoutTicks), deadline{id: x.ID, kind: wholeDeadline})
	}
	if x.Current >= 0 && x.Action == messages.Execute {
		p.gen++
		e.addDeadline(deadlineAfter(x.DispatchedTick, p.step().TimeoutTicks), deadline{id: x.ID, gen: p.gen})
		if x.Working && x.Until > 0 {
			e.addDeadline(x.Until, deadline{id: x.ID, gen: p.gen, kind: dueDeadline})
		}
	}
	if !x.RetryAt.IsZero() {
		e.retrying++
		e.retries.push(retry{at: x.RetryAt, id: x.ID, seq: x.Seq})
	}
	return nil
}

// Resume ends a recovery (see [Engine.Restore]): it rebuilds the rounds of
// the ranked sagas, applies the deadlines that fell due while no engine
// ran, and releases the round in progress. It puts no command in out: the
// commands to send again are those of [Engine.Outstanding]; what Resume
// puts in out.Changed must be stored.
//
// Rounds work so: a ranked saga's command that follows from an answer to a
// command of round r belongs to round r+1, and one that a tick causes (a
// start, a timeout, a working command falling due) to the first round
// after those already released. The engine releases a round only when no
// ranked saga owes the round before it an answer, and releases its
// commands in rank order, so that commands of different sagas that contend
// for one agent's state reach it in the same order whatever the timing.
func (e *Engine) Resume(out *Outbox) {
	e.recovering = false
	for _, x := range e.held {
		x.held = false
	}
	e.held = e.held[:0]
	var low, high int64
	found := false
	var owing []*Execution
	for _, x := range e.active {
		e.setOpen(x, false)
		if x.Rank == 0 || x.Current < 0 {
			continue
		}
		high = max(high, x.Round)
		dueNow := x.Working && x.Until > 0 && x.Until <= e.tick
		if dueNow {
			e.setDue(x, true)
		}
		if x.Awaiting || !x.RetryAt.IsZero() || dueNow {
			owing = append(owing, x)
			if !found || x.Round < low {
				low = x.Round
			}
			found = true
		}
	}
	e.round = high
	if found {
		e.round = low - 1
	}
	for _, x := range owing {
		e.holdRound = x.Round
		e.hold(x, x.Awaiting)
	}
	e.holdRound = e.round + 1
	from := len(out.Commands)
	e.fireDeadlines(e.tick, out) // the clock did not move: nothing is postponed
	e.release(out)
	// Outstanding lists every command to send, these among them.
	out.Commands = out.Commands[:from]
}

// Command returns the command the active saga id has outstanding, and false
// when it has none: unknown, finished, or waiting to retry.
func (e *Engine) Command(id ID) (messages.Command, bool) {
	x, ok := e.active[id]
	if !ok {
		return messages.Command{}, false
	}
	return x.Command()
}

// Outstanding returns the commands of every active saga that has one,
// except the ranked ones that wait for their round, for a restarted
// coordinator to send again: the ranked ones first, in rank order, then
// the others by saga id. Agents absorb the duplicates.
func (e *Engine) Outstanding() []messages.Command {
	var cmds []messages.Command
	for _, x := range e.active {
		if x.held {
			continue
		}
		if c, ok := x.Command(); ok {
			cmds = append(cmds, c)
		}
	}
	unranked := func(c messages.Command) int {
		if c.Rank == 0 {
			return 1
		}
		return 0
	}
	slices.SortFunc(cmds, func(a, b messages.Command) int {
		return cmp.Or(cmp.Compare(unranked(a), unranked(b)), cmp.Compare(a.Rank, b.Rank), cmp.Compare(a.SagaID, b.SagaID))
	})
	return cmds
}

// recentIDs is a bounded set of the ids of the sagas finished last.
type recentIDs struct {
	set  map[ID]struct{}
	ring []ID
	next int
}

func (r *recentIDs) add(id ID) {
	if old := r.ring[r.next]; old != "" {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.set[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}

func (r *recentIDs) has(id ID) bool {
	_, ok := r.set[id]
	return ok
}

// ticks says n ticks, "1 tick" for one.
func ticks(n int64) string {
	if n == 1 {
		return "1 tick"
	}
	return strconv.FormatInt(n, 10) + " ticks"
}
