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
// adds the sagas it ends, so that, as only the active coordinator writes
// the bucket, it also knows when it holds every saga of a status (then a
// list of fewer than asked is answered from it too). It is a hint: a key
// that has expired since, or holds another status, is found so when its
// value is read, and the list then reads the headers as before. It is safe for concurrent use: the
// loop writes it, the reads of lists read it. An add costs about 100 ns
// (BenchmarkEndedIndexAdd, on the 2-core VM of BENCHMARKS.md).
type endedIndex struct {
	mu     sync.Mutex
	latest map[saga.Status][]bucketHead // each by revision, oldest first
	// whole holds the statuses of which the index holds every saga the
	// bucket does: none was trimmed, and the recovery met no saga entry
	// it could not place (one without the status headers, written by a
	// coordinator before them). Lost by expiry only, which a list finds.
	whole map[saga.Status]bool
}

// endedIndexed is how many keys the index keeps for each status.
const endedIndexed = MaxFinishedList + 1

// reset empties the index, for a new term's recovery: until told
// otherwise (unplaced), it holds every such saga of the bucket.
func (ix *endedIndex) reset() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.latest = map[saga.Status][]bucketHead{}
	ix.whole = map[saga.Status]bool{saga.Completed: true, saga.RolledBack: true, saga.TimedOut: true}
}

// unplaced notes a saga entry of the bucket the recovery could not place:
// the index may lack sagas of any status.
func (ix *endedIndex) unplaced() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	clear(ix.whole)
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
		delete(ix.whole, st)
		return // older than the endedIndexed latest
	}
	heads = slices.Insert(heads, i, bucketHead{key: key, rev: rev, status: st})
	if len(heads) >= 2*endedIndexed {
		// Trimmed once every endedIndexed adds, not at each: a copy of
		// the ones kept, so the slice does not grow without bound.
		heads = append(heads[:0:0], heads[len(heads)-endedIndexed:]...)
		delete(ix.whole, st)
	}
	ix.latest[st] = heads
}

// subjects returns the bucket subjects of the latest n sagas that ended
// with st, oldest first, or of all of them when the index holds every one
// and they are fewer; ok is false, and subjects nil, when it cannot tell
// which they are.
func (ix *endedIndex) subjects(st saga.Status, n int) (subjects []string, ok bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	heads := ix.latest[st]
	if n <= 0 || (len(heads) < n && !ix.whole[st]) {
		return nil, false
	}
	out := make([]string, 0, min(n, len(heads)))
	for _, h := range heads[max(0, len(heads)-n):] {
		out = append(out, messages.BucketSubject(h.key))
	}
	return out, true
}
