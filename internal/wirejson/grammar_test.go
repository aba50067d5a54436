package wirejson

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

// TestGrammarInCommandsAndReplies checks the identifier rule where a
// command and a reply come in: a saga id, saga type, step or agent name
// that breaks it is a bad request naming the rule.
func TestGrammarInCommandsAndReplies(t *testing.T) {
	long := strings.Repeat("x", messages.MaxTokenLen+1)
	cmd := messages.Command{V: 1, SagaID: "s-1", Saga: "subsidy", Step: "pay", Action: messages.Execute, Attempt: 1, Seq: 1}
	for _, mod := range []func(*messages.Command){
		func(c *messages.Command) { c.SagaID = long },
		func(c *messages.Command) { c.Saga = "ÉTAT" },
		func(c *messages.Command) { c.Step = "a:b" },
	} {
		c := cmd
		mod(&c)
		data, err := AppendCommand(nil, &c)
		require.NoError(t, err)
		_, err = DecodeCommand(data)
		require.ErrorIs(t, err, messages.ErrBadRequest)
		require.ErrorContains(t, err, messages.TokenRule)

		r := messages.ReplyTo(&c, messages.OK, "")
		data, err = AppendReply(nil, &r)
		require.NoError(t, err)
		_, err = DecodeReply(data)
		require.ErrorIs(t, err, messages.ErrBadRequest)
	}
	r := messages.ReplyTo(&cmd, messages.OK, "")
	r.Agent = long
	data, err := AppendReply(nil, &r)
	require.NoError(t, err)
	_, err = DecodeReply(data)
	require.ErrorIs(t, err, messages.ErrBadRequest)
	require.ErrorContains(t, err, "agent")
}
