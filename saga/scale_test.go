package saga_test

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// What the engine's costs grow with: in-flight sagas cost memory, not time
// per tick; a tick costs time in proportion to what it expires; finished
// sagas cost nothing once gone.

// uuidLike makes ids as long as the UUIDs the engine makes by default.
func uuidLike(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }

// withActive returns an engine holding n active sagas of the subsidy
// definition changed by mods, each waiting for its first step, started at
// tick 0 with an empty context.
func withActive(tb testing.TB, n int, mods ...func(*saga.Definition)) *saga.Engine {
	tb.Helper()
	e := saga.New(saga.Options{})
	require.NoError(tb, e.Register(subsidyDef(mods...)))
	var out saga.Outbox
	for i := range n {
		out.Reset()
		_, err := e.Start(uuidLike(i), "subsidy", nil, &out)
		require.NoError(tb, err)
	}
	return e
}

// heapPerSaga returns the live heap that n active sagas take, per saga.
func heapPerSaga(tb testing.TB, n int) float64 {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e := withActive(tb, n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Equal(tb, n, e.Summary().Active)
	runtime.KeepAlive(e)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// TestMemoryPerActiveSaga checks that an active saga, its id and its
// deadlines take at most 2 KiB of the engine's memory, its context aside.
func TestMemoryPerActiveSaga(t *testing.T) {
	per := heapPerSaga(t, 20_000)
	t.Logf("%.0f bytes per active saga", per)
	require.Less(t, per, 2048.0)
}

// BenchmarkMemoryPerActiveSaga reports the live heap per saga with 100,000
// active sagas.
func BenchmarkMemoryPerActiveSaga(b *testing.B) {
	for b.Loop() {
		b.ReportMetric(heapPerSaga(b, 100_000), "bytes/saga")
	}
}

// BenchmarkTickExpiringNothing advances the clock over 100,000 active
// sagas whose deadlines are far away: each tick finds nothing due.
func BenchmarkTickExpiringNothing(b *testing.B) {
	e := withActive(b, 100_000, func(d *saga.Definition) {
		for i := range d.Steps {
			d.Steps[i].TimeoutTicks = 1 << 40
		}
	})
	var out saga.Outbox
	tick := int64(0)
	for b.Loop() {
		tick++
		e.AdvanceTick(tick, &out)
	}
	require.Empty(b, out.Expired)
	require.Equal(b, 100_000, e.Summary().Active)
}

// BenchmarkTickExpiring times a tick that times out E of 100,000 active
// sagas (the others have far deadlines), and reports its cost per expired
// saga, which should not depend on E.
func BenchmarkTickExpiring(b *testing.B) {
	for _, expiring := range []int{1_000, 10_000, 100_000} {
		b.Run("E="+strconv.Itoa(expiring), func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := saga.New(saga.Options{})
				require.NoError(b, e.Register(subsidyDef()))
				far := insuranceDef()
				far.TimeoutTicks = 1 << 40
				for i := range far.Steps {
					far.Steps[i].TimeoutTicks = 1 << 40
				}
				require.NoError(b, e.Register(far))
				var out saga.Outbox
				for j := range 100_000 {
					def := "insurance"
					if j < expiring {
						def = "subsidy"
					}
					_, err := e.Start(uuidLike(j), def, nil, &out)
					require.NoError(b, err)
				}
				// A coordinator reuses its outbox, which keeps its capacity.
				out = saga.Outbox{Commands: make([]messages.Command, 0, expiring), Events: make([]messages.Event, 0, expiring),
					Changed: make([]*saga.Execution, 0, 3*expiring), Expired: make([]saga.ID, 0, expiring)}
				runtime.GC() // the setup's garbage is not the tick's
				b.StartTimer()
				began := time.Now()
				e.AdvanceTick(2, &out)
				total += time.Since(began)
				b.StopTimer()
				require.Len(b, out.Expired, expiring)
				require.Len(b, out.Commands, expiring)
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N*expiring), "ns/expired-saga")
		})
	}
}

