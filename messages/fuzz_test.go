package messages

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fuzz targets of the decoders that face the wire besides the command
// and reply codecs (codec_test.go): each must never panic, must refuse
// with ErrBadRequest, ErrVersion or ErrTooLarge, and what it accepts must
// be what encoding/json reads or what the matching encoder writes.

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
		var want Record
		require.NoError(t, json.Unmarshal(data, &want), "%q decoded here, refused by encoding/json", data)
		requireSameRecord(t, want, r)
		// What decodes encodes, and decodes back the same.
		enc, err := r.AppendJSON(nil)
		if err != nil {
			return // an output that is not JSON encoding/json would take raw
		}
		back, err := DecodeRecord(enc)
		require.NoError(t, err, "%s", enc)
		requireSameRecord(t, r, back)
	})
}

func requireSameRecord(t *testing.T, want, got Record) {
	t.Helper()
	for _, p := range [][2]*Result{{want.Execute, got.Execute}, {want.Compensate, got.Compensate}} {
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

// FuzzDecodeRequest feeds every request payload to Decode, as the
// coordinator does.
func FuzzDecodeRequest(f *testing.F) {
	for _, in := range []string{`{"v":1,"saga_id":"x","context":{"a":1}}`, `{"v":1,"tick":9223372036854775807}`,
		`{"v":1,"status":"failed","limit":1000,"after":"3:s-1"}`, `{"v":2}`, `{"v":"1"}`, `null`, `{"tick":1e400}`} {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, v := range []any{&StartRequest{}, &Tick{}, &StatusRequest{}, &ListRequest{}, &RetryRequest{}} {
			err := Decode(data, v)
			if err != nil {
				require.True(t, isRefusal(err), "%q: %v", data, err)
				continue
			}
			ver, ok := versionOf(v)
			require.True(t, ok)
			require.Equal(t, Version, ver)
		}
	})
}

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// FuzzIdentifiers checks the grammar against its regular expression, and
// that the subjects and cursors built from valid identifiers parse back.
func FuzzIdentifiers(f *testing.F) {
	for _, s := range []string{"s-1", "", "a.b", "ÉTAT", strings.Repeat("a", 65), "a b", "*", ">", "$JS", "a=b"} {
		f.Add(s, s, s, int64(3))
	}
	f.Fuzz(func(t *testing.T, role, id, step string, tick int64) {
		for _, s := range []string{role, id, step} {
			require.Equal(t, tokenRe.MatchString(s), ValidToken(s), "%q", s)
			if err := CheckToken("x", s); err != nil {
				require.ErrorIs(t, err, ErrBadRequest)
				require.Less(t, len(err.Error()), 600, "a cut value quotes to at most 4 bytes a byte")
			}
		}
		r, i, s, ok := ParseBranchSubject(BranchSubject(role, id, step))
		if ValidToken(role) && ValidToken(id) && ValidToken(step) {
			require.True(t, ok)
			require.Equal(t, [3]string{role, id, step}, [3]string{r, i, s})
		}
		gotTick, gotID, err := ParseListCursor(FormatListCursor(tick, id))
		if ValidToken(id) {
			require.NoError(t, err)
			require.Equal(t, tick, gotTick)
			require.Equal(t, id, gotID)
		} else {
			require.ErrorIs(t, err, ErrBadRequest)
		}
		_, _, err = ParseListCursor(id)
		if err != nil {
			require.ErrorIs(t, err, ErrBadRequest)
		}
	})
}

func isRefusal(err error) bool {
	return errors.Is(err, ErrBadRequest) || errors.Is(err, ErrVersion) || errors.Is(err, ErrTooLarge)
}
