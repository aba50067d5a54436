package saga_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// t0 is the wall-clock origin of every test: the engine reads no clock, so
// time only moves when a test says so.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// The subsidy saga of the prototype.
const (
	apply  = "household_applies"
	eval   = "government_evaluates"
	deduct = "budget_deducted"
	// firstID is the id the test engines give the first saga they start.
	firstID = "saga-1"
)

// subsidyDef returns the prototype's subsidy definition, changed by each of
// mods.
func subsidyDef(mods ...func(*saga.Definition)) saga.Definition {
	d := saga.Definition{
		Name:        "subsidy_application",
		Subject:     "subsidy",
		Description: "Household applies for subsidy -> Government evaluates -> Budget deducted",
		Steps: []saga.Step{
			{Name: apply, Role: "household", Compensation: "cancel_application"},
			{Name: eval, Role: "government", Compensation: "undo_approval"},
			{Name: deduct, Role: "government", Compensation: "refund_budget"},
		},
	}
	for _, m := range mods {
		m(&d)
	}
	return d
}

// insuranceDef is a second definition, with a saga timeout shorter than
// the sum of its steps' timeouts (the prototype's insurance claim).
func insuranceDef() saga.Definition {
	return saga.Definition{
		Name:         "insurance_claim",
		Subject:      "insurance",
		TimeoutTicks: 3,
		Steps: []saga.Step{
			{Name: "household_files", Role: "household", TimeoutTicks: 2},
			{Name: "insurance_evaluates", Role: "insurer", TimeoutTicks: 2},
			{Name: "household_receives", Role: "household", TimeoutTicks: 2},
		},
	}
}

// sent is what the tests check of each command: where it goes and which
// attempt of which action it is.
type sent struct {
	SagaID  string
	Subject string
	Step    string
	Action  messages.Action
	Attempt int
	Seq     int
}

// ex is the execute command of a subsidy step for the first saga.
func ex(step string, attempt, seq int) sent {
	return sent{firstID, "saga.subsidy." + step, step, messages.Execute, attempt, seq}
}

// comp is the compensate command of a subsidy step for the first saga.
func comp(step string, attempt, seq int) sent {
	return sent{firstID, "saga.subsidy." + step + ".compensate", step, messages.Compensate, attempt, seq}
}

// of returns s for saga id.
func (s sent) of(id saga.ID) sent { s.SagaID = id; return s }

func sentOf(cmds []messages.Command) []sent {
	var out []sent
	for _, c := range cmds {
		out = append(out, sent{c.SagaID, c.Subject(), c.Step, c.Action, c.Attempt, c.Seq})
	}
	return out
}

func statusesOf(evs []messages.Event) []saga.Status {
	var out []saga.Status
	for _, ev := range evs {
		out = append(out, saga.Status(ev.Status))
	}
	return out
}

// harness drives one engine and remembers every command it sent.
type harness struct {
	t    *testing.T
	e    *saga.Engine
	out  saga.Outbox
	now  time.Time
	sent []messages.Command
	ids  int
}

// newHarness returns a harness whose engine keeps finished sagas, names
// sagas saga-1, saga-2, ... and knows defs.
func newHarness(t *testing.T, defs ...saga.Definition) *harness {
	t.Helper()
	return newHarnessWith(t, saga.Options{}, defs...)
}

// newHarnessWith is newHarness with the engine's options opts, but for
// KeepFinished and NewID, which the harness sets.
func newHarnessWith(t *testing.T, opts saga.Options, defs ...saga.Definition) *harness {
	t.Helper()
	h := &harness{t: t, now: t0}
	opts.KeepFinished = true
	opts.NewID = func() string {
		h.ids++
		return fmt.Sprintf("saga-%d", h.ids)
	}
	h.e = saga.New(opts)
	for _, d := range defs {
		require.NoError(t, h.e.Register(d))
	}
	return h
}

// record remembers the commands of the last input.
func (h *harness) record() { h.sent = append(h.sent, h.out.Commands...) }

func (h *harness) start(id saga.ID, def string, ctx messages.Context) (saga.ID, error) {
	h.out.Reset()
	x, err := h.e.Start(id, def, ctx, &h.out)
	h.record()
	if err != nil {
		return "", err
	}
	return x.ID, nil
}

func (h *harness) apply(r messages.Reply) error {
	h.out.Reset()
	err := h.e.ApplyReply(r, h.now, &h.out)
	h.record()
	return err
}

func (h *harness) reply(c messages.Command, o messages.Outcome, reason string, output messages.Context) error {
	r := messages.ReplyTo(&c, o, reason)
	r.Output = output
	return h.apply(r)
}

func (h *harness) tick(n int64) {
	h.out.Reset()
	h.e.AdvanceTick(n, &h.out)
	h.record()
}

func (h *harness) wake(at time.Time) {
	h.now = at
	h.out.Reset()
	h.e.Wake(at, &h.out)
	h.record()
}

// last returns the last command sent for saga id.
func (h *harness) last(id saga.ID) messages.Command {
	h.t.Helper()
	for i := len(h.sent) - 1; i >= 0; i-- {
		if h.sent[i].SagaID == id {
			return h.sent[i]
		}
	}
	require.FailNow(h.t, "no command sent", "saga %s", id)
	return messages.Command{}
}

// bySeq returns the command numbered seq sent for saga id.
func (h *harness) bySeq(id saga.ID, seq int) messages.Command {
	h.t.Helper()
	for _, c := range h.sent {
		if c.SagaID == id && c.Seq == seq {
			return c
		}
	}
	require.FailNow(h.t, "no such command", "saga %s seq %d", id, seq)
	return messages.Command{}
}

func (h *harness) get(id saga.ID) saga.Execution {
	h.t.Helper()
	x, err := h.e.Get(id)
	require.NoError(h.t, err)
	return x
}

// snapshot is everything an input could change, as seen from outside.
type snapshot struct {
	Saga    saga.Execution
	Summary messages.Summary
}

func (h *harness) snapshot(id saga.ID) snapshot {
	x, _ := h.e.Get(id)
	return snapshot{x, h.e.Summary()}
}

// input is one thing that happens to a saga in a scenario.
type input func(h *harness, id saga.ID) error

func start() input {
	return func(h *harness, _ saga.ID) error {
		_, err := h.start("", "subsidy", messages.Context{}.MustSet("agent_id", "household-7"))
		return err
	}
}

// answer replies to the last command of the saga.
func answer(o messages.Outcome, reason string, output messages.Context) input {
	return func(h *harness, id saga.ID) error { return h.reply(h.last(id), o, reason, output) }
}

func ok() input                         { return answer(messages.OK, "", nil) }
func okWith(out messages.Context) input { return answer(messages.OK, "", out) }
func fail(reason string) input          { return answer(messages.Failed, reason, nil) }
func transient(reason string) input     { return answer(messages.Error, reason, nil) }
func working() input                    { return answer(messages.Working, "", nil) }

func tick(n int64) input {
	return func(h *harness, _ saga.ID) error { h.tick(n); return nil }
}

// wake wakes the engine at t0 plus after; later replies happen then.
func wake(after time.Duration) input {
	return func(h *harness, _ saga.ID) error { h.wake(t0.Add(after)); return nil }
}

func abort(reason string) input {
	return func(h *harness, id saga.ID) error {
		err := h.e.Rollback(id, reason, &h.out)
		h.record()
		return err
	}
}

func retryCompensation() input {
	return func(h *harness, id saga.ID) error {
		err := h.e.RetryCompensation(id, &h.out)
		h.record()
		return err
	}
}

// check runs assertions between inputs.
func check(fn func(h *harness, id saga.ID)) input {
	return func(h *harness, id saga.ID) error { fn(h, id); return nil }
}

// replyTo answers the command numbered seq, whatever came after it.
func replyTo(seq int, o messages.Outcome) input {
	return func(h *harness, id saga.ID) error { return h.reply(h.bySeq(id, seq), o, "again", nil) }
}

func nextWake(after time.Duration) input {
	return check(func(h *harness, _ saga.ID) {
		at, ok := h.e.NextWake()
		require.True(h.t, ok, "a retry is scheduled")
		require.Equal(h.t, t0.Add(after), at)
	})
}

func noWake() input {
	return check(func(h *harness, _ saga.ID) {
		_, ok := h.e.NextWake()
		require.False(h.t, ok, "no retry is scheduled")
	})
}

