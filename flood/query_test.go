package flood_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/messages"
)

func TestAnswerState(t *testing.T) {
	ctx := context.Background()
	m := agent.NewMemory()
	require.NoError(t, flood.InitLedger(700)(ctx, m))
	_, err := m.Init(ctx, flood.HouseKey("h1"), flood.House{Applications: map[string]string{"s1": "pending"}})
	require.NoError(t, err)

	ask := func(q string) flood.StateAnswer {
		t.Helper()
		data, err := json.Marshal(flood.AnswerState(ctx, []byte(q), m.Values))
		require.NoError(t, err)
		var a flood.StateAnswer
		require.NoError(t, json.Unmarshal(data, &a))
		return a
	}
	require.Equal(t, flood.StateAnswer{V: 1,
		Ledger:     &flood.Ledger{Initial: 700, Balance: 700, Spent: map[string]int64{}},
		Households: map[string]flood.House{"h1": {Applications: map[string]string{"s1": "pending"}}},
	}, ask(`{"v":1,"ledger":true,"households":["h1","h2"]}`))
	require.Equal(t, flood.StateAnswer{V: 1}, ask(`{"v":1,"households":["h2"]}`), "no record, no entry")

	for _, q := range []string{`{"v":2}`, `[]`, `{"v":1,"households":["a.b"]}`,
		`{"v":1,"households":["` + strings.Repeat(`h","`, flood.MaxQueryHouseholds) + `h"]}`} {
		a := ask(q)
		require.Equal(t, messages.CodeBadRequest, a.Error.Code, q)
	}
}

// TestAnswerStateReadsHouseholdsAtOnce answers a query of many households:
// they are read in one call, in the query's order, and the answer holds
// those found. A failed read is the answer's error.
func TestAnswerStateReadsHouseholdsAtOnce(t *testing.T) {
	ids := make([]string, 300)
	for i := range ids {
		ids[i] = fmt.Sprintf("h%d", i)
	}
	var calls [][]string
	var fail error
	read := func(keys []string, value func(i int) any) ([]bool, error) {
		calls = append(calls, keys)
		if fail != nil {
			return nil, fail
		}
		found := make([]bool, len(keys))
		for i, key := range keys {
			id := strings.TrimPrefix(key, flood.HouseKey(""))
			var n int
			_, _ = fmt.Sscanf(id, "h%d", &n)
			if n%2 == 0 {
				*value(i).(*flood.House) = flood.House{Applications: map[string]string{"s" + id: "pending"}}
				found[i] = true
			}
		}
		return found, nil
	}
	q, err := json.Marshal(flood.StateQuery{V: messages.Version, Households: ids})
	require.NoError(t, err)

	a := flood.AnswerState(context.Background(), q, read).(flood.StateAnswer)
	require.Nil(t, a.Error)
	require.Len(t, calls, 1, "one read for the households")
	want := make([]string, len(ids))
	for i, id := range ids {
		want[i] = flood.HouseKey(id)
	}
	require.Equal(t, want, calls[0])
	require.Len(t, a.Households, len(ids)/2)
	for i, id := range ids {
		h, ok := a.Households[id]
		require.Equal(t, i%2 == 0, ok, id)
		if ok {
			require.Equal(t, map[string]string{"s" + id: "pending"}, h.Applications)
		}
	}

	fail = errors.New("boom")
	a = flood.AnswerState(context.Background(), q, read).(flood.StateAnswer)
	require.Equal(t, &messages.WireError{Code: messages.CodeInternal, Message: "boom"}, a.Error)
}
