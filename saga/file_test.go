package saga_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/saga"
)

// goodFile is a definitions file with every field set.
const goodFile = `{
  "roles": ["clinic", "depot"],
  "sagas": [{
    "name": "vaccinate", "subject": "vax", "version": 2, "description": "d",
    "timeout_ticks": 4,
    "compensation_retry": {"max_attempts": 5, "backoff": "10ms", "max_backoff": "2s"},
    "steps": [
      {"name": "reserve_dose", "role": "depot", "compensation": "release_dose", "timeout_ticks": 2,
       "retry": {"max_attempts": 2, "backoff": "5ms"}},
      {"name": "give_dose", "role": "clinic", "compensation": "record_void"}
    ]
  }]
}`

func TestParseFileReadsEveryField(t *testing.T) {
	defs, err := saga.ParseFile([]byte(goodFile))
	require.NoError(t, err)
	require.Equal(t, []saga.Definition{{
		Name: "vaccinate", Subject: "vax", Version: 2, Description: "d", TimeoutTicks: 4,
		CompensationRetry: saga.RetryPolicy{MaxAttempts: 5, Backoff: 10 * time.Millisecond, MaxBackoff: 2 * time.Second},
		Steps: []saga.Step{
			{Name: "reserve_dose", Role: "depot", Compensation: "release_dose", TimeoutTicks: 2,
				Retry: saga.RetryPolicy{MaxAttempts: 2, Backoff: 5 * time.Millisecond}},
			{Name: "give_dose", Role: "clinic", Compensation: "record_void"},
		},
	}}, defs)

	// FileOf writes them back to a file that reads the same.
	data, err := json.Marshal(saga.FileOf(defs))
	require.NoError(t, err)
	again, err := saga.ParseFile(data)
	require.NoError(t, err)
	require.Equal(t, defs, again)
}

func TestParseFileDefaultsVersionToOne(t *testing.T) {
	defs, err := saga.ParseFile([]byte(`{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"r"}]}]}`))
	require.NoError(t, err)
	require.Equal(t, int64(1), defs[0].Version)
	require.Zero(t, defs[0].TimeoutTicks, "left out, the engine's default applies")
}

func TestParseFileRefusesBadDefinitions(t *testing.T) {
	// file returns a one-saga file whose saga "s" has steps.
	file := func(saga string) string {
		return `{"roles":["r","q"],"sagas":[` + saga + `]}`
	}
	long := strings.Repeat("x", 65)
	tests := []struct {
		name, file string
		// want is the message of the one FieldError expected.
		want string
	}{
		{"duplicate step", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"r"},{"name":"a","role":"q"}]}`),
			`definition "s": field steps[1].name: duplicate step "a"`},
		{"roles differing only in case", `{"roles":["bank","Bank"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"bank"}]}]}`,
			`definitions file: field roles[1]: role "Bank" differs only in case from role "bank", and would share its streams`},
		{"unknown role", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"nurse"}]}`),
			`definition "s": field steps[0].role: unknown role "nurse": not in the file's roles [r q]`},
		{"step name with a dot", file(`{"name":"s","subject":"s","steps":[{"name":"a.b","role":"r"}]}`),
			`definition "s": field steps[0].name: "a.b" is not a name: 1 to 64 of A-Z a-z 0-9 _ -`},
		{"name too long", file(`{"name":"` + long + `","subject":"s","steps":[{"name":"a","role":"r"}]}`),
			`definition "` + long + `": field name: "` + long + `" is not a name: 1 to 64 of A-Z a-z 0-9 _ -`},
		{"name with a slash", file(`{"name":"s/t","subject":"s","steps":[{"name":"a","role":"r"}]}`),
			`definition "s/t": field name: "s/t" is not a name: 1 to 64 of A-Z a-z 0-9 _ -`},
		{"subject with a wildcard", file(`{"name":"s","subject":"s*","steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field subject: "s*" is not a name: 1 to 64 of A-Z a-z 0-9 _ -`},
		{"zero step timeout", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"r","timeout_ticks":0}]}`),
			`definition "s": field steps[0].timeout_ticks: 0 is not a timeout: 1 tick or more`},
		{"negative saga timeout", file(`{"name":"s","subject":"s","timeout_ticks":-2,"steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field timeout_ticks: -2 is not a timeout: 1 tick or more`},
		{"empty saga", file(`{"name":"s","subject":"s","steps":[]}`),
			`definition "s": field steps: no steps: a saga has at least one`},
		{"zero version", file(`{"name":"s","subject":"s","version":0,"steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field version: 0 is not a version: 1 or more`},
		{"bad backoff", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"r","retry":{"backoff":"soon"}}]}`),
			`definition "s": field steps[0].retry.backoff: "soon" is not a positive duration such as "20ms"`},
		{"backoff over an hour", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"r","retry":{"backoff":"2h"}}]}`),
			`definition "s": field steps[0].retry.backoff: "2h" is more than 1h0m0s, the longest backoff`},
		{"compensation backoff over an hour", file(`{"name":"s","subject":"s","compensation_retry":{"max_backoff":"61m"},"steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field compensation_retry.max_backoff: "61m" is more than 1h0m0s, the longest backoff`},
		{"zero attempts", file(`{"name":"s","subject":"s","compensation_retry":{"max_attempts":0},"steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field compensation_retry.max_attempts: 0 is not a number of attempts: 1 or more`},
		{"duplicate saga", file(`{"name":"s","subject":"s","steps":[{"name":"a","role":"r"}]},{"name":"s","subject":"t","steps":[{"name":"a","role":"r"}]}`),
			`definition "s": field name: duplicate saga "s"`},
		{"name that is another saga's subject", file(`{"name":"s","subject":"t","steps":[{"name":"a","role":"r"}]},{"name":"t","subject":"u","steps":[{"name":"a","role":"r"}]}`),
			`definition "t": field name: "t" is the subject of saga "s": a name and a subject are looked up alike`},
		{"reserved step name", file(`{"name":"s","subject":"s","steps":[{"name":"compensate","role":"r"}]}`),
			`definition "s": field steps[0].name: "compensate" is reserved`},
		{"no sagas", `{"roles":["r"],"sagas":[]}`, `definitions file: field sagas: no sagas`},
		{"bad role name", `{"roles":["r s"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"r s"}]}]}`,
			`definitions file: field roles[0]: "r s" is not a name: 1 to 64 of A-Z a-z 0-9 _ -`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := saga.ParseFile([]byte(tt.file))
			require.ErrorIs(t, err, saga.ErrInvalidDefinition)
			var fe *saga.FieldError
			require.ErrorAs(t, err, &fe)
			require.Equal(t, tt.want, err.Error())
		})
	}
}