func awaiting(n int) input {
	return check(func(h *harness, _ saga.ID) { require.Equal(h.t, n, h.e.Summary().Awaiting) })
}

func outstanding(want ...sent) input {
	return check(func(h *harness, _ saga.ID) {
		require.Equal(h.t, []sent(want), sentOf(h.e.Outstanding()))
	})
}

func errorIs(want string) input {
	return check(func(h *harness, id saga.ID) { require.Equal(h.t, want, h.get(id).Error) })
}

// op is one input of a scenario and what it must produce.
type op struct {
	do input
	// cmds are exactly the commands the input produces, in order.
	cmds []sent
	// events are the statuses of exactly the events it produces.
	events []saga.Status
	// err is the error the input must return; then it must change nothing.
	err error
	// same says the input must change nothing, though it succeeds.
	same bool
	// status is the saga's status afterwards ("" skips the check).
	status saga.Status
	// expired says the input times the saga out.
	expired bool
}

// final is a saga's state at the end of a scenario.
type final struct {
	status      saga.Status
	cause       saga.Status
	completed   []string
	compensated []string
	err         string
}

// run applies ops to the first saga of h, checking each.
func run(t *testing.T, h *harness, ops []op) {
	t.Helper()
	id := firstID
	for i, o := range ops {
		before := h.snapshot(id)
		h.out.Reset()
		err := o.do(h, id)
		if o.err != nil {
			require.ErrorIs(t, err, o.err, "op %d", i)
		} else {
			require.NoError(t, err, "op %d", i)
		}
		if o.err != nil || o.same {
			requireEmptyOutbox(t, &h.out)
			require.Equal(t, before, h.snapshot(id), "op %d changed the saga", i)
			continue
		}
		require.Equal(t, o.cmds, sentOf(h.out.Commands), "op %d: commands", i)
		require.Equal(t, o.events, statusesOf(h.out.Events), "op %d: events", i)
		for _, ev := range h.out.Events {
			require.Equal(t, messages.Event{V: messages.Version, SagaID: id, Saga: "subsidy",
				Status: ev.Status, Tick: h.e.Tick(), Reason: ev.Reason}, ev, "op %d: event", i)
		}
		for _, x := range h.out.Changed {
			require.Equal(t, id, x.ID, "op %d: changed", i)
		}
		if len(h.out.Commands) > 0 || len(h.out.Events) > 0 {
			require.NotEmpty(t, h.out.Changed, "op %d: a saga that sent or announced something changed", i)
		}
		if o.status != "" {
			require.Equal(t, o.status, h.get(id).Status, "op %d: status", i)
		}
		require.Equal(t, o.expired, slices.Contains(h.out.Expired, id), "op %d: expired", i)
	}
}

func requireEmptyOutbox(t *testing.T, out *saga.Outbox) {
	t.Helper()
	require.Empty(t, out.Commands, "commands")
	require.Empty(t, out.Events, "events")
	require.Empty(t, out.Changed, "changed")
	require.Empty(t, out.Expired, "expired")
}

