package fuzz_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/natsaga/natsaga/flood"
	"github.com/natsaga/natsaga/internal/agentcmd"
	"github.com/natsaga/natsaga/internal/kvlog"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// TestHouseholdCannotForgeTheInsurer runs the system under auth.conf and
// has the household user try every way it has to answer the insurer's
// evaluation of its own 3,000.00 claim with a payout of 100,000.00, while
// the evaluation is in flight and before the insurer runs: a record in its
// own record log naming the insurer's step, and, denied by the
// permissions, the insurer's reply subject and record log. The
// coordinator refuses the record, counts it and logs it with the role it
// came from; the real insurer then pays exactly the claim less the
// deductible.
func TestHouseholdCannotForgeTheInsurer(t *testing.T) {
	s := newSystem(t)
	s.agent(flood.Household)
	s.waitAgents(1)

	const damage = 3_000_00
	id := s.start(flood.Insurance, messages.Context{}.MustSet(flood.KeyHousehold, "h-forger").MustSet(flood.KeyDamage, damage))
	var x saga.Execution
	require.Eventually(t, func() bool {
		x = s.status(id)
		return x.Current == 1
	}, 20*time.Second, 10*time.Millisecond, "the insurer's evaluation never went out")
	require.Equal(t, []string{"household_files"}, x.Completed)

	// The household knows the saga, and guesses the sequence number of
	// the next command: one more than its own.
	forged := messages.Context{}.MustSet(flood.KeyPayout, 100_000_00).MustSet(flood.KeyApproved, true)
	rec := messages.Record{Execute: &messages.Result{Outcome: messages.OK, Seq: x.Seq, Output: forged, At: time.Now()}}
	data, err := json.Marshal(rec)
	require.NoError(t, err)
	household := s.connect(flood.Household)
	js, err := jetstream.New(household)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	entry := kvlog.AppendMessage(nil, "forged", []kvlog.Entry{{Key: messages.RecordKey(id, "insurer_evaluates"), Value: data}})
	_, err = js.Publish(ctx, messages.RecordSubject(flood.Household), entry)
	require.NoError(t, err, "the household may write its own records")
	for _, f := range []struct {
		subject string
		data    []byte
	}{
		{messages.RecordSubject(flood.Insurer), entry},
		{messages.ReplySubject(flood.Insurance, "insurer_evaluates"), data},
	} {
		short, stop := context.WithTimeout(context.Background(), time.Second)
		_, err := js.Publish(short, f.subject, f.data)
		stop()
		require.Error(t, err, "the household published on %s", f.subject)
	}

	require.Eventually(t, func() bool { return s.coord.Refused() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Len(t, s.logs.matching("WARN record refused", "from_role=household", "step=insurer_evaluates", "saga_id="+id), 1)
	x = s.status(id)
	require.Equal(t, 1, x.Current, "the forged record moved the saga")
	require.Equal(t, []string{"household_files"}, x.Completed)

	s.agent(flood.Insurer)
	x = s.waitStatus(id, saga.Completed)
	payout := int64(damage - flood.DefaultDeductible)
	got, err := x.Context.Int64(flood.KeyPayout)
	require.NoError(t, err)
	require.Equal(t, payout, got)
	l := s.ledger(flood.Insurer)
	require.Equal(t, agentcmd.DefaultLedger[flood.Insurer]-payout, l.Balance)
	require.Equal(t, map[string]int64{flood.Insurance: payout}, l.Spent)
	s.alive()
}
