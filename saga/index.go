package saga

import (
	"container/heap"
	"time"
)

// deadline is an entry of the tick index: saga id timed out at a tick,
// either as a whole or in its current step (valid while gen matches).
type deadline struct {
	id    ID
	gen   int
	whole bool
}

// deadlineIndex buckets deadlines by tick, with a min-heap of the ticks that
// have a bucket: finding what falls due costs O(log B) per bucket plus O(1)
// per deadline, and a tick with nothing due costs O(1).
type deadlineIndex struct {
	buckets map[int64][]deadline
	ticks   tickHeap
}

func (ix *deadlineIndex) add(at int64, d deadline) {
	b, ok := ix.buckets[at]
	if !ok {
		heap.Push(&ix.ticks, at)
	}
	ix.buckets[at] = append(b, d)
}

// due calls fn for every deadline at or before tick, removing them. fn may
// add deadlines, for later ticks.
func (ix *deadlineIndex) due(tick int64, fn func(deadline)) {
	for len(ix.ticks) > 0 && ix.ticks[0] <= tick {
		at := heap.Pop(&ix.ticks).(int64)
		b := ix.buckets[at]
		delete(ix.buckets, at)
		for _, d := range b {
			fn(d)
		}
	}
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
