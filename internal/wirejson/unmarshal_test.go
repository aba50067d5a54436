package wirejson

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// The decoders of the payloads a process reads many of (a log's messages,
// start batches, state values) read what encoding/json reads, and refuse
// what it refuses; what they read encodes back as json.Marshal writes it.

var logCorpus = []string{
	`{"id":"n1","entries":[{"key":"a","value":{"execute":{"outcome":"ok"}}},{"key":"b","value":[1, 2 ,{"c":null}]}]}`,
	`{"id":"n2","entries":[]}`, `{"id":"n3","entries":null}`, `null`, `{}`, ` { "ID" : "x" , "Entries" : [ { "KEY" : "k" , "Value" : "v\u00e9" } ] } `,
	`{"id":"dup","id":"last","entries":[{"key":"a","value":1,"value":2}]}`, `{"entries":[null,{"key":"a","value":null}]}`,
	`{"id":"x","other":{"deep":[1,2]},"entries":[{"key":"a","extra":true,"value":"<&>"}]}`,
	`{"id":1}`, `{"entries":{}}`, `{"entries":[{"key":2}]}`, `{"entries":[{"value":}]}`, `{"id":"x"} x`, `[]`, `"id"`,
	`{"id":"x","entries":[{"key":"a","value":tru}]}`, `{"id":"\ud800","entries":[{"key":"\u2028","value":"\ud800"}]}`,
}

var startCorpus = []string{
	`{"v":3,"starts":[{"saga":"subsidy","saga_id":"s1","rank":7,"tick":2,"context":{"household":"h1","amount":1200}},{"saga":"x","context":null}]}`,
	`{"v":3,"starts":[null, 1, "s", [ ] ,{ }]}`, `{"v":3,"starts":null}`, `{"v":3}`, `null`, `{"V":3,"STARTS":[{"Saga":"a","SAGA_ID":"b"}]}`,
	`{"v":"3"}`, `{"v":3,"starts":{}}`, `{"v":3,"starts":[{"saga":}]}`, `{"v":3.5}`, `{"v":3} {}`,
	`{"saga":"a","rank":-1,"tick":9223372036854775807,"context":{"k":{"deep":[true,null]}}}`, `{"saga":1}`,
	`{"rank":9223372036854775808}`, `{"context":[]}`, `{"context":{"a":1,"a":2}}`, `{"saga":"<\u00e9>","x":[{}]}`,
	`{"v":3,"saga_id":"s-1","rank":4,"tick":12,"context":{"household":"h7","amount":900}}`, `{"v":3,"saga_id":7}`, `{"v":3,"rank":1.5}`,
	// A control character in a string, read and skipped: refused.
	"{\"v\":3,\"saga_id\":\"a\x1fb\"}", "{\"v\":3,\"context\":{\"k\":\"a\x1fb\"}}", "{\"v\":3,\"saga_id\":\"a\x7fb\"}",
}

var envelopeCorpus = []string{
	`{"value":{"status":"pending","amount":1200},"ops":{"s1/household_applies/execute":{"household":"h1"},"s0/x/compensate":{}},"records":18446744073709551615}`,
	`{"value":7}`, `{"value":null,"ops":null,"records":0}`, `{"ops":{"a":null}}`, `null`, `{"VALUE":[1],"Ops":{},"RECORDS":3}`,
	`{"records":-1}`, `{"records":18446744073709551616}`, `{"records":1.5}`, `{"records":"1"}`, `{"records":-0}`, `{"records":1e3}`,
	`{"ops":[]}`, `{"ops":{"a":[]}}`, `{"ops":{"a":{"b":1,"b":2}},"ops":{"c":{}}}`, `{"value":{"<":" "}}`, `{"value":`,
}

func TestDecodeStateEnvelopeMatchesEncodingJSON(t *testing.T) {
	for _, in := range envelopeCorpus {
		requireSame(t, []byte(in), DecodeStateEnvelope, envelopeCodec)
	}
}

func FuzzDecodeStateEnvelope(f *testing.F) {
	for _, in := range envelopeCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) { requireSame(t, data, DecodeStateEnvelope, envelopeCodec) })
}

func TestDecodeLogMessageMatchesEncodingJSON(t *testing.T) {
	for _, in := range logCorpus {
		requireSameLogMessage(t, []byte(in))
	}
}

func TestDecodeStartsMatchEncodingJSON(t *testing.T) {
	for _, in := range startCorpus {
		requireSameStarts(t, []byte(in))
	}
}

func FuzzDecodeLogMessage(f *testing.F) {
	for _, in := range logCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(requireSameLogMessage)
}

func FuzzDecodeStarts(f *testing.F) {
	for _, in := range startCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(requireSameStarts)
}

func requireSameLogMessage(t *testing.T, data []byte) {
	requireSame(t, data, DecodeLogMessage, logMessageCodec)
}

// requireSameStarts reads data as a start batch, as one start of a batch
// and as a start request alone.
func requireSameStarts(t *testing.T, data []byte) {
	requireSame(t, data, DecodeStartBatch, rawStartBatchCodec)
	requireSame(t, data, DecodeBatchedStart, batchedStartCodec)
	requireSame(t, data, DecodeStartRequest, startRequestCodec)
}

// requireSame checks that decode reads data as json.Unmarshal does, or
// refuses it as json.Unmarshal does, and that c writes what it read as
// json.Marshal does.
func requireSame[T any](t *testing.T, data []byte, decode func([]byte) (T, error), c *codec[T]) {
	t.Helper()
	var want T
	wantErr := json.Unmarshal(data, &want)
	got, err := decode(data)
	if wantErr != nil {
		require.Error(t, err, "%q: encoding/json refuses it: %v", data, wantErr)
		return
	}
	require.NoError(t, err, "%q", data)
	require.Equal(t, want, got, "%q", data)
	enc, err := c.append(nil, &got)
	wantEnc, wantErr := json.Marshal(got)
	if wantErr != nil {
		require.Error(t, err, "%q", data)
		return
	}
	require.NoError(t, err)
	require.Equal(t, string(wantEnc), string(enc))
}
