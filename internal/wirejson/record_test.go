package wirejson

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
	results := []*messages.Result{
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
			r := messages.Record{Execute: ex, Compensate: comp}
			want, err := json.Marshal(r)
			require.NoError(t, err)
			got, err := AppendRecord([]byte("prefix"), &r)
			require.NoError(t, err, "execute %d, compensate %d", i, j)
			require.Equal(t, "prefix"+string(want), string(got), "execute %d, compensate %d", i, j)
			var back messages.Record
			require.NoError(t, json.Unmarshal(got[len("prefix"):], &back))
			decoded, err := DecodeRecord(got[len("prefix"):])
			require.NoError(t, err)
			require.Equal(t, back, decoded, "execute %d, compensate %d", i, j)
		}
	}

	bad := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Output: messages.Context{"x": json.RawMessage(`{`)}}}
	_, err := AppendRecord(nil, &bad)
	require.Error(t, err)
	_, err = json.Marshal(bad)
	require.Error(t, err, "encoding/json refuses it too")
	late := messages.Record{Execute: &messages.Result{At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	_, err = AppendRecord(nil, &late)
	require.Error(t, err)
}

func BenchmarkRecordEncoding(b *testing.B) {
	r := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Seq: 3, At: time.Now().UTC(),
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
			if buf, err = AppendRecord(buf[:0], &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestDecodeRecord checks what the coordinator accepts as a record, and the
// answer a record gives to a command.
func TestDecodeRecord(t *testing.T) {
	for _, ok := range []string{
		`{}`, `null`, ` {"execute":null,"compensate":null} `,
		`{"EXECUTE":{"Outcome":"ok","seq":2,"at":"2026-11-25T12:30:15Z","noop":null,"pending":false,"extra":[1]}}`,
	} {
		want := messages.Record{}
		require.NoError(t, json.Unmarshal([]byte(ok), &want), ok)
		got, err := DecodeRecord([]byte(ok))
		require.NoError(t, err, ok)
		require.Equal(t, want, got, ok)
	}
	for _, bad := range []string{
		``, `[]`, `{"execute":`, `{"execute":{"noop":1}}`, `{"execute":{"pending":"yes"}}`,
		`{"execute":{"seq":1.5}}`, `{"execute":{"at":"yesterday"}}`, `{"execute":{"output":[]}}`,
		`{} {}`,
		// encoding/json takes any outcome; a record's must be known.
		`{"execute":{"outcome":"maybe"}}`,
	} {
		_, err := DecodeRecord([]byte(bad))
		require.ErrorIs(t, err, messages.ErrBadRequest, bad)
	}

	cmd := messages.Command{V: messages.Version, SagaID: "s-1", Saga: "subsidy", Step: "pay", Action: messages.Execute, Attempt: 2, Seq: 7}
	r := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Output: messages.Context{}.MustSet("paid", 5), Seq: 3}}
	reply, ok := r.Answer(&cmd)
	require.True(t, ok)
	want := messages.ReplyTo(&cmd, messages.OK, "")
	want.Output = messages.Context{}.MustSet("paid", 5)
	require.Equal(t, want, reply, "the answer is to the command asked, whichever command took effect")
	comp := cmd
	comp.Action = messages.Compensate
	_, ok = r.Answer(&comp)
	require.False(t, ok, "no compensation recorded")
	r.Compensate = &messages.Result{Pending: true, Seq: 8}
	_, ok = r.Answer(&comp)
	require.False(t, ok, "a pending result is no answer")
	r.Compensate = &messages.Result{Outcome: messages.OK, Noop: true, Reason: "nothing to undo", Seq: 8}
	reply, ok = r.Answer(&comp)
	require.True(t, ok)
	require.Equal(t, messages.ReplyTo(&comp, messages.OK, "nothing to undo"), reply)
}
