package messages

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The fuzz targets of the decoders that face the wire besides the codecs
// of the hot payloads (internal/wirejson): each must never panic, must refuse
// with ErrBadRequest, ErrVersion or ErrTooLarge, and what it accepts must
// be what encoding/json reads or what the matching encoder writes.

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
		i, s, ok := ParseRecordKey(RecordKey(id, step))
		r, rok := ParseRecordSubject(RecordSubject(role))
		if ValidToken(role) && ValidToken(id) && ValidToken(step) {
			require.True(t, ok && rok)
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
