package coordinator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// TestLeastResultsWithinTheirRoom: a refusal with its message cut, under
// the longest code, and a started saga with a generated id (there already,
// the longest answer) take no more
// than messages.StartResultRoom in a batch's answer, which
// messages.MaxStartsFor counts on.
func TestLeastResultsWithinTheirRoom(t *testing.T) {
	for _, code := range []string{messages.CodeBadRequest, messages.CodeNotFound, messages.CodeConflict,
		messages.CodeInternal, messages.CodeBusy, messages.CodeTooLarge} {
		r := messages.StartResponse{V: messages.Version, Error: &messages.WireError{Code: code, Message: cutMessage}}
		require.LessOrEqual(t, resultSize(r), leastRefusal, code)
	}
	require.LessOrEqual(t, leastRefusal, messages.StartResultRoom)
	require.LessOrEqual(t, leastStarted(""), messages.StartResultRoom)
	require.Greater(t, leastStarted(strings.Repeat("x", 64)), messages.StartResultRoom, "a long id is counted whole")
	for _, id := range []string{"", "a", strings.Repeat("x", 64), "9f0c-ab_CD"} {
		want := id
		if id == "" {
			want = "00000000-0000-0000-0000-000000000000"
		}
		r := messages.StartResponse{V: messages.Version, SagaID: want, Status: "compensating", Existed: true}
		require.Equal(t, resultSize(r), leastStarted(id), "counted as encoded, there already: %q", id)
	}
}
