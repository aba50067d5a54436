package flood_test

import (
	"context"
	"encoding/json"
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
