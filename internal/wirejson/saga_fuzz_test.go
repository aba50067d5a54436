package wirejson_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/internal/wirejson"
	"github.com/natsaga/natsaga/saga"
)

// FuzzDecodeExecution checks the stored saga's decoder against
// encoding/json: it never panics, it accepts what json.Unmarshal accepts
// and nothing else, and it reads the same saga.

var executionCorpus = []string{
	`{}`, `null`, `[]`, `{"saga_id":`, `{"saga_id":"a"} x`,
	`{"saga_id":"a","definition":"subsidy","version":2,"saga":"subsidy","status":"in_progress","cause":"","context":{"h":"h-1","n": 5 },` +
		`"current_step":1,"action":"execute","attempt":1,"seq":3,"rank":7,"round":12,"started_tick":4,"dispatched_tick":5,` +
		`"awaiting":true,"working":false,"until":0,"retry_at":"2026-11-25T12:30:15.123456789+01:00",` +
		`"completed_steps":["a"],"compensated_steps":[],"step_results":{"a":{"x":[1,"\u2028"]},"b":null},"error":"",` +
		`"history":[{"tick":4,"status":"pending"},{"tick":5,"status":"in_progress","step":"a","action":"execute","attempt":1,"note":"retry"},null]}`,
	`{"completed_steps":null,"history":null,"step_results":null,"context":null}`,
	`{"step_results":{}}`, `{"history":[]}`, `{"completed_steps":[null,"b"]}`,
	`{"SAGA_ID":"a","Status":"completed","saga_id":"b"}`,
	`{"seq":1.5}`, `{"seq":"1"}`, `{"round":9223372036854775808}`, `{"awaiting":1}`,
	`{"retry_at":"yesterday"}`, `{"retry_at":null}`, `{"completed_steps":"a"}`, `{"history":[1]}`,
	`{"step_results":{"a":[]}}`, `{"context":{"a":}}`, `{"error":"\ud800"}`, `{"unknown":{"deep":[1,2,{"x":null}]}}`,
}

func FuzzDecodeExecution(f *testing.F) {
	for _, in := range executionCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := wirejson.DecodeExecution(data)
		var want saga.Execution
		jerr := json.Unmarshal(data, &want)
		require.Equal(t, jerr == nil, err == nil, "%q: encoding/json says %v, DecodeExecution %v", data, jerr, err)
		if err != nil {
			return
		}
		requireSameExecution(t, want, got)
	})
}

// TestDecodeExecutionAsEncodingJSON runs the corpus once, fuzzing or not;
// requireSameJSON reads back every saga TestAppendJSONMatchesEncodingJSON
// builds.
func TestDecodeExecutionAsEncodingJSON(t *testing.T) {
	for _, in := range executionCorpus {
		got, err := wirejson.DecodeExecution([]byte(in))
		var want saga.Execution
		jerr := json.Unmarshal([]byte(in), &want)
		require.Equal(t, jerr == nil, err == nil, "%s: encoding/json says %v, DecodeExecution %v", in, jerr, err)
		if err == nil {
			requireSameExecution(t, want, got)
		}
	}
}

func requireSameExecution(t *testing.T, want, got saga.Execution) {
	t.Helper()
	require.True(t, want.RetryAt.Equal(got.RetryAt), "retry_at %v vs %v", want.RetryAt, got.RetryAt)
	want.RetryAt, got.RetryAt = time.Time{}, time.Time{}
	require.Equal(t, want, got)
}
