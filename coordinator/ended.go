package coordinator

import (
	"slices"
	"sync"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// endedIndex holds, for each status a saga ends with in the bucket
// (completed, rolled_back, timed_out), the keys and revisions of the
// latest of them, at least MaxFinishedList+1: what a list of finished sagas
// answers, with one more to tell that more are stored. A list of a status
// that few sagas end with, read from the bucket's headers alone, read
// every one of them in a bucket of hundreds of thousands (3.8 s for 4,204
// timed out among 745,742); from the index it reads the values it answers.
// The recovery fills it from the headers it reads anyway, and each commit
// adds the sagas it ends. It is a hint: a key that has expired since, or
// holds another status, is found so when its value is read, and the list
// then reads the headers as before. It is safe for concurrent use: the
// loop writes it, the reads of lists read it. An add costs about 100 ns
// (BenchmarkEndedIndexAdd, on the 2-core VM of BENCHMARKS.md).
type endedIndex struct {
	mu     sync.Mutex
	latest map[saga.Status][]bucketHead // each by revision, oldest first
}

// endedIndexed is how many keys the index keeps for each status.
const endedIndexed = MaxFinishedList + 1

// reset empties the index, for a new term's recovery.
func (ix *endedIndex) reset() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.latest = map[saga.Status][]bucketHead{}
}

// add notes that key, at revision rev of the bucket, holds a saga that
// ended with st. Statuses that do not end a saga in the bucket (failed,
// which stays in memory, and the active ones) are not kept.
func (ix *endedIndex) add(st saga.Status, key string, rev uint64) {
	if !st.Terminal() || st == saga.Failed {
		return
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.latest == nil {
		ix.latest = map[saga.Status][]bucketHead{}
	}
	heads := ix.latest[st]
	// Commits and recoveries come in revision order: appending is the rule.
	i := len(heads)
	for i > 0 && heads[i-1].rev > rev {
		i--
	}
	if len(heads) >= endedIndexed && i <= len(heads)-endedIndexed {
		return // older than the endedIndexed latest
	}
	heads = slices.Insert(heads, i, bucketHead{key: key, rev: rev, status: st})
	if len(heads) >= 2*endedIndexed {
		// Trimmed once every endedIndexed adds, not at each: a copy of
		// the ones kept, so the slice does not grow without bound.
		heads = append(heads[:0:0], heads[len(heads)-endedIndexed:]...)
	}
	ix.latest[st] = heads
}

// subjects returns the bucket subjects of the latest n sagas that ended
// with st, oldest first, or nil when the index holds fewer than n.
func (ix *endedIndex) subjects(st saga.Status, n int) []string {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	heads := ix.latest[st]
	if n <= 0 || len(heads) < n {
		return nil
	}
	out := make([]string, 0, n)
	for _, h := range heads[len(heads)-n:] {
		out = append(out, messages.BucketSubject(h.key))
	}
	return out
}
