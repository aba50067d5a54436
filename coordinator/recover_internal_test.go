package coordinator

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestBucketHeadFinished: only a finished status other than failed, with a
// tick, lets recovery count a saga without reading its value.
func TestBucketHeadFinished(t *testing.T) {
	for _, tc := range []struct {
		name         string
		status, tick []string
		want         bool
	}{
		{"completed", []string{"completed"}, []string{"7"}, true},
		{"rolled back at tick 0", []string{"rolled_back"}, []string{"0"}, true},
		{"timed out", []string{"timed_out"}, []string{"12"}, true},
		{"failed: held in memory, read", []string{"failed"}, []string{"7"}, false},
		{"active: read", []string{"in_progress"}, []string{"7"}, false},
		{"no headers: written before them", nil, nil, false},
		{"no tick", []string{"completed"}, nil, false},
		{"tick not a number", []string{"completed"}, []string{"7x"}, false},
		{"negative tick", []string{"completed"}, []string{"-1"}, false},
		{"not a status", []string{"done"}, []string{"7"}, false},
		{"status twice", []string{"completed", "completed"}, []string{"7"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string][]string{}
			if tc.status != nil {
				h[messages.SagaStatusHeader] = tc.status
			}
			if tc.tick != nil {
				h[messages.SagaTickHeader] = tc.tick
			}
			head := headOf(messages.BucketSubject(messages.SagaKey("s-1")), 9, h)
			require.Equal(t, messages.SagaKey("s-1"), head.key)
			require.Equal(t, uint64(9), head.rev)
			require.Equal(t, tc.want, head.finished())
			if tc.want {
				require.Equal(t, saga.Status(tc.status[0]), head.status)
			}
		})
	}
}
