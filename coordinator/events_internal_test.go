package coordinator

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

func TestGroupEvents(t *testing.T) {
	// ev is an event of saga id, of type "pay" unless saga says, to
	// status: "id/status" names it in the batches.
	type ev struct{ id, saga, status string }
	done := func(id string) ev { return ev{id, "pay", "completed"} }
	// many is n sagas completed, "s0" to "s<n-1>", and the batches
	// they make at most MaxBatch at a time.
	many := func(n int) ([]ev, string) {
		var evs []ev
		var batches []string
		for i := range n {
			evs = append(evs, done(fmt.Sprintf("s%d", i)))
			sep := " "
			if i > 0 && i%messages.MaxBatch == 0 {
				sep = " | "
			}
			batches = append(batches, sep+evs[i].id+"/completed")
		}
		return evs, strings.TrimPrefix(strings.Join(batches, ""), " ")
	}
	tooMany, tooManyBatches := many(messages.MaxBatch + 1)
	for _, tc := range []struct {
		name     string
		events   []ev
		maxBytes int
		want     string
	}{
		{"one saga type and status", []ev{done("a"), done("b"), done("c")}, 1000,
			"a/completed b/completed c/completed"},
		{"by status, in the order each first came",
			[]ev{done("a"), {"b", "pay", "in_progress"}, done("c"), {"d", "pay", "in_progress"}}, 1000,
			"a/completed c/completed | b/in_progress d/in_progress"},
		{"by saga type", []ev{done("a"), {"b", "other", "completed"}, done("c")}, 1000,
			"a/completed c/completed | b/completed"},
		{"a saga's events keep their order",
			// b's rolled_back may not join a's batch, which comes before
			// the batch of b's compensating.
			[]ev{{"a", "pay", "rolled_back"}, {"b", "pay", "compensating"}, {"b", "pay", "rolled_back"}, {"c", "pay", "compensating"}}, 1000,
			"a/rolled_back | b/compensating c/compensating | b/rolled_back"},
		{"at most maxBytes", []ev{done("a"), done("b"), done("c")}, eventBatchOverhead + 2*(10+1),
			"a/completed b/completed | c/completed"},
		{"at most MaxBatch", tooMany, 1 << 20, tooManyBatches},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var events []messages.Event
			var encoded [][]byte
			for _, e := range tc.events {
				events = append(events, messages.Event{SagaID: e.id, Saga: e.saga, Status: e.status})
				encoded = append(encoded, make([]byte, 10))
			}
			var batches []string
			for _, g := range groupEvents(events, encoded, tc.maxBytes) {
				var names []string
				for _, i := range g {
					names = append(names, events[i].SagaID+"/"+events[i].Status)
				}
				batches = append(batches, strings.Join(names, " "))
			}
			require.Equal(t, tc.want, strings.Join(batches, " | "))
		})
	}
}