func TestParseFileRefusesWhatIsNotTheFormat(t *testing.T) {
	for name, data := range map[string]string{
		"misspelt field": `{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"r","timeout":3}]}]}`,
		"not JSON":       `roles: [r]`,
		"two objects":    `{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"r"}]}]} {}`,
		"too large":      `{"roles":["` + strings.Repeat("r", saga.MaxFileSize) + `"]}`,
		"null":           `{"roles":["r"],"sagas":[{"name":"s","subject":"s","timeout_ticks":null,"steps":[{"name":"a","role":"r"}]}]}`,
		"null in a step": `{"roles":["r"],"sagas":[{"name":"s","subject":"s","steps":[{"name":"a","role":"r","retry":null}]}]}`,
		"null roles":     `{"roles":null,"sagas":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := saga.ParseFile([]byte(data))
			require.ErrorIs(t, err, saga.ErrInvalidDefinition)
			if strings.HasPrefix(name, "null") {
				require.ErrorContains(t, err, "is null: give it a value, or leave it out for its default")
			}
			var fe *saga.FieldError
			require.False(t, errors.As(err, &fe), "a decoding error, not a field's: %v", err)
		})
	}
}

// TestParseFileSaysWhere: a file that does not decode is refused with the
// line and column of what is wrong in it.
func TestParseFileSaysWhere(t *testing.T) {
	for data, want := range map[string]string{
		"{\"roles\":[\"r\"],\n \"sagas\":[{\"name\":\"s\",\"subject\":\"s\",\n   \"steps\":[{\"name\":\"a\",\"role\":\"r\",\"compensaton\":\"b\"}]}]}": `definitions file: line 3, column 36: unknown field "compensaton": invalid saga definition`,
		"{\"roles\":[\"r\"],\n \"sagas\":[],\n}":          "definitions file: line 3, column 1: invalid character '}' looking for beginning of object key string: invalid saga definition",
		"{\"roles\":[\"r\"],\n \"sagas\":[{\"name\":7}]}": "definitions file: line 2, column 19: sagas.name: number where a string is wanted: invalid saga definition",
		" \n ": "definitions file: empty: invalid saga definition",
		"{\"roles\":[\"r\"],\n \"sagas\":[{\"name\":\"s\"\n": "definitions file: line 2, column 22: the file ends inside the JSON (a bracket, brace or quote not closed): invalid saga definition",
		"{\"roles\": [": "definitions file: line 1, column 12: the file ends inside the JSON (a bracket, brace or quote not closed): invalid saga definition",
		// encoding/json takes a name in another case: the file may not.
		"{\"ROLES\":[\"r\"],\"sagas\":[]}": `definitions file: line 1, column 2: unknown field "ROLES": invalid saga definition`,
		"{\"roles\":[\"r\"],\n \"sagas\":[{\"name\":\"s\",\"subject\":\"s\",\"steps\":[{\"name\":\"a\",\"role\":\"r\",\n   \"timeout_ticks\":1,\"Timeout_Ticks\":5}]}]}": `definitions file: line 3, column 22: unknown field "Timeout_Ticks": invalid saga definition`,
		"{\"roles\":[\"r\"],\"sagas\":[{\"name\":\"s\",\"subject\":\"s\",\"steps\":[{\"name\":\"a\",\"role\":\"r\",\"retry\":{\"Max_Attempts\":2}}]}]}":                  `definitions file: line 1, column 92: unknown field "Max_Attempts": invalid saga definition`,
	} {
		_, err := saga.ParseFile([]byte(data))
		require.EqualError(t, err, want)
	}
}