func nilIfEmpty(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

func (f final) check(t *testing.T, x saga.Execution) {
	t.Helper()
	require.Equal(t, f.status, x.Status, "status")
	require.Equal(t, f.cause, x.Cause, "cause")
	require.Equal(t, f.completed, nilIfEmpty(x.Completed), "completed steps")
	require.Equal(t, f.compensated, nilIfEmpty(x.Compensated), "compensated steps")
	require.Equal(t, f.err, x.Error, "error")
	if f.status.Terminal() && f.status != saga.Failed {
		require.Equal(t, -1, x.Current, "a finished saga has no current step")
		_, ok := x.Command()
		require.False(t, ok, "a finished saga has no outstanding command")
	}
}

// The statuses, shorter.
const (
	inProgress   = saga.InProgress
	compensating = saga.Compensating
	completed    = saga.Completed
	rolledBack   = saga.RolledBack
	timedOut     = saga.TimedOut
	failed       = saga.Failed
)

func evs(s ...saga.Status) []saga.Status { return s }
func cs(s ...sent) []sent                { return s }

var started = op{do: start(), cmds: cs(ex(apply, 1, 1)), events: evs(inProgress), status: inProgress}

func TestScenarios(t *testing.T) {
	slowCompensation := func(d *saga.Definition) {
		d.CompensationRetry = saga.RetryPolicy{MaxAttempts: 2, Backoff: 50 * time.Millisecond, MaxBackoff: time.Second}
	}
	tests := []struct {
		name string
		def  saga.Definition
		ops  []op
		want final
	}{
		{
			name: "happy path: every step completes and its output reaches the next command",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: working(), status: inProgress},
				{do: okWith(messages.Context{}.MustSet("application", "applied")), cmds: cs(ex(eval, 1, 2)), status: inProgress},
				{do: replyTo(1, messages.OK), err: saga.ErrStale},
				{do: check(func(h *harness, id saga.ID) {
					v, err := h.last(id).Context.String("application")
					require.NoError(h.t, err)
					require.Equal(h.t, "applied", v)
					v, err = h.last(id).Context.String("agent_id")
					require.NoError(h.t, err)
					require.Equal(h.t, "household-7", v)
				})},
				{do: okWith(messages.Context{}.MustSet("approved", true)), cmds: cs(ex(deduct, 1, 3))},
				{do: ok(), events: evs(completed), status: completed},
				{do: replyTo(3, messages.OK), err: saga.ErrStale},
				{do: check(func(h *harness, id saga.ID) {
					x := h.get(id)
					require.Equal(h.t, map[string]messages.Context{
						apply:  messages.Context{}.MustSet("application", "applied"),
						eval:   messages.Context{}.MustSet("approved", true),
						deduct: {},
					}, x.Results)
					require.Equal(h.t, messages.Context{}.MustSet("agent_id", "household-7").
						MustSet("application", "applied").MustSet("approved", true), x.Context)
				})},
			},
			want: final{status: completed, completed: []string{apply, eval, deduct}},
		},
		{
			name: "step 2 fails: only step 1 is compensated",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: fail("budget insufficient"), cmds: cs(comp(apply, 1, 3)), events: evs(compensating), status: compensating},
				{do: replyTo(2, messages.Failed), err: saga.ErrStale},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
				{do: check(func(h *harness, id saga.ID) {
					notes := []string{}
					for _, tr := range h.get(id).History {
						notes = append(notes, tr.Note)
					}
					require.Contains(h.t, notes, "step government_evaluates failed: budget insufficient")
				})},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{apply},
				err: "step government_evaluates failed: budget insufficient"},
		},
		{
			name: "step 1 fails: nothing to compensate",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: fail("not eligible"), events: evs(compensating, rolledBack), status: rolledBack},
			},
			want: final{status: rolledBack, cause: rolledBack, err: "step household_applies failed: not eligible"},
		},
		{
			name: "step 3 fails: compensations in reverse order, one at a time",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: ok(), cmds: cs(ex(deduct, 1, 3))},
				{do: fail("not approved"), cmds: cs(comp(eval, 1, 4)), events: evs(compensating), status: compensating},
				{do: outstanding(comp(eval, 1, 4))},
				{do: working(), status: compensating},
				{do: working(), err: saga.ErrStale},
				{do: ok(), cmds: cs(comp(apply, 1, 5)), status: compensating},
				{do: replyTo(4, messages.OK), err: saga.ErrStale},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
				{do: outstanding()},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply, eval},
				compensated: []string{eval, apply}, err: "step budget_deducted failed: not approved"},
		},
		{
			name: "step 1 not answered in time: it is compensated",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: tick(1), status: inProgress},
				{do: tick(2), cmds: cs(comp(apply, 1, 2)), events: evs(compensating), status: compensating, expired: true},
				{do: replyTo(1, messages.OK), err: saga.ErrStale},
				{do: ok(), events: evs(timedOut), status: timedOut},
			},
			want: final{status: timedOut, cause: timedOut, compensated: []string{apply},
				err: "step household_applies not answered within 1 tick"},
		},
		{
			name: "step 2 not answered in time: the step in flight, then the completed ones in reverse",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: tick(1)},
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: tick(2), status: inProgress},
				{do: tick(3), cmds: cs(comp(eval, 1, 3)), events: evs(compensating), status: compensating, expired: true},
				{do: ok(), cmds: cs(comp(apply, 1, 4))},
				{do: tick(4)},
				{do: ok(), events: evs(timedOut), status: timedOut},
			},
			want: final{status: timedOut, cause: timedOut, completed: []string{apply}, compensated: []string{eval, apply},
				err: "step government_evaluates not answered within 1 tick"},
		},
		{
			name: "saga timeout defaults to the sum of the steps' timeouts",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: tick(1)},
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: tick(2)},
				{do: ok(), cmds: cs(ex(deduct, 1, 3))},
				{do: tick(3), status: inProgress},
				{do: tick(4), cmds: cs(comp(deduct, 1, 4)), events: evs(compensating), status: compensating, expired: true},
				{do: ok(), cmds: cs(comp(eval, 1, 5))},
				{do: ok(), cmds: cs(comp(apply, 1, 6))},
				{do: ok(), events: evs(timedOut), status: timedOut},
			},
			want: final{status: timedOut, cause: timedOut, completed: []string{apply, eval},
				compensated: []string{deduct, eval, apply}, err: "saga exceeded its timeout of 3 ticks"},
		},
		{
			name: "explicit saga timeout shorter than the steps' sum",
			def: subsidyDef(func(d *saga.Definition) {
				d.TimeoutTicks = 3
				for i := range d.Steps {
					d.Steps[i].TimeoutTicks = 2
				}
			}),
			ops: []op{
				started,
				{do: tick(1)},
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: tick(3), status: inProgress},
				{do: ok(), cmds: cs(ex(deduct, 1, 3))},
				{do: tick(4), cmds: cs(comp(deduct, 1, 4)), events: evs(compensating), status: compensating, expired: true},
				{do: ok(), cmds: cs(comp(eval, 1, 5))},
				{do: ok(), cmds: cs(comp(apply, 1, 6))},
				{do: ok(), events: evs(timedOut), status: timedOut},
			},
			want: final{status: timedOut, cause: timedOut, completed: []string{apply, eval},
				compensated: []string{deduct, eval, apply}, err: "saga exceeded its timeout of 3 ticks"},
		},
		{
			name: "working clears awaiting without advancing; the step still times out",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: awaiting(1)},
				{do: working(), status: inProgress},
				{do: awaiting(0)},
				{do: outstanding(ex(apply, 1, 1))},
				{do: working(), err: saga.ErrStale},
				{do: tick(1), status: inProgress},
				{do: tick(2), cmds: cs(comp(apply, 1, 2)), events: evs(compensating), status: compensating, expired: true},
				{do: awaiting(1)},
				{do: replyTo(1, messages.OK), err: saga.ErrStale},
				{do: ok(), events: evs(timedOut), status: timedOut},
				{do: awaiting(0)},
			},
			want: final{status: timedOut, cause: timedOut, compensated: []string{apply},
				err: "step household_applies not answered within 1 tick"},
		},
		{
			name: "transient error: retried with backoff, then rolled back compensating the failing step too",
			def: subsidyDef(func(d *saga.Definition) {
				d.Steps[1].Retry = saga.RetryPolicy{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: 150 * time.Millisecond}
			}),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: noWake()},
				{do: transient("kv conflict"), status: inProgress},
				{do: nextWake(100 * time.Millisecond)},
				{do: awaiting(0)},
				{do: outstanding()},
				{do: replyTo(2, messages.Error), err: saga.ErrStale},
				{do: wake(99 * time.Millisecond), same: true},
				{do: wake(100 * time.Millisecond), cmds: cs(ex(eval, 2, 3)), status: inProgress},
				{do: awaiting(1)},
				{do: replyTo(2, messages.Error), err: saga.ErrStale},
				{do: transient("kv conflict")},
				{do: nextWake(250 * time.Millisecond)},
				{do: wake(250 * time.Millisecond), cmds: cs(ex(eval, 3, 4))},
				{do: transient("kv conflict"), cmds: cs(comp(eval, 1, 5)), events: evs(compensating), status: compensating},
				{do: noWake()},
				{do: ok(), cmds: cs(comp(apply, 1, 6))},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{eval, apply},
				err: "step government_evaluates: transient error after 3 attempts: kv conflict"},
		},
		{
			name: "transient error then success",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: transient("nats timeout"), status: inProgress},
				{do: nextWake(saga.DefaultRetry.Backoff)},
				{do: wake(saga.DefaultRetry.Backoff), cmds: cs(ex(apply, 2, 2))},
				{do: ok(), cmds: cs(ex(eval, 1, 3))},
				{do: ok(), cmds: cs(ex(deduct, 1, 4))},
				{do: ok(), events: evs(completed), status: completed},
			},
			want: final{status: completed, completed: []string{apply, eval, deduct}},
		},
		{
			name: "compensation error retried, then failed, then resumed by RetryCompensation",
			def:  subsidyDef(slowCompensation),
			ops: []op{
				started,
				{do: retryCompensation(), err: saga.ErrNotFailed},
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: fail("budget insufficient"), cmds: cs(comp(apply, 1, 3)), events: evs(compensating)},
				{do: transient("ledger unavailable"), status: compensating},
				{do: nextWake(50 * time.Millisecond)},
				{do: wake(50 * time.Millisecond), cmds: cs(comp(apply, 2, 4))},
				{do: transient("ledger unavailable"), events: evs(failed), status: failed},
				{do: errorIs("compensation of household_applies: error: ledger unavailable (after 2 attempts)")},
				{do: noWake()},
				{do: check(func(h *harness, id saga.ID) {
					s := h.e.Summary()
					require.Equal(h.t, 1, s.Failed)
					require.Equal(h.t, 0, s.Active)
					require.Equal(h.t, 0, s.Awaiting)
					require.Equal(h.t, []saga.ID{id}, idsOf(h.e.List(saga.Failed, 0)))
				})},
				{do: replyTo(4, messages.OK), err: saga.ErrStale},
				{do: replyTo(4, messages.OK), err: saga.ErrTerminal},
				{do: abort("give up"), err: saga.ErrTerminal},
				{do: tick(10), status: failed},
				{do: retryCompensation(), cmds: cs(comp(apply, 1, 5)), events: evs(compensating), status: compensating},
				{do: retryCompensation(), err: saga.ErrNotFailed},
				{do: replyTo(3, messages.OK), err: saga.ErrStale}, // attempt 1 of the first round
				{do: ok(), events: evs(rolledBack), status: rolledBack},
				{do: retryCompensation(), err: saga.ErrNotFailed},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{apply},
				err: "step government_evaluates failed: budget insufficient"},
		},
		{
			name: "compensation refused (failed outcome) is retried too, then the saga is failed",
			def:  subsidyDef(slowCompensation),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: fail("budget insufficient"), cmds: cs(comp(apply, 1, 3)), events: evs(compensating)},
				{do: fail("application locked")},
				{do: wake(50 * time.Millisecond), cmds: cs(comp(apply, 2, 4))},
				{do: fail("application locked"), events: evs(failed), status: failed},
				{do: outstanding()},
			},
			want: final{status: failed, cause: rolledBack, completed: []string{apply},
				err: "compensation of household_applies: failed: application locked (after 2 attempts)"},
		},
		{
			name: "a compensation is never timed out by ticks: it waits for its agent",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: fail("budget insufficient"), cmds: cs(comp(apply, 1, 3)), events: evs(compensating)},
				{do: tick(1), status: compensating},
				{do: tick(2), status: compensating},
				{do: tick(50), status: compensating},
				{do: outstanding(comp(apply, 1, 3))},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{apply},
				err: "step government_evaluates failed: budget insufficient"},
		},
		{
			name: "abort compensates the step in flight and the completed ones",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: ok(), cmds: cs(ex(eval, 1, 2))},
				{do: abort("operator"), cmds: cs(comp(eval, 1, 3)), events: evs(compensating), status: compensating},
				{do: replyTo(2, messages.OK), err: saga.ErrStale},
				{do: abort("again"), same: true},
				{do: ok(), cmds: cs(comp(apply, 1, 4))},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
				{do: abort("late"), err: saga.ErrTerminal},
			},
			want: final{status: rolledBack, cause: rolledBack, completed: []string{apply},
				compensated: []string{eval, apply}, err: "aborted: operator"},
		},
		{
			name: "abort during a retry's backoff cancels the retry",
			def:  subsidyDef(),
			ops: []op{
				started,
				{do: transient("busy")},
				{do: abort("operator"), cmds: cs(comp(apply, 1, 2)), events: evs(compensating)},
				{do: wake(time.Hour), same: true},
				{do: noWake()},
				{do: ok(), events: evs(rolledBack), status: rolledBack},
			},
			want: final{status: rolledBack, cause: rolledBack, compensated: []string{apply}, err: "aborted: operator"},
		},
		{
			name: "a tick at or below the current one changes nothing",
			def: subsidyDef(func(d *saga.Definition) {
				for i := range d.Steps {
					d.Steps[i].TimeoutTicks = 10
				}
			}),
			ops: []op{
				started,
				{do: tick(3), status: inProgress},
				{do: tick(3), same: true},
				{do: tick(1), same: true},
				{do: tick(0), same: true},
				{do: check(func(h *harness, _ saga.ID) { require.Equal(h.t, int64(3), h.e.Tick()) })},
			},
			want: final{status: inProgress},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.def)
			run(t, h, tt.ops)
			tt.want.check(t, h.get(firstID))
		})
	}
}

