package wirejson

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

func TestCommandBatchRoundTrip(t *testing.T) {
	var encoded [][]byte
	var want []messages.Command
	for i := range 3 {
		c := messages.Command{V: messages.Version, SagaID: fmt.Sprintf("s-%d", i), Saga: "subsidy", Step: "government_evaluates",
			Action: messages.Execute, Attempt: 1, Seq: 2, Tick: 7, Rank: int64(i + 1), Context: trickyContext()}
		data, err := AppendCommand(nil, &c)
		require.NoError(t, err)
		encoded = append(encoded, data)
		want = append(want, c)
	}
	data := AppendCommandBatch(nil, encoded)

	// It is what encoding/json makes of a CommandBatch.
	var viaJSON messages.CommandBatch
	require.NoError(t, json.Unmarshal(data, &viaJSON))
	require.Equal(t, messages.BatchVersion, viaJSON.V)
	require.Len(t, viaJSON.Commands, 3)

	raws, err := SplitCommandBatch(data)
	require.NoError(t, err)
	require.Len(t, raws, 3)
	for i, raw := range raws {
		require.Equal(t, encoded[i], raw)
		got, err := DecodeCommand(raw)
		require.NoError(t, err)
		require.Equal(t, want[i].SagaID, got.SagaID)
		require.Equal(t, want[i].Rank, got.Rank)
	}
}

func TestSplitCommandBatchRefuses(t *testing.T) {
	cmd := `{"v":1,"saga_id":"s","saga":"a","step":"b","action":"execute","attempt":1,"seq":1,"tick":0,"context":{}}`
	many := `{"v":2,"commands":[` + strings.TrimSuffix(strings.Repeat(cmd+",", messages.MaxBatch+1), ",") + `]}`
	for _, tc := range []struct {
		name string
		data string
		want error
	}{
		{"version 1", `{"v":1,"commands":[` + cmd + `]}`, messages.ErrVersion},
		{"no version", `{"commands":[` + cmd + `]}`, messages.ErrVersion},
		{"no commands", `{"v":2,"commands":[]}`, messages.ErrBadRequest},
		{"commands missing", `{"v":2}`, messages.ErrBadRequest},
		{"commands not an array", `{"v":2,"commands":{}}`, messages.ErrBadRequest},
		{"truncated", `{"v":2,"commands":[` + cmd, messages.ErrBadRequest},
		{"trailing data", `{"v":2,"commands":[` + cmd + `]} x`, messages.ErrBadRequest},
		{"not an object", `[1]`, messages.ErrBadRequest},
		{"one command too many", many, messages.ErrBadRequest},
		{"too large", `{"v":2,"commands":["` + strings.Repeat("x", messages.MaxPayload) + `"]}`, messages.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SplitCommandBatch([]byte(tc.data))
			require.ErrorIs(t, err, tc.want)
		})
	}
	// A malformed command inside a well-formed batch is the agent's to
	// refuse on its own: the envelope is fine.
	raws, err := SplitCommandBatch([]byte(`{"v":2,"commands":[` + cmd + `,{"v":9},"junk"]}`))
	require.NoError(t, err)
	require.Len(t, raws, 3)
	_, err = DecodeCommand(raws[1])
	require.ErrorIs(t, err, messages.ErrVersion)
	_, err = DecodeCommand(raws[2])
	require.ErrorIs(t, err, messages.ErrBadRequest)
}

func TestEventBatchRoundTrip(t *testing.T) {
	want := []messages.Event{
		{V: messages.Version, SagaID: "s-1", Saga: "subsidy", Status: "rolled_back", Tick: 3, Reason: "no \"money\"\n"},
		{V: messages.Version, SagaID: "s-2", Saga: "subsidy", Status: "rolled_back", Tick: 4},
	}
	var encoded [][]byte
	for i := range want {
		encoded = append(encoded, AppendEvent(nil, &want[i]))
	}
	data := AppendEventBatch(nil, encoded)

	var viaJSON messages.EventBatch
	require.NoError(t, json.Unmarshal(data, &viaJSON))
	require.Equal(t, messages.EventBatch{V: messages.BatchVersion, Events: want}, viaJSON)

	got, err := DecodeEventBatch(data)
	require.NoError(t, err)
	require.Equal(t, want, got)
}

func TestDecodeEventBatchRefuses(t *testing.T) {
	ev := `{"v":1,"saga_id":"s","saga":"a","status":"completed","tick":0}`
	for _, tc := range []struct {
		name string
		data string
		want error
	}{
		{"a single event", ev, messages.ErrVersion},
		{"no events", `{"v":2,"events":[]}`, messages.ErrBadRequest},
		{"commands, not events", `{"v":2,"commands":[` + ev + `]}`, messages.ErrBadRequest},
		{"an event of version 2", `{"v":2,"events":[` + ev + `,{"v":2}]}`, messages.ErrVersion},
		{"an event that is no object", `{"v":2,"events":[` + ev + `,7]}`, messages.ErrBadRequest},
		{"too large", `{"v":2,"events":["` + strings.Repeat("x", messages.MaxPayload) + `"]}`, messages.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeEventBatch([]byte(tc.data))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// TestEventBatchKeyGivenTwice: an array key given twice is decoded as
// encoding/json decodes it: the last one counts.
func TestEventBatchKeyGivenTwice(t *testing.T) {
	one := AppendEvent(nil, &messages.Event{V: messages.Version, SagaID: "s-1", Saga: "subsidy", Status: "completed", Tick: 1})
	two := AppendEvent(nil, &messages.Event{V: messages.Version, SagaID: "s-2", Saga: "subsidy", Status: "completed", Tick: 2})
	data := []byte(`{"v":2,"events":[` + string(one) + `],"events":[` + string(two) + `]}`)
	var viaJSON messages.EventBatch
	require.NoError(t, json.Unmarshal(data, &viaJSON))
	got, err := DecodeEventBatch(data)
	require.NoError(t, err)
	require.Equal(t, viaJSON.Events, got)
	require.Len(t, got, 1)
}
