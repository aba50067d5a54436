package saga

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// TestShed drops, call by call, the history but its essential
// transitions, then the step outputs (noted), then all but the start of
// the error, and then nothing.
func TestShed(t *testing.T) {
	history := []Transition{
		{Tick: 1, Status: Pending},
		{Tick: 1, Status: InProgress, Step: "a", Action: messages.Execute},
		{Tick: 2, Status: InProgress, Step: "b", Action: messages.Execute},
		{Tick: 3, Status: Compensating, Note: "step b failed: no"},
		{Tick: 3, Status: Compensating, Step: "a", Action: messages.Compensate},
		{Tick: 4, Status: RolledBack},
	}
	longError := strings.Repeat("é", 300) // 600 bytes, cut at a rune's start
	for _, tc := range []struct {
		name    string
		x       Execution
		want    []string // what each call leaves, until one reports false
		dropped int
	}{
		{"everything", Execution{History: history, HistoryDropped: 2, Error: longError,
			Results: map[string]messages.Context{"a": messages.Context{}.MustSet("k", 1)}},
			[]string{
				"history 1 3 4, results 1, error 600",
				"history 1 3 4 4, results 0, error 600",
				"history 1 3 4, results 0, error 600", // the note is the last now
				"history 1 3 4, results 0, error 255",
			}, 6},
		{"no cause", Execution{History: []Transition{history[0], history[1], history[2], history[5]}},
			[]string{"history 1 4, results 0, error 0"}, 2},
		{"nothing to drop", Execution{History: history[:2], Error: "short"}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := tc.x
			var got []string
			for x.Shed() {
				s := "history"
				for _, h := range x.History {
					s += " " + strconv.FormatInt(h.Tick, 10)
				}
				got = append(got, s+fmt.Sprintf(", results %d, error %d", len(x.Results), len(x.Error)))
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.dropped, x.HistoryDropped)
			require.LessOrEqual(t, len(x.Error), ShedError)
			if n := len(x.History); n > 0 && x.Results == nil && tc.x.Results != nil {
				require.Equal(t, OutputsShed, x.History[n-1].Note)
			}
			if len(tc.x.Error) > ShedError {
				require.True(t, strings.HasSuffix(x.Error, "… (600 bytes)"), x.Error)
			}
		})
	}
}
