package saga

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"sync"

	"github.com/natsaga/natsaga/messages"
)

// OutcomeLine is what the determinism contract of a simulation run promises
// about one saga (see docs/simulation.md): one line of an outcome log. It
// leaves out everything the contract does not cover: wall-clock times,
// attempts, sequence numbers and the history of deliveries.
type OutcomeLine struct {
	ID     ID     `json:"saga_id"`
	Saga   string `json:"saga"`
	Rank   int64  `json:"rank"`
	Status Status `json:"status"`
	// Reason is why the saga rolled back, timed out or failed.
	Reason    string `json:"reason,omitempty"`
	StartTick int64  `json:"start_tick"`
	// EndTick is the tick of the saga's final status; 0 while it is active.
	EndTick     int64    `json:"end_tick"`
	Completed   []string `json:"completed_steps"`
	Compensated []string `json:"compensated_steps,omitempty"`
	// Context is the saga's final context: what it started with (the
	// household, for a flood saga) and the output of every step, which
	// holds every amount moved.
	Context messages.Context `json:"context"`
}

// Outcome returns x's line of the outcome log.
func (x *Execution) Outcome() OutcomeLine {
	o := OutcomeLine{ID: x.ID, Saga: x.Saga, Rank: x.Rank, Status: x.Status, Reason: x.Error,
		StartTick: x.StartedTick, Completed: x.Completed, Compensated: x.Compensated, Context: x.Context}
	if o.Completed == nil {
		o.Completed = []string{}
	}
	if o.Context == nil {
		o.Context = messages.Context{}
	}
	if x.Status.Terminal() && len(x.History) > 0 {
		o.EndTick = x.History[len(x.History)-1].Tick
	}
	return o
}

// OutcomeLog returns the outcome log of xs: one JSON line per saga, sorted
// by id, each line what json.Marshal writes for its [OutcomeLine], and the
// SHA-256 of those bytes in hex. Two runs that promise the same outcomes
// have the same log, byte for byte. It returns an error when a context
// value is not valid JSON.
func OutcomeLog(xs []Execution) (log []byte, digest string, err error) {
	return OutcomeLogWith(xs, func(dst []byte, o *OutcomeLine) ([]byte, error) {
		b, err := json.Marshal(o)
		return append(dst, b...), err
	})
}

// OutcomeLogWith is [OutcomeLog] with each line appended by appendLine,
// which must write exactly the bytes json.Marshal writes for it: a faster
// encoder, for the logs of large runs. The lines are encoded side by side
// in chunks, one goroutine a core, and joined in order, so appendLine must
// be safe for concurrent use; the log is the same bytes as one encoder
// would write. On errors, the first line's in the log's order is
// returned.
func OutcomeLogWith(xs []Execution, appendLine func(dst []byte, o *OutcomeLine) ([]byte, error)) (log []byte, digest string, err error) {
	// The sagas are put in order by pointer, and each goroutine makes
	// the lines of its chunk: at 100,000 households (745,742 sagas),
	// sorting the lines themselves moved them about 20 times each.
	order := make([]*Execution, len(xs))
	for i := range xs {
		order[i] = &xs[i]
	}
	slices.SortFunc(order, func(a, b *Execution) int { return cmp.Compare(a.ID, b.ID) })
	chunks := slices.Collect(slices.Chunk(order, outcomeChunk))
	parts := make([][]byte, len(chunks))
	errs := make([]error, len(chunks))
	var wg sync.WaitGroup
	cores := make(chan struct{}, runtime.GOMAXPROCS(0))
	for c, chunk := range chunks {
		cores <- struct{}{}
		wg.Go(func() {
			defer func() { <-cores }()
			var b []byte
			for i, x := range chunk {
				line := x.Outcome()
				var err error
				if b, err = appendLine(b, &line); err != nil {
					errs[c] = fmt.Errorf("outcome of %s: %w", line.ID, err)
					return
				}
				b = append(b, '\n')
				if i == 0 {
					// Room for the chunk, at the first line's length and
					// a quarter more, instead of growing it line by line;
					// at most outcomeChunkBytes, should the first line be
					// a large one.
					b = slices.Grow(b, min(len(b)*len(chunk)*5/4, outcomeChunkBytes))
				}
			}
			parts[c] = b
		})
	}
	wg.Wait()
	size := 0
	for c := range parts {
		if errs[c] != nil {
			return nil, "", errs[c]
		}
		size += len(parts[c])
	}
	if len(parts) == 1 {
		log = parts[0]
	} else {
		log = make([]byte, 0, size)
		for _, p := range parts {
			log = append(log, p...)
		}
	}
	sum := sha256.Sum256(log)
	return log, hex.EncodeToString(sum[:]), nil
}

// outcomeChunk is how many lines of an outcome log one goroutine encodes:
// enough to be worth a goroutine, few enough that a large run's log is
// shared among the cores.
const outcomeChunk = 4096

// outcomeChunkBytes bounds the room made for a chunk's lines before they
// are written: 4 MiB, about 1 KiB a line.
const outcomeChunkBytes = 4 << 20
