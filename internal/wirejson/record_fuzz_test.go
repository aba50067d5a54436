package wirejson

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// FuzzDecodeRecord checks the barrier record's decoder: it never panics,
// refuses with ErrBadRequest, ErrVersion or ErrTooLarge, and what it
// accepts is what encoding/json reads and what AppendRecord writes back.

var recordCorpus = []string{
	`{}`, `null`, `{"execute":null}`,
	`{"execute":{"outcome":"ok","seq":2,"at":"2026-11-25T12:30:15Z","output":{"a":[1,{"b":null}]}}}`,
	`{"compensate":{"outcome":"ok","noop":true,"reason":"nothing","seq":9,"at":"2026-11-25T12:30:15.123456789+01:00"}}`,
	`{"execute":{"pending":true,"seq":1,"at":"0001-01-01T00:00:00Z"}}`,
	`{"execute":{"seq":9223372036854775808}}`, `{"execute":{"seq":-1}}`, `{"EXECUTE":{"Outcome":"failed"}}`,
	`{"execute":{"outcome":"maybe"}}`, `{"execute":`, `[]`, `{"execute":{"output":{"\u2028":"\ud800"}}}`,
}

func FuzzDecodeRecord(f *testing.F) {
	for _, in := range recordCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			require.True(t, isRefusal(err), "%q: %v", data, err)
			return
		}
		var want messages.Record
		require.NoError(t, json.Unmarshal(data, &want), "%q decoded here, refused by encoding/json", data)
		requireSameRecord(t, want, r)
		// What decodes encodes, and decodes back the same.
		enc, err := AppendRecord(nil, &r)
		if err != nil {
			return // an output that is not JSON encoding/json would take raw
		}
		back, err := DecodeRecord(enc)
		require.NoError(t, err, "%s", enc)
		requireSameRecord(t, r, back)
	})
}

func requireSameRecord(t *testing.T, want, got messages.Record) {
	t.Helper()
	for _, p := range [][2]*messages.Result{{want.Execute, got.Execute}, {want.Compensate, got.Compensate}} {
		require.Equal(t, p[0] == nil, p[1] == nil)
		if p[0] == nil {
			continue
		}
		w, g := *p[0], *p[1]
		require.True(t, w.At.Equal(g.At), "%v vs %v", w.At, g.At)
		w.At = g.At
		require.Equal(t, len(w.Output), len(g.Output))
		w.Output, g.Output = nil, nil
		require.Equal(t, w, g)
	}
}

func isRefusal(err error) bool {
	return errors.Is(err, messages.ErrBadRequest) || errors.Is(err, messages.ErrVersion) || errors.Is(err, messages.ErrTooLarge)
}
