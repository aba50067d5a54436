package participant

import (
	"testing"

	"github.com/natsaga/natsaga/messages"
)

// BenchmarkCalls measures what the slow-handler watch costs a handler
// call. On the 2-core VM of BENCHMARKS.md (2026-12-05, other work
// running): 37 ns and no allocation a call on one goroutine, 71 to 121 ns
// with two goroutines at once; a map under a mutex with the time a call
// began, tried first, took 205 ns and two allocations on one goroutine
// and 913 ns with two.
func BenchmarkCalls(b *testing.B) {
	a := &Agent{calls: newCalls(129)}
	cmd := &messages.Command{}
	b.Run("serial", func(b *testing.B) {
		for range b.N {
			a.calls.end(a, a.calls.begin(cmd))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				a.calls.end(a, a.calls.begin(cmd))
			}
		})
	})
}
