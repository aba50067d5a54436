package saga_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// subsidyV2 is version 2 of the subsidy saga: two steps, the evaluation
// with a timeout of 3 ticks.
func subsidyV2() saga.Definition {
	return subsidyDef(func(d *saga.Definition) {
		d.Version = 2
		d.Steps = []saga.Step{
			{Name: apply, Role: "household", Compensation: "cancel_application"},
			{Name: eval, Role: "government", Compensation: "undo_approval", TimeoutTicks: 3},
		}
	})
}

func TestUpdateNeverChangesARunningSaga(t *testing.T) {
	h := newHarness(t, subsidyDef())
	old, err := h.start("old", "subsidy", nil)
	require.NoError(t, err)
	require.NoError(t, h.reply(h.last(old), messages.OK, "", nil))
	require.Equal(t, int64(1), h.get(old).Version)

	latest, err := h.e.Update(subsidyV2())
	require.NoError(t, err)
	require.True(t, latest)

	// The old saga goes on by version 1: three steps, each timing out
	// after 1 tick.
	require.NoError(t, h.reply(h.last(old), messages.OK, "", nil))
	require.Equal(t, ex(deduct, 1, 3).of(old), sentOf([]messages.Command{h.last(old)})[0])
	require.NoError(t, h.reply(h.last(old), messages.OK, "", nil))
	x := h.get(old)
	require.Equal(t, saga.Completed, x.Status)
	require.Equal(t, []string{apply, eval, deduct}, x.Completed)
	require.Equal(t, int64(1), x.Version)

	// A saga started now runs by version 2: two steps, the second with
	// its 3-tick timeout.
	fresh, err := h.start("fresh", "subsidy", nil)
	require.NoError(t, err)
	require.Equal(t, int64(2), h.get(fresh).Version)
	require.NoError(t, h.reply(h.last(fresh), messages.OK, "", nil))
	h.tick(2)
	require.Equal(t, saga.InProgress, h.get(fresh).Status, "version 2's evaluation may take 3 ticks")
	require.NoError(t, h.reply(h.last(fresh), messages.OK, "", nil))
	x = h.get(fresh)
	require.Equal(t, saga.Completed, x.Status)
	require.Equal(t, []string{apply, eval}, x.Completed)
}

func TestRestoreUsesTheSagasVersion(t *testing.T) {
	h := newHarness(t, subsidyDef())
	id, err := h.start("s1", "subsidy", nil)
	require.NoError(t, err)
	require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))
	require.NoError(t, h.reply(h.last(id), messages.OK, "", nil))
	stored := h.get(id)

	// A restarted engine learns version 2 first, then version 1 from the
	// store: version 2 stays the latest, and the stored saga runs by 1.
	e := saga.New(saga.Options{KeepFinished: true})
	latest, err := e.Update(subsidyV2())
	require.NoError(t, err)
	require.True(t, latest)
	latest, err = e.Update(subsidyDef())
	require.NoError(t, err)
	require.False(t, latest)
	d, _ := e.Definition("subsidy")
	require.Equal(t, int64(2), d.Version)
	d, ok := e.DefinitionOf(&stored)
	require.True(t, ok)
	require.Equal(t, int64(1), d.Version)
	require.Len(t, d.Steps, 3)
	unversioned := stored
	unversioned.Version = 0
	d, ok = e.DefinitionOf(&unversioned)
	require.True(t, ok)
	require.Equal(t, int64(2), d.Version, "a saga stored before versions existed runs by the latest")
	unknown := stored
	unknown.Version = 3
	_, ok = e.DefinitionOf(&unknown)
	require.False(t, ok)
	require.NoError(t, e.Restore(stored, 0))
	e.Resume(&saga.Outbox{})
	x, err := e.Get(id)
	require.NoError(t, err)
	c, ok := x.Command()
	require.True(t, ok)
	require.Equal(t, deduct, c.Step, "version 1's third step, which version 2 has not")
	var out saga.Outbox
	require.NoError(t, e.ApplyReply(messages.ReplyTo(&c, messages.OK, ""), t0, &out))
	x, err = e.Get(id)
	require.NoError(t, err)
	require.Equal(t, saga.Completed, x.Status)
	require.Equal(t, []string{apply, eval, deduct}, x.Completed)
}

