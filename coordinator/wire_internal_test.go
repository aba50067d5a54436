package coordinator

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/messages"
)

func TestGroupCommands(t *testing.T) {
	// cmd is a command of saga s, step st, for role r, batched up to
	// limit: "id" names it in the groups.
	type cmd struct {
		id, saga, step string
		action         messages.Action
		role           string
		limit, bytes   int
	}
	exec := func(id, step, role string, limit int) cmd {
		return cmd{id, "pay", step, messages.Execute, role, limit, 10}
	}
	for _, tc := range []struct {
		name     string
		cmds     []cmd
		maxBytes int
		want     string
		// free is a role that is not serial: its commands keep their
		// order within each step only. Every other role is serial.
		free string
	}{
		{"one step, one role", []cmd{exec("a", "ask", "r", 256), exec("b", "ask", "r", 256), exec("c", "ask", "r", 256)}, 1000,
			"a b c", ""},
		{"a role that reads no batches gets singles", []cmd{exec("a", "ask", "r", 1), exec("b", "ask", "r", 1)}, 1000,
			"a | b", ""},
		{"at most the limit", []cmd{exec("a", "ask", "r", 2), exec("b", "ask", "r", 2), exec("c", "ask", "r", 2)}, 1000,
			"a b | c", ""},
		{"at most maxBytes", []cmd{exec("a", "ask", "r", 256), exec("b", "ask", "r", 256), exec("c", "ask", "r", 256)},
			batchOverhead + 10 + 1 + 10,
			"a b | c", ""},
		{"a command larger than maxBytes goes alone", []cmd{exec("a", "ask", "r", 256), {"big", "pay", "ask", messages.Execute, "r", 256, 5000}, exec("c", "ask", "r", 256)}, 1000,
			"a | big | c", ""},
		{"other roles in between do not split a role's batch",
			[]cmd{exec("a", "ask", "r", 256), exec("x", "spend", "s", 256), exec("b", "ask", "r", 256), exec("y", "spend", "s", 256)}, 1000,
			"a b | x y", ""},
		{"another step of the same role ends its batch: the role's order holds",
			[]cmd{exec("a", "ask", "r", 256), exec("b", "tell", "r", 256), exec("c", "ask", "r", 256)}, 1000,
			"a | b | c", ""},
		{"a compensation is another subject",
			[]cmd{exec("a", "ask", "r", 256), {"b", "pay", "ask", messages.Compensate, "r", 256, 10}, exec("c", "ask", "r", 256)}, 1000,
			"a | b | c", ""},
		{"the same step name in another saga is another subject",
			[]cmd{exec("a", "ask", "r", 256), {"b", "other", "ask", messages.Execute, "r", 256, 10}}, 1000,
			"a | b", ""},
		{"a role that is not serial: each step's batch takes its commands, whatever came between",
			[]cmd{exec("a", "ask", "r", 256), exec("b", "tell", "r", 256), exec("c", "ask", "r", 256), exec("d", "tell", "r", 256)}, 1000,
			"a c | b d", "r"},
		{"... and a compensation of its step is still another subject",
			[]cmd{exec("a", "ask", "r", 256), {"b", "pay", "ask", messages.Compensate, "r", 256, 10}, exec("c", "ask", "r", 256)}, 1000,
			"a c | b", "r"},
		{"... and its batches are bounded all the same",
			[]cmd{exec("a", "ask", "r", 2), exec("b", "tell", "r", 2), exec("c", "ask", "r", 2), exec("d", "ask", "r", 2)}, 1000,
			"a c | b | d", "r"},
		{"only that role: a serial role beside it keeps its order",
			[]cmd{exec("a", "ask", "r", 256), exec("x", "spend", "s", 256), exec("y", "save", "s", 256), exec("b", "tell", "r", 256), exec("c", "ask", "r", 256), exec("z", "spend", "s", 256)}, 1000,
			"a c | x | y | b | z", "r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in []wireCommand
			for _, c := range tc.cmds {
				in = append(in, wireCommand{cmd: &messages.Command{SagaID: c.id, Saga: c.saga, Step: c.step, Action: c.action},
					data: make([]byte, c.bytes), role: c.role, limit: c.limit, ordered: c.role != tc.free})
			}
			var groups []string
			for _, g := range groupCommands(in, tc.maxBytes) {
				var ids []string
				for _, w := range g {
					ids = append(ids, w.cmd.SagaID)
				}
				groups = append(groups, strings.Join(ids, " "))
			}
			require.Equal(t, tc.want, strings.Join(groups, " | "))
		})
	}
}