func idsOf(xs []saga.Execution) []saga.ID {
	var ids []saga.ID
	for _, x := range xs {
		ids = append(ids, x.ID)
	}
	return ids
}

func TestRegister(t *testing.T) {
	valid := subsidyDef()
	tests := []struct {
		name string
		def  saga.Definition
		want error
	}{
		{"valid", valid, nil},
		{"second definition", insuranceDef(), nil},
		{"duplicate name", subsidyDef(func(d *saga.Definition) { d.Subject = "subsidy2" }), saga.ErrDuplicateDefinition},
		{"duplicate subject", subsidyDef(func(d *saga.Definition) { d.Name = "other" }), saga.ErrDuplicateDefinition},
		{"subject equal to another's name", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject = "x", "subsidy_application" }), saga.ErrDuplicateDefinition},
		{"empty name", subsidyDef(func(d *saga.Definition) { d.Name = "" }), saga.ErrInvalidDefinition},
		{"subject with a dot", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject = "n1", "a.b" }), saga.ErrInvalidDefinition},
		{"subject with a wildcard", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject = "n2", "a*" }), saga.ErrInvalidDefinition},
		{"empty subject", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject = "n3", "" }), saga.ErrInvalidDefinition},
		{"subject of 65", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject = "n3a", strings.Repeat("s", 65) }), saga.ErrInvalidDefinition},
		{"step name not a key", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[1].Name = "n3b", "s3b", "évalue" }), saga.ErrInvalidDefinition},
		{"role of 65", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[1].Role = "n3c", "s3c", strings.Repeat("r", 65) }), saga.ErrInvalidDefinition},
		{"no steps", saga.Definition{Name: "n4", Subject: "s4"}, saga.ErrInvalidDefinition},
		{"negative saga timeout", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.TimeoutTicks = "n5", "s5", -1 }), saga.ErrInvalidDefinition},
		{"duplicate step", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[2].Name = "n6", "s6", apply }), saga.ErrInvalidDefinition},
		{"step named compensate", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[0].Name = "n7", "s7", "compensate" }), saga.ErrInvalidDefinition},
		{"step name with space", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[0].Name = "n8", "s8", "a b" }), saga.ErrInvalidDefinition},
		{"empty role", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[1].Role = "n9", "s9", "" }), saga.ErrInvalidDefinition},
		{"negative step timeout", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[1].TimeoutTicks = "n10", "s10", -2 }), saga.ErrInvalidDefinition},
		{"negative attempts", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[1].Retry.MaxAttempts = "n11", "s11", -1 }), saga.ErrInvalidDefinition},
		{"a backoff of a million hours", subsidyDef(func(d *saga.Definition) {
			d.Name, d.Subject, d.Steps[1].Retry.MaxBackoff = "n11a", "s11a", 1_000_000*time.Hour
		}), saga.ErrInvalidDefinition},
		{"a negative backoff", subsidyDef(func(d *saga.Definition) { d.Name, d.Subject, d.Steps[0].Retry.Backoff = "n11b", "s11b", -time.Second }), saga.ErrInvalidDefinition},
		{"a compensation backoff over an hour", subsidyDef(func(d *saga.Definition) {
			d.Name, d.Subject, d.CompensationRetry.Backoff = "n11c", "s11c", time.Hour+time.Second
		}), saga.ErrInvalidDefinition},
		{"a role differing only in case", subsidyDef(func(d *saga.Definition) {
			d.Name, d.Subject, d.Steps[1].Role = "n12", "s12", strings.ToUpper(d.Steps[1].Role)
		}), saga.ErrInvalidDefinition},
		{"roles differing only in case within it", saga.Definition{Name: "n13", Subject: "s13", Steps: []saga.Step{
			{Name: "a", Role: "teller"}, {Name: "b", Role: "Teller"},
		}}, saga.ErrInvalidDefinition},
	}
	// The cases run in order against one engine: the duplicates collide
	// with the valid definitions registered first.
	e := saga.New(saga.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := e.Register(tt.def)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
			require.ErrorContains(t, err, tt.def.Name)
		})
	}

	require.Equal(t, 2, e.Summary().Registered)
	hour := subsidyDef(func(d *saga.Definition) {
		d.Steps[1].Retry.MaxBackoff, d.CompensationRetry.MaxBackoff = saga.MaxRetryBackoff, saga.MaxRetryBackoff
	})
	require.NoError(t, hour.Validate(), "a backoff of an hour")
	long := subsidyDef(func(d *saga.Definition) { d.Steps[1].Retry.MaxBackoff = 2 * time.Hour })
	require.ErrorContains(t, long.Validate(), `step "government_evaluates": retry: max_backoff 2h0m0s: more than 1h0m0s`, "the error names the field")
	names := []string{}
	for _, d := range e.Definitions() {
		names = append(names, d.Name)
	}
	require.Equal(t, []string{"insurance_claim", "subsidy_application"}, names)

	byName, ok := e.Definition("subsidy_application")
	require.True(t, ok)
	bySubject, ok := e.Definition("subsidy")
	require.True(t, ok)
	require.Same(t, byName, bySubject)
	_, ok = e.Definition("nope")
	require.False(t, ok)

	// Registration fills in the defaults.
	require.Equal(t, int64(3), byName.TimeoutTicks, "saga timeout is the sum of the steps'")
	for _, s := range byName.Steps {
		require.Equal(t, int64(saga.DefaultTimeoutTicks), s.TimeoutTicks)
		require.Equal(t, saga.DefaultRetry, s.Retry)
	}
	require.Equal(t, saga.DefaultCompensationRetry, byName.CompensationRetry)
	require.Equal(t, []string{"household", "government"}, byName.Roles())
	ins, ok := e.Definition("insurance")
	require.True(t, ok)
	require.Equal(t, int64(3), ins.TimeoutTicks, "an explicit saga timeout is kept")

	// The caller's definition is not changed by registration.
	require.Zero(t, valid.Steps[0].TimeoutTicks)
	require.Zero(t, valid.TimeoutTicks)
}

func TestRetryPolicyDefaults(t *testing.T) {
	// A partial policy keeps what it sets and takes the rest from the default.
	h := newHarness(t, subsidyDef(func(d *saga.Definition) {
		d.Steps[0].Retry = saga.RetryPolicy{MaxAttempts: 4, MaxBackoff: 70 * time.Millisecond}
	}))
	d, ok := h.e.Definition("subsidy")
	require.True(t, ok)
	require.Equal(t, saga.RetryPolicy{MaxAttempts: 4, Backoff: saga.DefaultRetry.Backoff, MaxBackoff: 70 * time.Millisecond}, d.Steps[0].Retry)

	// Backoff doubles from 20ms and stops at 70ms: 20, 40, 70.
	id, err := h.start("", "subsidy", nil)
	require.NoError(t, err)
	elapsed := time.Duration(0)
	for attempt, delay := range []time.Duration{20, 40, 70} {
		require.NoError(t, h.reply(h.last(id), messages.Error, "busy", nil))
		at, ok := h.e.NextWake()
		require.True(t, ok)
		elapsed += delay * time.Millisecond
		require.Equal(t, t0.Add(elapsed), at, "after attempt %d", attempt+1)
		h.wake(at)
		require.Equal(t, cs(ex(apply, attempt+2, attempt+2)), sentOf(h.out.Commands))
	}
	require.NoError(t, h.reply(h.last(id), messages.Error, "busy", nil))
	require.Equal(t, cs(comp(apply, 1, 5)), sentOf(h.out.Commands), "the fourth error exhausts the attempts")
}