func TestUpdateRefusesAChangedVersion(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(subsidyDef()))
	latest, err := e.Update(subsidyDef())
	require.NoError(t, err, "the same version with the same content changes nothing")
	require.False(t, latest)

	_, err = e.Update(subsidyDef(func(d *saga.Definition) { d.TimeoutTicks = 9 }))
	require.ErrorIs(t, err, saga.ErrDuplicateDefinition)

	_, err = e.Update(subsidyDef(func(d *saga.Definition) { d.Version = 3; d.Subject = "grant" }))
	require.ErrorIs(t, err, saga.ErrInvalidDefinition)

	// A definition named as another's subject would take that subject
	// over: the wire fuzzer found this one.
	_, err = e.Update(subsidyDef(func(d *saga.Definition) { d.Name = "subsidy"; d.Steps = d.Steps[:1] }))
	require.ErrorIs(t, err, saga.ErrDuplicateDefinition)
	d, ok := e.Definition("subsidy")
	require.True(t, ok)
	require.Equal(t, "subsidy_application", d.Name)

	// A step keeps its role in every version: only its role's consumer
	// may take its commands. Renamed, it may go to another role.
	_, err = e.Update(subsidyDef(func(d *saga.Definition) { d.Version = 2; d.Steps[1].Role = "auditor" }))
	require.ErrorIs(t, err, saga.ErrDuplicateDefinition)
	require.ErrorContains(t, err, `step "government_evaluates" is role "government"'s in version 1, not "auditor"'s`)
	require.ErrorIs(t, err, saga.ErrStepMoved)
	// A version stored before the rule is reloaded as stored.
	moved := saga.New(saga.Options{})
	require.NoError(t, moved.Register(subsidyDef()))
	_, err = moved.Reload(subsidyDef(func(d *saga.Definition) { d.Version = 2; d.Steps[1].Role = "auditor" }))
	require.NoError(t, err)
	_, err = e.Update(subsidyDef(func(d *saga.Definition) { d.Version = 2; d.Steps[1].Role = "auditor"; d.Steps[1].Name = "audit" }))
	require.NoError(t, err)
}

// TestRestoreKeepsTheClockOfTheStoredSagas restores a saga whose last
// transition happened at tick 3 with a stored clock of 0 (a crash kept the
// saga's change and lost the clock's): the engine's clock is 3, so the
// saga does not end at a tick before one it has seen.
func TestRestoreKeepsTheClockOfTheStoredSagas(t *testing.T) {
	h := newHarness(t, subsidyDef())
	h.tick(3)
	id, err := h.start("s1", "subsidy", nil)
	require.NoError(t, err)
	stored := h.get(id)

	e := saga.New(saga.Options{KeepFinished: true})
	require.NoError(t, e.Register(subsidyDef()))
	require.NoError(t, e.Restore(stored, 0))
	e.Resume(&saga.Outbox{})
	require.Equal(t, int64(3), e.Tick())
	x, err := e.Get(id)
	require.NoError(t, err)
	c, ok := x.Command()
	require.True(t, ok)
	var out saga.Outbox
	for _, step := range []string{apply, eval, deduct} {
		require.Equal(t, step, c.Step)
		out.Reset()
		require.NoError(t, e.ApplyReply(messages.ReplyTo(&c, messages.OK, ""), t0, &out))
		if len(out.Commands) > 0 {
			c = out.Commands[0]
		}
	}
	x, err = e.Get(id)
	require.NoError(t, err)
	require.Equal(t, saga.Completed, x.Status)
	require.Equal(t, int64(3), x.Outcome().EndTick)
}

// TestRestoreClock: the clock restored is the later of the clock stored
// and the last tick of every saga restored, in whichever order they come.
func TestRestoreClock(t *testing.T) {
	for _, tc := range []struct {
		name            string
		clock, finished int64
		want            int64
	}{
		{"clock ahead of the sagas", 12, 9, 12},
		{"a saga ahead of the clock", 5, 9, 9},
		{"no clock stored", 0, 9, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, clockFirst := range []bool{true, false} {
				e := saga.New(saga.Options{})
				if clockFirst {
					e.RestoreClock(tc.clock)
				}
				require.NoError(t, e.RestoreFinished(saga.Completed, tc.finished))
				if !clockFirst {
					e.RestoreClock(tc.clock)
				}
				e.Resume(&saga.Outbox{})
				require.Equal(t, tc.want, e.Tick(), "clock restored first: %v", clockFirst)
			}
		})
	}
}

// TestRestoreFinished counts a finished saga known by its status and last
// tick alone, as Restore counts one whose whole state it has, and refuses
// a status that needs the whole state.
func TestRestoreFinished(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(subsidyDef()))
	require.NoError(t, e.RestoreFinished(saga.Completed, 4))
	require.NoError(t, e.RestoreFinished(saga.Completed, 9))
	require.NoError(t, e.RestoreFinished(saga.RolledBack, 2))
	require.NoError(t, e.RestoreFinished(saga.TimedOut, 7))
	for _, st := range []saga.Status{saga.Failed, saga.InProgress, saga.Pending, saga.Compensating, "done"} {
		require.Error(t, e.RestoreFinished(st, 1), st)
	}
	e.Resume(&saga.Outbox{})
	sum := e.Summary()
	require.Equal(t, int64(9), sum.Tick, "the clock at least at the last tick of a finished saga")
	require.Equal(t, 2, sum.Completed)
	require.Equal(t, 1, sum.RolledBack)
	require.Equal(t, 1, sum.TimedOut)
	require.Zero(t, sum.Failed)
	require.Zero(t, sum.Active)
}
