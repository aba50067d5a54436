package saga

import (
	"container/heap"
	"slices"
	"time"
)

// deadline is an entry of the tick index: at a tick, saga id times out as a
// whole or in its current step (valid while gen matches), starts (its start
// was scheduled), or has its working command fall due (valid while gen
// matches).
type deadline struct {
	id   ID
	gen  int
	kind deadlineKind
}

// deadlineKind says what a deadline does when its tick comes.
type deadlineKind uint8

const (
	stepDeadline deadlineKind = iota
	wholeDeadline
	startDeadline
	dueDeadline
)

// deadlineIndex buckets deadlines by tick, with a min-heap of the ticks that
// have a bucket: finding what falls due costs O(log B) per bucket plus O(1)
// per deadline, and a tick with nothing due costs O(1).
//
// A deadline superseded before its tick (its step answered, its saga
// finished) stays until its tick comes or compact drops it.
type deadlineIndex struct {
	buckets map[int64][]deadline
	ticks   tickHeap
	// n counts the deadlines held, superseded ones included.
	n int
}

func (ix *deadlineIndex) add(at int64, d deadline) {
	b, ok := ix.buckets[at]
	if !ok {
		heap.Push(&ix.ticks, at)
	}
	ix.buckets[at] = append(b, d)
	ix.n++
}

// due calls fn for every deadline at or before tick, with the tick it was
// due at, removing them. fn may add deadlines, for later ticks.
func (ix *deadlineIndex) due(tick int64, fn func(at int64, d deadline)) {
	for len(ix.ticks) > 0 && ix.ticks[0] <= tick {
		at := heap.Pop(&ix.ticks).(int64)
		b := ix.buckets[at]
		delete(ix.buckets, at)
		ix.n -= len(b)
		for _, d := range b {
			fn(at, d)
		}
	}
}

// compact drops the deadlines keep rejects, and the buckets left empty. It
// costs O(n + B log B) for n deadlines in B buckets.
func (ix *deadlineIndex) compact(keep func(deadline) bool) {
	ix.ticks = ix.ticks[:0]
	ix.n = 0
	for at, b := range ix.buckets {
		kept := b[:0]
		for _, d := range b {
			if keep(d) {
				kept = append(kept, d)
			}
		}
		clear(b[len(kept):]) // let go of the ids
		if len(kept) == 0 {
			delete(ix.buckets, at)
			continue
		}
		if cap(kept) > 2*len(kept)+8 {
			kept = slices.Clone(kept)
		}
		ix.buckets[at] = kept
		ix.ticks = append(ix.ticks, at)
		ix.n += len(kept)
	}
	heap.Init(&ix.ticks)
}

type tickHeap []int64

func (h tickHeap) Len() int           { return len(h) }
func (h tickHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h tickHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *tickHeap) Push(x any)        { *h = append(*h, x.(int64)) }
func (h *tickHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}

// retry is a command to resend at a wall-clock time, valid while the saga's
// sequence number is still seq.
type retry struct {
	at  time.Time
	id  ID
	seq int
}

type retryHeap []retry

func (h retryHeap) Len() int           { return len(h) }
func (h retryHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h retryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *retryHeap) Push(x any)        { *h = append(*h, x.(retry)) }
func (h *retryHeap) Pop() any {
	old := *h
	v := old[len(old)-1]
	*h = old[:len(old)-1]
	return v
}
func (h *retryHeap) push(r retry) { heap.Push(h, r) }
func (h *retryHeap) pop() retry   { return heap.Pop(h).(retry) }
func (h retryHeap) peek() retry   { return h[0] }
