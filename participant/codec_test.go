package participant

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// TestRecordAppendJSONMatchesEncodingJSON checks that the barrier's record
// encoder writes exactly what json.Marshal writes, for every shape a record
// takes and for awkward strings and outputs.
func TestRecordAppendJSONMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 25, 12, 30, 15, 123456789, time.UTC)
	results := []*Result{
		nil,
		{Seq: 1, At: at, Pending: true},
		{Outcome: messages.OK, Seq: 2, At: at},
		{Outcome: messages.OK, Seq: 3, At: at, Output: messages.Context{}},
		{Outcome: messages.OK, Seq: 4, At: at.In(time.FixedZone("x", 3600)),
			Output: messages.Context{"b": json.RawMessage(` {"x": [1, "<&>\u2028"]} `), "a": json.RawMessage(`"é"`)}},
		{Outcome: messages.Failed, Reason: "budget <insufficient> & \xff\u2029", Seq: 5, At: at},
		{Outcome: messages.OK, Reason: "nothing to undo", Noop: true, Seq: 6, At: at},
		{Seq: 0},
	}
	for i, ex := range results {
		for j, comp := range results {
			r := Record{Execute: ex, Compensate: comp}
			want, err := json.Marshal(r)
			require.NoError(t, err)
			got, err := r.AppendJSON([]byte("prefix"))
			require.NoError(t, err, "execute %d, compensate %d", i, j)
			require.Equal(t, "prefix"+string(want), string(got), "execute %d, compensate %d", i, j)
			var back Record
			require.NoError(t, json.Unmarshal(got[len("prefix"):], &back))
		}
	}

	bad := Record{Execute: &Result{Outcome: messages.OK, Output: messages.Context{"x": json.RawMessage(`{`)}}}
	_, err := bad.AppendJSON(nil)
	require.Error(t, err)
	_, err = json.Marshal(bad)
	require.Error(t, err, "encoding/json refuses it too")
	late := Record{Execute: &Result{At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	_, err = late.AppendJSON(nil)
	require.Error(t, err)
}

func BenchmarkRecordEncoding(b *testing.B) {
	r := Record{Execute: &Result{Outcome: messages.OK, Seq: 3, At: time.Now().UTC(),
		Output: messages.Context{"subsidy_paid": json.RawMessage(`500000`)}}}
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendJSON", func(b *testing.B) {
		buf := make([]byte, 0, 256)
		for b.Loop() {
			var err error
			if buf, err = r.AppendJSON(buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
