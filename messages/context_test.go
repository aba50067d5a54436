package messages_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// EncodedLen is what json.Marshal writes for a context with nothing to
// escape or compact, and never less for any other: the coordinator holds
// a saga's context to messages.MaxContext with it, so that every command
// fits an agent's limit.
func TestContextEncodedLen(t *testing.T) {
	for _, tc := range []struct {
		name  string
		c     messages.Context
		exact bool
	}{
		{"nil", nil, true},
		{"empty", messages.Context{}, true},
		{"one", messages.Context{"household_id": json.RawMessage(`"h-1"`)}, true},
		{"several", messages.Context{"a": json.RawMessage(`1`), "b": json.RawMessage(`{"x":[true,null]}`), "c": json.RawMessage(`"é"`)}, true},
		{"a nil value", messages.Context{"a": nil}, true},
		{"keys to escape", messages.Context{"q\"\\\n\x01<>&é\u2028\xff": json.RawMessage(`0`)}, true},
		{"values to escape", messages.Context{"a": json.RawMessage(`"<b>&\u2028"`)}, false},
		{"whitespace to compact", messages.Context{"a": json.RawMessage(` { "x" : 1 } `)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := json.Marshal(tc.c)
			require.NoError(t, err)
			if tc.exact {
				require.Equal(t, len(want), tc.c.EncodedLen())
			} else {
				require.GreaterOrEqual(t, tc.c.EncodedLen(), len(want))
			}
		})
	}
}

func FuzzContextEncodedLen(f *testing.F) {
	f.Add("k", []byte(`"v"`), "k2", []byte(`1`))
	f.Add("<\u2028\xff", []byte(`"<&>\u2028"`), "", []byte(` [ 1 , 2 ] `))
	f.Fuzz(func(t *testing.T, k1 string, v1 []byte, k2 string, v2 []byte) {
		c := messages.Context{k1: v1, k2: v2}
		want, err := json.Marshal(c)
		if err != nil {
			return // not JSON values: never in a decoded context
		}
		require.GreaterOrEqual(t, c.EncodedLen(), len(want))
	})
}
