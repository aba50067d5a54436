package coordinator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestEndedIndex keeps, for each status a saga ends with in the bucket,
// at least the latest endedIndexed keys by revision (at most twice as
// many), whatever the order they come in. It answers n of them when it
// holds that many, and fewer only while it holds every one of the status.
func TestEndedIndex(t *testing.T) {
	var ix endedIndex
	ix.reset()
	some := func(st saga.Status, n int) []string {
		t.Helper()
		subjects, ok := ix.subjects(st, n)
		require.True(t, ok, "%s, %d", st, n)
		return subjects
	}
	require.Empty(t, some(saga.Completed, 1), "none yet, and it knows it")
	key := func(i int) string { return messages.SagaKey(fmt.Sprintf("s-%d", i)) }
	subject := func(i int) string { return messages.BucketSubject(key(i)) }
	// Revisions 10, 20, ... one status in three timed out; 45 comes late.
	for i := 1; i <= 2*endedIndexed; i++ {
		st := saga.Completed
		if i%3 == 0 {
			st = saga.TimedOut
		}
		ix.add(st, key(i), uint64(10*i))
	}
	ix.add(saga.TimedOut, key(-45), 45)
	ix.add(saga.Failed, key(-1), 1_000_000)
	ix.add(saga.InProgress, key(-2), 1_000_001)

	require.Equal(t, []string{subject(2*endedIndexed - 3), subject(2*endedIndexed - 2), subject(2 * endedIndexed)},
		some(saga.Completed, 3), "the latest, oldest first")
	var latest []string
	for i := 2 * endedIndexed; len(latest) < endedIndexed; i-- {
		if i%3 != 0 {
			latest = append([]string{subject(i)}, latest...)
		}
	}
	require.Equal(t, latest, some(saga.Completed, endedIndexed), "at least the latest endedIndexed")
	require.LessOrEqual(t, len(ix.latest[saga.Completed]), 2*endedIndexed, "and at most twice as many")
	require.Equal(t, 2*endedIndexed-2*endedIndexed/3, len(some(saga.Completed, 2*endedIndexed)), "all 1,335: none was trimmed yet")
	// 667 timed out, and the late one, in its place by revision: every
	// one, so asked for more, it answers them all.
	timedOut := some(saga.TimedOut, 2*endedIndexed/3+1)
	require.Equal(t, []string{subject(3), subject(-45), subject(6)}, timedOut[:3])
	require.Equal(t, timedOut, some(saga.TimedOut, endedIndexed))
	require.Empty(t, some(saga.RolledBack, 10))
	_, ok := ix.subjects(saga.Failed, 1)
	require.False(t, ok, "failed sagas stay in memory")
	_, ok = ix.subjects(saga.InProgress, 1)
	require.False(t, ok)
	// A key older than the endedIndexed latest is not kept: then it
	// cannot tell every completed saga.
	ix.add(saga.Completed, key(-3), 5)
	require.NotContains(t, some(saga.Completed, endedIndexed), subject(-3))
	_, ok = ix.subjects(saga.Completed, 2*endedIndexed)
	require.False(t, ok, "asked for more than it holds")
	require.Equal(t, endedIndexed, len(some(saga.Completed, endedIndexed)))

	// A saga entry the recovery could not place: the index may lack
	// sagas of any status, and answers only when it holds n.
	ix.unplaced()
	_, ok = ix.subjects(saga.TimedOut, endedIndexed)
	require.False(t, ok)
	require.Equal(t, 10, len(some(saga.TimedOut, 10)))

	ix.reset()
	require.Empty(t, some(saga.Completed, 1))
}

// BenchmarkEndedIndexAdd adds the end of a saga, as each commit does, to
// an index that holds its fill already.
func BenchmarkEndedIndexAdd(b *testing.B) {
	var ix endedIndex
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = messages.SagaKey(fmt.Sprintf("s-%d", i))
	}
	for i := range 2 * endedIndexed {
		ix.add(saga.Completed, keys[i%len(keys)], uint64(i+1))
	}
	rev := uint64(2 * endedIndexed)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		rev++
		ix.add(saga.Completed, keys[i%len(keys)], rev)
	}
}

// TestTermPauseGrowsWhileTermsFail: a term that served starts the next
// after half a second; terms that end before they serve (a server out of
// storage, an account at its limits: each reads the saga log anew) wait
// twice as long each time, up to 4 s.
func TestTermPauseGrowsWhileTermsFail(t *testing.T) {
	for failed, want := range map[int]time.Duration{
		1: 500 * time.Millisecond, 2: time.Second, 3: 2 * time.Second, 4: 4 * time.Second,
		5: 4 * time.Second, 60: 4 * time.Second, 1 << 40: 4 * time.Second,
	} {
		require.Equal(t, want, termPauseAfter(failed), "after %d failed terms", failed)
	}
}
