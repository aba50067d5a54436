package wirejson

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

var strs = []string{"", "plain", `"\`, "<>&", "\x00\x1f\x7f\b\f\n\r\t", "é日本😀", "\u2028\u2029", "\xff\xc3(", "\ufffd"}

var raws = []string{`1`, `-0.5e+3`, `"s"`, `"<&>"`, `{"a" : [1, 2]}`, " true ", `null`, "\"\u2028\"", `{"k":{"k":[{}]}}`,
	"\"\xff\"", ``, `{`, `01`, `1 2`, `[1,]`, `"\q"`, `nul`, strings.Repeat("[", 10001) + strings.Repeat("]", 10001)}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range strs {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendString(nil, s)), "%q", s)
	}
}

func TestAppendRawMatchesEncodingJSON(t *testing.T) {
	for _, raw := range raws {
		want, wantErr := json.Marshal(json.RawMessage(raw))
		got, err := AppendRaw([]byte("x"), []byte(raw))
		require.Equal(t, wantErr == nil, err == nil, "%q: %v vs %v", raw, wantErr, err)
		if err == nil {
			require.Equal(t, "x"+string(want), string(got), "%q", raw)
		} else {
			require.Equal(t, "x", string(got), "dst is left unchanged")
		}
	}
	got, err := AppendRaw(nil, nil)
	require.NoError(t, err)
	require.Equal(t, "null", string(got))
}

func TestAppendRawMapMatchesEncodingJSON(t *testing.T) {
	m := map[string]json.RawMessage{}
	for i, s := range strs {
		m[s] = json.RawMessage(raws[i%9])
	}
	want, err := json.Marshal(m)
	require.NoError(t, err)
	got, err := AppendRawMap(nil, m)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
	got, err = AppendRawMap([]byte("x"), map[string]json.RawMessage(nil))
	require.NoError(t, err)
	require.Equal(t, "xnull", string(got))
	_, err = AppendRawMap(nil, map[string]json.RawMessage{"k": json.RawMessage(`{`)})
	require.Error(t, err)
}

func TestSkipValueAgreesWithJSONValid(t *testing.T) {
	for _, raw := range raws {
		end, err := skipValue([]byte(raw), 0, 0)
		valid := err == nil && strings.TrimSpace(raw[end:]) == ""
		require.Equal(t, json.Valid([]byte(raw)), valid, "%q", raw)
	}
}

func FuzzSkipValue(f *testing.F) {
	for _, raw := range raws {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		end, err := skipValue([]byte(raw), 0, 0)
		valid := err == nil && strings.Trim(raw[end:], " \t\r\n") == ""
		require.Equal(t, json.Valid([]byte(raw)), valid, "%q", raw)
	})
}

func FuzzAppendString(f *testing.F) {
	for _, s := range strs {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		require.NoError(t, err)
		require.Equal(t, string(want), string(AppendString(nil, s)))
	})
}
