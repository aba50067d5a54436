package coordinator

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestEndedIndex keeps, for each status a saga ends with in the bucket,
// at least the latest endedIndexed keys by revision (at most twice as
// many), whatever the order they come in, and answers a count only when it
// holds that many.
func TestEndedIndex(t *testing.T) {
	var ix endedIndex
	require.Nil(t, ix.subjects(saga.Completed, 1), "empty")
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
		ix.subjects(saga.Completed, 3), "the latest, oldest first")
	var latest []string
	for i := 2 * endedIndexed; len(latest) < endedIndexed; i-- {
		if i%3 != 0 {
			latest = append([]string{subject(i)}, latest...)
		}
	}
	require.Equal(t, latest, ix.subjects(saga.Completed, endedIndexed), "at least the latest endedIndexed")
	require.LessOrEqual(t, len(ix.latest[saga.Completed]), 2*endedIndexed, "and at most twice as many")
	// 667 timed out, and the late one, in its place by revision.
	timedOut := ix.subjects(saga.TimedOut, 2*endedIndexed/3+1)
	require.Equal(t, []string{subject(3), subject(-45), subject(6)}, timedOut[:3])
	require.Nil(t, ix.subjects(saga.TimedOut, 2*endedIndexed/3+2))
	require.Nil(t, ix.subjects(saga.Failed, 1), "failed sagas stay in memory")
	require.Nil(t, ix.subjects(saga.InProgress, 1))
	// A key older than every one kept of a full status is not kept.
	ix.add(saga.Completed, key(-3), 5)
	require.NotContains(t, ix.subjects(saga.Completed, endedIndexed), subject(-3))

	ix.reset()
	require.Nil(t, ix.subjects(saga.Completed, 1))
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