// TestFinishedSagasLeaveNoDeadlines checks that sagas that finish, with no
// tick ever coming, do not pile up in the tick index: the engine's memory
// follows the sagas in flight, not those done.
func TestFinishedSagasLeaveNoDeadlines(t *testing.T) {
	e := saga.New(saga.Options{RecentlyFinished: 1})
	require.NoError(t, e.Register(subsidyDef()))
	var out saga.Outbox
	run := func(n int) {
		for i := range n {
			out.Reset()
			_, err := e.Start("", "subsidy", nil, &out)
			require.NoError(t, err)
			for step := 0; step < 3; step++ {
				r := messages.ReplyTo(&out.Commands[0], messages.OK, "")
				out.Reset()
				require.NoError(t, e.ApplyReply(r, t0, &out))
			}
			require.Equal(t, saga.Completed, out.Changed[len(out.Changed)-1].Status, "saga %d", i)
		}
	}
	run(5_000)
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	run(50_000)
	runtime.GC()
	runtime.ReadMemStats(&b)
	grew := int64(b.HeapAlloc) - int64(a.HeapAlloc)
	t.Logf("heap grew by %d bytes over 50,000 finished sagas", grew)
	require.Less(t, grew, int64(1<<20), "finished sagas are still held")
	require.Zero(t, e.Summary().Active)
}

// TestTimeoutsSurviveCompaction checks that the deadlines of sagas in flight
// outlive the compactions that thousands of finishing sagas cause.
func TestTimeoutsSurviveCompaction(t *testing.T) {
	e := saga.New(saga.Options{})
	require.NoError(t, e.Register(subsidyDef()))
	var out saga.Outbox
	waiting := map[string]bool{}
	for i := range 10 {
		out.Reset()
		x, err := e.Start("", "subsidy", nil, &out)
		require.NoError(t, err)
		waiting[x.ID] = true
		if i%2 == 0 {
			// Half of them are on their second step: a newer deadline.
			r := messages.ReplyTo(&out.Commands[0], messages.OK, "")
			out.Reset()
			require.NoError(t, e.ApplyReply(r, t0, &out))
		}
	}
	for range 3_000 {
		out.Reset()
		_, err := e.Start("", "subsidy", nil, &out)
		require.NoError(t, err)
		for range 3 {
			r := messages.ReplyTo(&out.Commands[0], messages.OK, "")
			out.Reset()
			require.NoError(t, e.ApplyReply(r, t0, &out))
		}
	}
	out.Reset()
	e.AdvanceTick(10, &out)
	require.Len(t, out.Expired, len(waiting))
	for _, id := range out.Expired {
		require.True(t, waiting[id], id)
	}
}

// BenchmarkSagaThroughEngine runs one subsidy saga through the engine a
// loop: its start with a two-key context, and an ok answer with a
// one-key output for each of its three steps, as the coordinator's loop
// applies them (the engine's own cost of a saga, no I/O).
func BenchmarkSagaThroughEngine(b *testing.B) {
	e := saga.New(saga.Options{MaxContext: messages.MaxContext})
	require.NoError(b, e.Register(subsidyDef()))
	ctx := messages.Context{}.MustSet("household_id", "h-0042").MustSet("subsidy_cost", 500000)
	output := messages.Context{}.MustSet("approved", true)
	var out saga.Outbox
	now := time.Unix(0, 0)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		out.Reset()
		x, err := e.Start(uuidLike(i), "subsidy", ctx.Clone(), &out)
		if err != nil {
			b.Fatal(err)
		}
		for range 3 {
			cmd := out.Commands[len(out.Commands)-1]
			r := messages.ReplyTo(&cmd, messages.OK, "")
			r.Output = output
			out.Reset()
			if err := e.ApplyReply(r, now, &out); err != nil {
				b.Fatal(err)
			}
		}
		if x.Status != saga.Completed {
			b.Fatalf("saga %s", x.Status)
		}
	}
}
