package flood_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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
		data, err := json.Marshal(flood.AnswerState(ctx, []byte(q), m.Value))
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

// TestAnswerStateReadsSideBySide answers a query of many households whose
// reads wait for each other: they must be under way together. The answer
// is the same as reads one by one would give, and of two failed reads it
// reports the first household's.
func TestAnswerStateReadsSideBySide(t *testing.T) {
	ids := make([]string, 300)
	for i := range ids {
		ids[i] = fmt.Sprintf("h%d", i)
	}
	var (
		mu      sync.Mutex
		waiting = 0
		both    = make(chan struct{})
	)
	fail := map[string]error{}
	read := func(key string, v any) (bool, error) {
		mu.Lock()
		waiting++
		if waiting == 2 {
			close(both)
		}
		mu.Unlock()
		select {
		case <-both:
		case <-time.After(10 * time.Second):
			return false, errors.New("the reads went one at a time")
		}
		id := strings.TrimPrefix(key, flood.HouseKey(""))
		if err := fail[id]; err != nil {
			return false, err
		}
		var n int
		_, _ = fmt.Sscanf(id, "h%d", &n)
		if n%2 == 1 {
			return false, nil
		}
		*v.(*flood.House) = flood.House{Applications: map[string]string{"s" + id: "pending"}}
		return true, nil
	}
	q, err := json.Marshal(flood.StateQuery{V: messages.Version, Households: ids})
	require.NoError(t, err)

	a := flood.AnswerState(context.Background(), q, read).(flood.StateAnswer)
	require.Nil(t, a.Error)
	require.Len(t, a.Households, len(ids)/2)
	for i, id := range ids {
		h, ok := a.Households[id]
		require.Equal(t, i%2 == 0, ok, id)
		if ok {
			require.Equal(t, map[string]string{"s" + id: "pending"}, h.Applications)
		}
	}

	fail["h250"], fail["h17"] = errors.New("boom 250"), errors.New("boom 17")
	a = flood.AnswerState(context.Background(), q, read).(flood.StateAnswer)
	require.Equal(t, &messages.WireError{Code: messages.CodeInternal, Message: "boom 17"}, a.Error)
}