func TestStart(t *testing.T) {
	t.Run("unique uuid ids, active, pending then in_progress", func(t *testing.T) {
		e := saga.New(saga.Options{})
		require.NoError(t, e.Register(subsidyDef()))
		var out saga.Outbox
		ids := map[saga.ID]bool{}
		for range 3 {
			out.Reset()
			x, err := e.Start("", "subsidy", nil, &out)
			require.NoError(t, err)
			_, err = uuid.Parse(x.ID)
			require.NoError(t, err, "id %q is a uuid", x.ID)
			require.False(t, ids[x.ID], "id %q is unique", x.ID)
			ids[x.ID] = true

			require.Equal(t, saga.InProgress, x.Status)
			require.Equal(t, "subsidy_application", x.Definition)
			require.Equal(t, "subsidy", x.Saga)
			require.Equal(t, 0, x.Current)
			require.Equal(t, messages.Context{}, x.Context)
			require.Equal(t, []saga.Transition{
				{Tick: 0, Status: saga.Pending},
				{Tick: 0, Status: saga.InProgress},
				{Tick: 0, Status: saga.InProgress, Step: apply, Action: messages.Execute, Attempt: 1},
			}, x.History)
			require.Equal(t, []messages.Command{{V: messages.Version, SagaID: x.ID, Saga: "subsidy", Step: apply,
				Action: messages.Execute, Attempt: 1, Seq: 1, Tick: 0, Context: messages.Context{}}}, out.Commands)
			require.Equal(t, []messages.Event{{V: messages.Version, SagaID: x.ID, Saga: "subsidy", Status: "in_progress"}}, out.Events)
			require.NotEmpty(t, out.Changed)
			require.Same(t, x, out.Changed[len(out.Changed)-1])
		}
		require.Len(t, e.Active(), 3)
		s := e.Summary()
		require.Equal(t, 3, s.Active)
		require.Equal(t, 3, s.Awaiting)
	})

	t.Run("by name or subject, at the current tick", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		h.tick(5)
		id, err := h.start("", "subsidy_application", nil)
		require.NoError(t, err)
		x := h.get(id)
		require.Equal(t, int64(5), x.StartedTick)
		require.Equal(t, int64(5), x.DispatchedTick)
		require.Equal(t, int64(5), h.last(id).Tick)
	})

	t.Run("idempotent with a caller-chosen id", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		id, err := h.start("order-42", "subsidy", messages.Context{}.MustSet("n", 1))
		require.NoError(t, err)
		require.Equal(t, "order-42", id)
		require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))
		before := h.snapshot(id)

		h.out.Reset()
		x, err := h.e.Start("order-42", "subsidy", messages.Context{}.MustSet("n", 2), &h.out)
		require.NoError(t, err)
		require.Equal(t, "order-42", x.ID)
		requireEmptyOutbox(t, &h.out)
		require.Equal(t, before, h.snapshot(id))
		n, err := x.Context.Int64("n")
		require.NoError(t, err)
		require.Equal(t, int64(1), n, "the first start's context stays")
		require.Equal(t, 1, h.e.Summary().Active)
	})

	t.Run("errors", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		_, err := h.start("", "flood_insurance", nil)
		require.ErrorIs(t, err, saga.ErrUnknownDefinition)
		require.EqualError(t, err, `start "flood_insurance" (known: subsidy_application (subsidy)): unknown saga definition`)
		_, err = h.start("bad.id", "subsidy", nil)
		require.ErrorIs(t, err, messages.ErrBadRequest)
		_, err = h.start("bad id", "subsidy", nil)
		require.ErrorIs(t, err, messages.ErrBadRequest)
		require.Empty(t, h.sent)
		require.Equal(t, 0, h.e.Summary().Active)
	})
}

func TestStaleAndBadReplies(t *testing.T) {
	// Each case changes the right reply to the outstanding command (the
	// execute of government_evaluates, seq 2) and must be refused without
	// any change; the right reply still works afterwards.
	tests := []struct {
		name   string
		change func(h *harness, r *messages.Reply)
		want   error
	}{
		{"duplicate of step 1's reply", func(h *harness, r *messages.Reply) {
			*r = messages.ReplyTo(new(h.bySeq(firstID, 1)), messages.OK, "")
		}, saga.ErrStale},
		{"compensate instead of execute", func(_ *harness, r *messages.Reply) { r.Action = messages.Compensate }, saga.ErrStale},
		{"a later step", func(_ *harness, r *messages.Reply) { r.Step = deduct }, saga.ErrStale},
		{"an attempt not yet sent", func(_ *harness, r *messages.Reply) { r.Attempt = 2 }, saga.ErrStale},
		{"an attempt before the current one", func(_ *harness, r *messages.Reply) { r.Attempt = 0 }, saga.ErrStale},
		{"another seq", func(_ *harness, r *messages.Reply) { r.Seq = 1 }, saga.ErrStale},
		{"a seq not yet sent", func(_ *harness, r *messages.Reply) { r.Seq = 3 }, saga.ErrStale},
		{"a step the saga does not have", func(_ *harness, r *messages.Reply) { r.Step = "bribe_official" }, saga.ErrBadReply},
		{"another saga type", func(_ *harness, r *messages.Reply) { r.Saga = "insurance" }, saga.ErrBadReply},
		{"no outcome", func(_ *harness, r *messages.Reply) { r.Outcome = "" }, saga.ErrBadReply},
		{"an outcome that is none of the four", func(_ *harness, r *messages.Reply) { r.Outcome = "done" }, saga.ErrBadReply},
		{"an unknown saga id", func(_ *harness, r *messages.Reply) { r.SagaID = "no-such-saga" }, saga.ErrUnknownSaga},
		{"an empty saga id", func(_ *harness, r *messages.Reply) { r.SagaID = "" }, saga.ErrUnknownSaga},
	}
	for _, tt := range tests {
		for _, outcome := range []messages.Outcome{messages.OK, messages.Failed, messages.Error, messages.Working} {
			t.Run(tt.name+"/"+string(outcome), func(t *testing.T) {
				h := newHarness(t, subsidyDef(), insuranceDef())
				run(t, h, []op{started, {do: ok(), cmds: cs(ex(eval, 1, 2))}})

				r := messages.ReplyTo(new(h.last(firstID)), outcome, "no")
				tt.change(h, &r)
				before := h.snapshot(firstID)
				var err error
				require.NotPanics(t, func() { err = h.apply(r) })
				require.ErrorIs(t, err, tt.want)
				requireEmptyOutbox(t, &h.out)
				require.Equal(t, before, h.snapshot(firstID))

				run(t, h, []op{{do: ok(), cmds: cs(ex(deduct, 1, 3))}})
			})
		}
	}
}

func TestReplyAfterFinish(t *testing.T) {
	t.Run("kept finished: stale and terminal", func(t *testing.T) {
		h := newHarness(t, subsidyDef())
		run(t, h, []op{
			started,
			{do: ok(), cmds: cs(ex(eval, 1, 2))},
			{do: fail("no"), cmds: cs(comp(apply, 1, 3)), events: evs(compensating)},
			{do: ok(), events: evs(rolledBack), status: rolledBack},
		})
		for seq := 1; seq <= 3; seq++ {
			r := messages.ReplyTo(new(h.bySeq(firstID, seq)), messages.OK, "")
			err := h.apply(r)
			require.ErrorIs(t, err, saga.ErrStale)
			require.ErrorIs(t, err, saga.ErrTerminal)
			requireEmptyOutbox(t, &h.out)
		}
	})
	t.Run("not kept: unknown", func(t *testing.T) {
		e := saga.New(saga.Options{})
		require.NoError(t, e.Register(subsidyDef()))
		var out saga.Outbox
		x, err := e.Start("", "subsidy", nil, &out)
		require.NoError(t, err)
		c := out.Commands[0]
		out.Reset()
		require.NoError(t, e.ApplyReply(messages.ReplyTo(&c, messages.Failed, "no"), t0, &out))
		require.Equal(t, evs(compensating, rolledBack), statusesOf(out.Events))
		out.Reset()
		require.ErrorIs(t, e.ApplyReply(messages.ReplyTo(&c, messages.OK, ""), t0, &out), saga.ErrUnknownSaga)
		_, err = e.Get(x.ID)
		require.ErrorIs(t, err, saga.ErrUnknownSaga)
		require.Empty(t, e.List(saga.RolledBack, 0))
		require.Equal(t, 1, e.Summary().RolledBack, "a finished saga is still counted")
	})
}

