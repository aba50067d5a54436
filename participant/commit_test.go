package participant

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
)

// watchState subscribes to role's state subjects on s's server, and
// returns a function that lists what was written there so far, in the
// order it was written: "data <key>" for a state value, "branch <saga>
// <step> <action> <outcome>" for a barrier record, "pending" for a claim.
func watchState(t *testing.T, s *Store) func() []string {
	t.Helper()
	nc, err := nats.Connect(s.nc.ConnectedUrl())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(messages.StateSubjects(s.role)[0])
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	return func() []string {
		t.Helper()
		// Everything written before this flush reaches the subscription
		// before its answer does.
		require.NoError(t, nc.Flush())
		var wire []string
		for {
			m, err := sub.NextMsg(0)
			if err != nil {
				return wire
			}
			wire = append(wire, describeWrite(t, s.role, m))
		}
	}
}

func describeWrite(t *testing.T, role string, m *nats.Msg) string {
	t.Helper()
	if key, ok := strings.CutPrefix(m.Subject, messages.DataSubject(role, "")); ok {
		return "data " + key
	}
	_, sagaID, step, ok := messages.ParseBranchSubject(m.Subject)
	require.True(t, ok, m.Subject)
	var rec Record
	require.NoError(t, json.Unmarshal(m.Data, &rec))
	action, res := messages.Execute, rec.Execute
	if rec.Compensate != nil {
		action, res = messages.Compensate, rec.Compensate
	}
	outcome := string(res.Outcome)
	if res.Pending {
		outcome = "pending"
	}
	return fmt.Sprintf("branch %s %s %s %s", sagaID, step, action, outcome)
}

// TestCommitClaimsOnlyOutOfOrder: an action that writes a value claims its
// branch first in a role whose copies apply commands side by side, where a
// compensation may come while its execute is being written. A serial role
// applies its commands in the order they were published, so it writes the
// value and the result only.
func TestCommitClaimsOnlyOutOfOrder(t *testing.T) {
	for _, tc := range []struct {
		inOrder bool
		want    []string
	}{
		{false, []string{"branch s-1 spend execute pending", "data budget", "branch s-1 spend execute ok",
			"branch s-1 spend compensate pending", "data budget", "branch s-1 spend compensate ok"}},
		{true, []string{"data budget", "branch s-1 spend execute ok",
			"data budget", "branch s-1 spend compensate ok"}},
	} {
		t.Run(fmt.Sprintf("in order %t", tc.inOrder), func(t *testing.T) {
			s := openTill(t)
			s.inOrder = tc.inOrder
			wire := watchState(t, s)
			ex := tillItems()[1]
			_, verdict, err := s.Do(context.Background(), ex.cmd, refundable)
			require.NoError(t, err)
			require.Equal(t, agent.Applied, verdict)
			co := *ex.cmd
			co.Action, co.Seq = messages.Compensate, 2
			_, verdict, err = s.Do(context.Background(), &co, refundable)
			require.NoError(t, err)
			require.Equal(t, agent.Applied, verdict)
			require.Equal(t, tc.want, wire())
			var budget int
			_, err = s.Get(context.Background(), "budget", &budget)
			require.NoError(t, err)
			require.Equal(t, 100, budget)
		})
	}
}

// refundable is spend with a compensation that gives the amount back.
var refundable = agent.Handler{
	Execute: spend.Execute,
	Compensate: func(_ context.Context, tx agent.Tx, cmd *messages.Command) error {
		var budget int
		if _, err := tx.Get("budget", &budget); err != nil {
			return err
		}
		return tx.Put("budget", budget+amount(cmd))
	},
}

// TestCommitRepairedWithoutAClaim: a serial copy wrote a spend's value and
// died before recording its result. The command, delivered again to the
// next copy, finds itself in the value's envelope: it records the result
// it wrote there and spends nothing more.
func TestCommitRepairedWithoutAClaim(t *testing.T) {
	s := openTill(t)
	ctx := context.Background()
	it := tillItems()[1]

	// What the dead copy got done: the value, naming the spend.
	tx := &txn{ctx: ctx, store: s, op: it.op, reads: map[string]cached{}}
	out, err := spend.Run(ctx, tx, it.cmd)
	require.NoError(t, err)
	b := &branch{s: s, cmd: it.cmd, h: spend, subject: messages.BranchSubject(till, it.cmd.SagaID, it.cmd.Step), op: it.op}
	require.NoError(t, b.writeValue(ctx, tx, out))
	tx.release()

	next, err := OpenStore(ctx, s.nc, till, false, 1)
	require.NoError(t, err)
	next.inOrder = true
	wire := watchState(t, next)
	reply, verdict, err := next.Do(ctx, it.cmd, spend)
	require.NoError(t, err)
	require.Equal(t, agent.Applied, verdict)
	require.Equal(t, messages.OK, reply.Outcome)
	require.Equal(t, out, reply.Output)
	require.Equal(t, []string{"branch s-1 spend execute ok"}, wire(), "the result, and no second write of the value")
	var budget int
	_, err = next.Get(ctx, "budget", &budget)
	require.NoError(t, err)
	require.Equal(t, 70, budget)
}