func TestOperatorErrors(t *testing.T) {
	h := newHarness(t, subsidyDef())
	var out saga.Outbox
	require.ErrorIs(t, h.e.Rollback("ghost", "x", &out), saga.ErrUnknownSaga)
	require.ErrorIs(t, h.e.RetryCompensation("ghost", &out), saga.ErrUnknownSaga)
	_, err := h.e.Get("ghost")
	require.ErrorIs(t, err, saga.ErrUnknownSaga)
	requireEmptyOutbox(t, &out)

	run(t, h, []op{
		started,
		{do: ok(), cmds: cs(ex(eval, 1, 2))},
		{do: ok(), cmds: cs(ex(deduct, 1, 3))},
		{do: ok(), events: evs(completed), status: completed},
	})
	require.ErrorIs(t, h.e.RetryCompensation(firstID, &out), saga.ErrNotFailed)
	require.ErrorIs(t, h.e.Rollback(firstID, "x", &out), saga.ErrTerminal)
	requireEmptyOutbox(t, &out)
}

func TestSummary(t *testing.T) {
	h := newHarness(t, subsidyDef(func(d *saga.Definition) {
		d.CompensationRetry = saga.RetryPolicy{MaxAttempts: 1}
	}), insuranceDef())
	require.Equal(t, messages.Summary{V: messages.Version, Registered: 2}, h.e.Summary())

	mustStart := func(id string) saga.ID {
		got, err := h.start(id, "subsidy", nil)
		require.NoError(t, err)
		return got
	}
	answerLast := func(id saga.ID, o messages.Outcome, reason string) {
		require.NoError(t, h.reply(h.last(id), o, reason, nil))
	}

	done := mustStart("done")
	for range 3 {
		answerLast(done, messages.OK, "")
	}
	rolled := mustStart("rolled")
	answerLast(rolled, messages.Failed, "not eligible")
	broken := mustStart("broken")
	answerLast(broken, messages.OK, "")
	answerLast(broken, messages.Failed, "budget insufficient")
	answerLast(broken, messages.Error, "ledger down")
	waiting := mustStart("waiting")
	answerLast(waiting, messages.Working, "")
	mustStart("late")
	awaitingID := mustStart("awaiting")

	// Eight answers applied: done's three, rolled's, broken's three (an
	// error is an answer) and waiting's working.
	require.Equal(t, messages.Summary{V: messages.Version, Tick: 0, Registered: 2, Active: 3,
		Completed: 1, RolledBack: 1, Failed: 1, Awaiting: 2, Due: 2, Answered: 8}, h.e.Summary())

	// "late" and "awaiting" expire at tick 2; "waiting" too: working does
	// not stop the clock.
	answerLast(awaitingID, messages.OK, "") // still one step in flight
	h.tick(2)
	require.Equal(t, []saga.ID{"waiting", "late", "awaiting"}, h.out.Expired)
	for _, id := range h.out.Expired {
		answerLast(id, messages.OK, "")
	}
	answerLast(awaitingID, messages.OK, "")
	require.Equal(t, messages.Summary{V: messages.Version, Tick: 2, Registered: 2, Active: 0,
		Completed: 1, RolledBack: 1, TimedOut: 3, Failed: 1, Awaiting: 0, Answered: 13}, h.e.Summary())

	require.Equal(t, []saga.ID{"done"}, idsOf(h.e.List(saga.Completed, 0)))
	require.Equal(t, []saga.ID{"rolled"}, idsOf(h.e.List(saga.RolledBack, 0)))
	require.Equal(t, []saga.ID{"broken"}, idsOf(h.e.List(saga.Failed, 0)))
	require.Equal(t, []saga.ID{"awaiting", "late", "waiting"}, idsOf(h.e.List(saga.TimedOut, 0)))
	require.Equal(t, []saga.ID{"awaiting", "late"}, idsOf(h.e.List(saga.TimedOut, 2)))
	require.Empty(t, h.e.List("", 0))
	require.Empty(t, h.e.Active())
}

func TestListAndActive(t *testing.T) {
	h := newHarness(t, subsidyDef(func(d *saga.Definition) {
		for i := range d.Steps {
			d.Steps[i].TimeoutTicks = 10
		}
	}))
	for i, id := range []string{"c", "a", "b"} {
		h.tick(int64(i + 1))
		_, err := h.start(id, "subsidy", nil)
		require.NoError(t, err)
	}
	_, err := h.start("a2", "subsidy", nil) // same tick as b, sorted by id
	require.NoError(t, err)
	require.NoError(t, h.reply(h.last("b"), messages.Failed, "no", nil))

	require.Equal(t, []saga.ID{"c", "a", "a2"}, idsOf(h.e.Active()), "oldest first")
	require.Equal(t, []saga.ID{"c", "a", "a2"}, idsOf(h.e.List("", 0)))
	require.Equal(t, []saga.ID{"c", "a"}, idsOf(h.e.List("", 2)))
	require.Equal(t, []saga.ID{"c", "a", "a2"}, idsOf(h.e.List(saga.InProgress, 0)))
	require.Empty(t, h.e.List(saga.Compensating, 0))
	require.Equal(t, []saga.ID{"b"}, idsOf(h.e.List(saga.RolledBack, 0)))

	// Copies: changing one changes nothing in the engine.
	x := h.e.Active()[0]
	x.Context["injected"] = json.RawMessage(`1`)
	x.History[0].Note = "rewritten"
	x.Completed = append(x.Completed, "forged")
	y := h.get(x.ID)
	require.NotContains(t, y.Context, "injected")
	require.Empty(t, y.History[0].Note)
	require.Empty(t, y.Completed)
}

func TestConcurrentSagasDoNotInterfere(t *testing.T) {
	h := newHarness(t, subsidyDef())
	a, err := h.start("saga-a", "subsidy", messages.Context{}.MustSet("agent_id", "household-a"))
	require.NoError(t, err)
	b, err := h.start("saga-b", "subsidy", messages.Context{}.MustSet("agent_id", "household-b"))
	require.NoError(t, err)

	steps := []struct {
		id      saga.ID
		outcome messages.Outcome
		output  messages.Context
		want    []sent
	}{
		{a, messages.OK, messages.Context{}.MustSet("application", "a"), cs(ex(eval, 1, 2).of(a))},
		{b, messages.OK, messages.Context{}.MustSet("application", "b"), cs(ex(eval, 1, 2).of(b))},
		{b, messages.Failed, nil, cs(comp(apply, 1, 3).of(b))},
		{a, messages.OK, nil, cs(ex(deduct, 1, 3).of(a))},
		{b, messages.OK, nil, nil},
		{a, messages.OK, nil, nil},
	}
	for i, s := range steps {
		require.NoError(t, h.reply(h.last(s.id), s.outcome, "budget insufficient", s.output), "step %d", i)
		require.Equal(t, s.want, sentOf(h.out.Commands), "step %d", i)
		for _, c := range h.out.Commands {
			agent, err := c.Context.String("agent_id")
			require.NoError(t, err)
			require.Equal(t, "household-"+s.id[len("saga-"):], agent, "step %d: each saga keeps its own context", i)
			app, err := c.Context.String("application")
			require.NoError(t, err)
			require.Equal(t, s.id[len("saga-"):], app)
		}
	}
	final{status: completed, completed: []string{apply, eval, deduct}}.check(t, h.get(a))
	final{status: rolledBack, cause: rolledBack, completed: []string{apply}, compensated: []string{apply},
		err: "step government_evaluates failed: budget insufficient"}.check(t, h.get(b))

	// Timeouts at the same tick expire both, in the order they were started.
	c, err := h.start("saga-c", "subsidy", nil)
	require.NoError(t, err)
	d, err := h.start("saga-d", "subsidy", nil)
	require.NoError(t, err)
	h.tick(2)
	require.Equal(t, []saga.ID{c, d}, h.out.Expired)
	require.Equal(t, cs(comp(apply, 1, 2).of(c), comp(apply, 1, 2).of(d)), sentOf(h.out.Commands))
}

func TestRestore(t *testing.T) {
	def := subsidyDef(func(d *saga.Definition) { d.CompensationRetry = saga.RetryPolicy{MaxAttempts: 1} })

	// Build one engine with a saga in each state, as a coordinator would
	// have them stored.
	h := newHarness(t, def)
	mustStart := func(id string) {
		_, err := h.start(id, "subsidy", messages.Context{}.MustSet("amount_cents", int64(500000)))
		require.NoError(t, err)
	}
	answerLast := func(id saga.ID, o messages.Outcome, output messages.Context) {
		require.NoError(t, h.reply(h.last(id), o, "why", output))
	}
	mustStart("a-midway") // step 2 outstanding
	h.tick(1)
	answerLast("a-midway", messages.OK, messages.Context{}.MustSet("application", "applied"))
	mustStart("b-backoff") // step 1 waiting to be retried
	answerLast("b-backoff", messages.Error, nil)
	mustStart("c-done")
	for range 3 {
		answerLast("c-done", messages.OK, nil)
	}
	mustStart("d-failed") // compensation failed
	answerLast("d-failed", messages.OK, nil)
	answerLast("d-failed", messages.Failed, nil)
	answerLast("d-failed", messages.Error, nil)
	mustStart("e-working") // step 1 accepted
	answerLast("e-working", messages.Working, nil)

	stored := func() [][]byte {
		var all []saga.Execution
		all = append(all, h.e.Active()...)
		all = append(all, h.e.List(saga.Failed, 0)...)
		all = append(all, h.e.List(saga.Completed, 0)...)
		var out [][]byte
		for _, x := range all {
			b, err := json.Marshal(x)
			require.NoError(t, err)
			out = append(out, b)
		}
		return out
	}()
	require.Len(t, stored, 5)

	restore := func(t *testing.T) *harness {
		r := newHarness(t, def)
		for _, b := range stored {
			var x saga.Execution
			require.NoError(t, json.Unmarshal(b, &x))
			require.NoError(t, r.e.Restore(x, h.e.Tick()))
			require.NoError(t, r.e.Restore(x, 0), "restoring twice is harmless")
		}
		// The coordinator resends the outstanding commands.
		r.sent = append(slices.Clone(h.sent), r.e.Outstanding()...)
		return r
	}

	t.Run("same state and outstanding commands", func(t *testing.T) {
		r := restore(t)
		sum := h.e.Summary()
		require.Equal(t, int64(9), sum.Answered)
		sum.Answered = 0 // counted from the start of a term: none applied by the restored one yet
		require.Equal(t, sum, r.e.Summary())
		// The restored sagas keep their sequence numbers.
		require.Equal(t, cs(ex(eval, 1, 2).of("a-midway"), ex(apply, 1, 1).of("e-working")), sentOf(h.e.Outstanding()))
		require.Equal(t, sentOf(h.e.Outstanding()), sentOf(r.e.Outstanding()),
			"a saga in backoff has nothing outstanding")
		require.Equal(t, 1, r.e.Summary().Awaiting)
		got, ok := r.e.NextWake()
		require.True(t, ok)
		want, _ := h.e.NextWake()
		require.Equal(t, want, got)
		for _, id := range []saga.ID{"a-midway", "b-backoff", "c-done", "d-failed", "e-working"} {
			x, err := r.e.Get(id)
			require.NoError(t, err)
			y := h.get(id)
			require.Equal(t, y.Status, x.Status, id)
			require.Equal(t, y.History, x.History, id)
			require.Equal(t, y.Context, x.Context, id)
			require.Equal(t, y.Completed, x.Completed, id)
		}
	})

	t.Run("continues with replies and retries", func(t *testing.T) {
		r := restore(t)
		require.NoError(t, r.reply(r.last("a-midway"), messages.OK, "", nil))
		require.Equal(t, cs(ex(deduct, 1, 3).of("a-midway")), sentOf(r.out.Commands))
		app, err := r.out.Commands[0].Context.String("application")
		require.NoError(t, err)
		require.Equal(t, "applied", app, "the restored context carries earlier output")
		require.NoError(t, r.reply(r.last("a-midway"), messages.OK, "", nil))
		require.Equal(t, saga.Completed, r.get("a-midway").Status)

		r.wake(t0.Add(saga.DefaultRetry.Backoff))
		require.Equal(t, cs(ex(apply, 2, 2).of("b-backoff")), sentOf(r.out.Commands))

		require.NoError(t, r.reply(r.last("e-working"), messages.OK, "", nil))
		require.Equal(t, cs(ex(eval, 1, 2).of("e-working")), sentOf(r.out.Commands))

		r.out.Reset()
		require.NoError(t, r.e.RetryCompensation("d-failed", &r.out))
		require.Equal(t, cs(comp(apply, 1, 4).of("d-failed")), sentOf(r.out.Commands))
	})

	t.Run("timeouts still fire", func(t *testing.T) {
		r := restore(t)
		r.tick(2)
		require.Empty(t, r.out.Expired, "the restored clock is at tick 1; nothing is due yet")
		r.tick(3)
		expired := []saga.ID{"a-midway", "b-backoff", "e-working"}
		require.Equal(t, expired, r.out.Expired)
		// The restored sagas compensate what the original ones do.
		require.Equal(t, cs(comp(eval, 1, 3).of("a-midway"), comp(apply, 1, 2).of("b-backoff"), comp(apply, 1, 2).of("e-working")),
			sentOf(r.out.Commands))
		h.tick(3)
		require.Equal(t, expired, h.out.Expired)
		require.Equal(t, sentOf(r.out.Commands), sentOf(h.out.Commands))
	})

	t.Run("errors", func(t *testing.T) {
		var x saga.Execution
		require.NoError(t, json.Unmarshal(stored[0], &x))
		e := saga.New(saga.Options{})
		require.ErrorIs(t, e.Restore(x, 0), saga.ErrUnknownDefinition)
		require.NoError(t, e.Register(def))
		bad := x
		bad.Current = 3
		require.ErrorIs(t, e.Restore(bad, 0), saga.ErrInvalidDefinition)
		bad = x
		bad.Status = "lost"
		require.ErrorIs(t, e.Restore(bad, 0), saga.ErrInvalidDefinition)
		// Stored sagas no engine writes: each stopped the engine, or held
		// it for ever, as it sent the outstanding command.
		for _, tc := range []struct {
			name string
			edit func(*saga.Execution)
			want string
		}{
			{"a step below -1", func(x *saga.Execution) {
				x.Status, x.Current, x.Action, x.RetryAt = saga.Compensating, -5, messages.Compensate, time.Unix(1, 0)
			}, "step -5 of 3"},
			{"compensating no step", func(x *saga.Execution) { x.Status, x.Current, x.Action = saga.Compensating, -1, messages.Compensate }, "outstanding command is the compensate"},
			{"in progress no step", func(x *saga.Execution) { x.Current = -1 }, "outstanding command is the execute"},
			{"compensating an execute", func(x *saga.Execution) { x.Status = saga.Compensating }, `action "execute"`},
			{"in progress another action", func(x *saga.Execution) { x.Action = "undo" }, `action "undo"`},
			{"failed on an execute", func(x *saga.Execution) { x.Status = saga.Failed }, "a failed saga's outstanding command is a compensation"},
			{"an unknown cause", func(x *saga.Execution) { x.Cause = saga.Completed }, `cause "completed"`},
			{"a negative attempt", func(x *saga.Execution) { x.Attempt = -1 }, "attempt -1"},
			{"a negative seq", func(x *saga.Execution) { x.Seq = -1 }, "seq -1"},
			{"a step it does not have", func(x *saga.Execution) { x.Completed = []string{"fly"} }, `step "fly": not a step of`},
		} {
			bad := x
			require.Equal(t, saga.InProgress, bad.Status, "the stored saga edited")
			tc.edit(&bad)
			err := e.Restore(bad, 0)
			require.ErrorIs(t, err, saga.ErrInvalidDefinition, tc.name)
			require.ErrorContains(t, err, tc.want, tc.name)
		}
		require.Empty(t, e.Active())
		var out saga.Outbox
		e.Wake(time.Unix(2, 0), &out)
		requireEmptyOutbox(t, &out)

		// A failed saga with no compensation to resume cannot be retried.
		odd := x
		odd.Status, odd.Current = saga.Failed, -1
		require.NoError(t, e.Restore(odd, 0))
		require.ErrorIs(t, e.RetryCompensation(odd.ID, &out), saga.ErrNotFailed)
		requireEmptyOutbox(t, &out)
	})
}

// TestRestoreCompensating checks that a saga restored while compensating
// keeps its outstanding compensation, and that ticks do not time it out.
func TestRestoreCompensating(t *testing.T) {
	h := newHarness(t, subsidyDef())
	run(t, h, []op{
		started,
		{do: tick(2), cmds: cs(comp(apply, 1, 2)), events: evs(compensating), expired: true},
		{do: tick(4)},
	})
	b, err := json.Marshal(h.get(firstID))
	require.NoError(t, err)
	var x saga.Execution
	require.NoError(t, json.Unmarshal(b, &x))
	r := newHarness(t, subsidyDef())
	require.NoError(t, r.e.Restore(x, h.e.Tick()))
	require.Equal(t, h.e.Outstanding(), r.e.Outstanding())
	for _, e := range []*harness{h, r} {
		e.tick(40)
		require.Empty(t, e.out.Commands, "ticks never resend a compensation")
	}
}

func TestRetriesOfSeveralSagas(t *testing.T) {
	h := newHarness(t, subsidyDef())
	a, err := h.start("a", "subsidy", nil)
	require.NoError(t, err)
	b, err := h.start("b", "subsidy", nil)
	require.NoError(t, err)
	c, err := h.start("c", "subsidy", nil)
	require.NoError(t, err)

	h.now = t0.Add(5 * time.Millisecond)
	require.NoError(t, h.reply(h.last(a), messages.Error, "busy", nil)) // retry at 25ms
	h.now = t0
	require.NoError(t, h.reply(h.last(b), messages.Error, "busy", nil)) // retry at 20ms
	h.now = t0.Add(time.Second)
	require.NoError(t, h.reply(h.last(c), messages.Error, "busy", nil)) // retry at 1.02s

	at, ok := h.e.NextWake()
	require.True(t, ok)
	require.Equal(t, t0.Add(20*time.Millisecond), at)
	h.wake(t0.Add(30 * time.Millisecond))
	require.Equal(t, cs(ex(apply, 2, 2).of(b), ex(apply, 2, 2).of(a)), sentOf(h.out.Commands), "due retries, earliest first")
	at, ok = h.e.NextWake()
	require.True(t, ok)
	require.Equal(t, t0.Add(time.Second+20*time.Millisecond), at)
}

func TestExecutionCommand(t *testing.T) {
	h := newHarness(t, subsidyDef())
	run(t, h, []op{started})
	x := h.get(firstID)
	c, ok := x.Command()
	require.True(t, ok)
	require.Equal(t, h.last(firstID), c)

	run(t, h, []op{{do: transient("busy")}})
	x = h.get(firstID)
	_, ok = x.Command()
	require.False(t, ok, "no command while waiting to retry")

	var zero saga.Execution
	_, ok = zero.Command()
	require.False(t, ok)
}

func TestStatus(t *testing.T) {
	tests := []struct {
		s               saga.Status
		valid, terminal bool
	}{
		{saga.Pending, true, false},
		{saga.InProgress, true, false},
		{saga.Compensating, true, false},
		{saga.Completed, true, true},
		{saga.RolledBack, true, true},
		{saga.TimedOut, true, true},
		{saga.Failed, true, true},
		{"paused", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		require.Equal(t, tt.valid, tt.s.Valid(), tt.s)
		require.Equal(t, tt.terminal, tt.s.Terminal(), tt.s)
	}
}

func TestOutboxReset(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.tick(0)
	_, err := h.start("", "subsidy", nil)
	require.NoError(t, err)
	h.tick(2)
	require.NotEmpty(t, h.out.Commands)
	require.NotEmpty(t, h.out.Events)
	require.NotEmpty(t, h.out.Changed)
	require.NotEmpty(t, h.out.Expired)
	h.out.Reset()
	require.Empty(t, h.out.Commands)
	require.Empty(t, h.out.Events)
	require.Empty(t, h.out.Changed)
	require.Empty(t, h.out.Expired)
}

// floodAgents plays the household and government agents of the subsidy
// saga: the government's budget (in cents) is shared by every saga.
type floodAgents struct {
	budget       int64
	applications map[saga.ID]string
	approved     map[saga.ID]bool
}

func (a *floodAgents) handle(t *testing.T, c messages.Command) messages.Reply {
	require.NoError(t, c.Validate())
	cost, err := c.Context.Int64("subsidy_cost_cents")
	require.NoError(t, err)
	out := messages.Context{}
	fail := func(reason string) messages.Reply { return messages.ReplyTo(&c, messages.Failed, reason) }
	switch c.Step + "/" + string(c.Action) {
	case apply + "/execute":
		a.applications[c.SagaID] = "pending"
		agent, err := c.Context.String("agent_id")
		require.NoError(t, err)
		out.MustSet("applied_by", agent)
	case apply + "/compensate":
		a.applications[c.SagaID] = "cancelled"
	case eval + "/execute":
		if a.budget < cost {
			return fail("budget insufficient")
		}
		a.approved[c.SagaID] = true
		out.MustSet("approved", true)
	case eval + "/compensate":
		delete(a.approved, c.SagaID)
	case deduct + "/execute":
		if !a.approved[c.SagaID] {
			return fail("not approved")
		}
		if a.budget < cost {
			return fail("budget insufficient")
		}
		a.budget -= cost
		out.MustSet("budget_remaining_cents", a.budget)
	case deduct + "/compensate":
		a.budget += cost
	default:
		require.FailNow(t, "unexpected command", "%+v", c)
	}
	r := messages.ReplyTo(&c, messages.OK, "")
	r.Output = out
	return r
}

func TestIntegrationSubsidy(t *testing.T) {
	// Two households apply at once for a 5,000.00 subsidy; the budget of
	// 7,000.00 covers only the first.
	h := newHarness(t, subsidyDef())
	agents := &floodAgents{budget: 700000, applications: map[saga.ID]string{}, approved: map[saga.ID]bool{}}
	ctx := func(agent string) messages.Context {
		return messages.Context{}.MustSet("agent_id", agent).MustSet("subsidy_cost_cents", int64(500000))
	}
	first, err := h.start("", "subsidy", ctx("household-1"))
	require.NoError(t, err)
	queue := append([]messages.Command(nil), h.out.Commands...)
	second, err := h.start("", "subsidy", ctx("household-2"))
	require.NoError(t, err)
	queue = append(queue, h.out.Commands...)

	var trace []sent
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		trace = append(trace, sentOf([]messages.Command{c})...)
		require.NoError(t, h.apply(agents.handle(t, c)))
		queue = append(queue, h.out.Commands...)
	}

	require.Equal(t, cs(
		ex(apply, 1, 1).of(first), ex(apply, 1, 1).of(second),
		ex(eval, 1, 2).of(first), ex(eval, 1, 2).of(second),
		ex(deduct, 1, 3).of(first), ex(deduct, 1, 3).of(second),
		comp(eval, 1, 4).of(second), comp(apply, 1, 5).of(second),
	), trace)
	// The second saga was approved while the budget still held 7,000.00,
	// then found it spent: its approval and application were undone.

	x := h.get(first)
	final{status: completed, completed: []string{apply, eval, deduct}}.check(t, x)
	remaining, err := x.Context.Int64("budget_remaining_cents")
	require.NoError(t, err)
	require.Equal(t, int64(200000), remaining)
	require.Equal(t, messages.Context{}.MustSet("budget_remaining_cents", int64(200000)), x.Results[deduct])

	final{status: rolledBack, cause: rolledBack, completed: []string{apply, eval}, compensated: []string{eval, apply},
		err: "step budget_deducted failed: budget insufficient"}.check(t, h.get(second))
	require.Equal(t, int64(200000), agents.budget, "only the first subsidy was paid")
	require.Equal(t, map[saga.ID]string{first: "pending", second: "cancelled"}, agents.applications)
	require.Equal(t, map[saga.ID]bool{first: true}, agents.approved)
	require.Equal(t, messages.Summary{V: messages.Version, Registered: 1, Completed: 1, RolledBack: 1, Answered: 8}, h.e.Summary())
}

// TestNewIDIsChecked: an id Options.NewID makes that breaks the rule of
// identifiers refuses the start, naming the fault as the program's; the
// engine holds nothing of it. (A saga it held could not be asked for, and
// was lost at a restart.)
func TestNewIDIsChecked(t *testing.T) {
	for _, bad := range []string{"", "has space", "a.b", "x*", strings.Repeat("l", messages.MaxTokenLen+1)} {
		e := saga.New(saga.Options{NewID: func() string { return bad }})
		require.NoError(t, e.Register(subsidyDef()))
		var out saga.Outbox
		_, err := e.Start("", "subsidy_application", nil, &out)
		require.ErrorIs(t, err, saga.ErrBadNewID, "%q", bad)
		require.NotErrorIs(t, err, messages.ErrBadRequest, "the request was not at fault")
		require.Empty(t, e.Active())
		requireEmptyOutbox(t, &out)
	}
}
