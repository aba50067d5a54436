package saga_test

import (
	"fmt"
	"time"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// ExampleEngine runs a three-step subsidy saga whose last step fails: the
// two completed steps are compensated in reverse order, one at a time. Here
// the agents are a switch statement; in natsaga they are processes that
// receive each command over NATS and publish the reply.
func ExampleEngine() {
	e := saga.New(saga.Options{
		KeepFinished: true,
		NewID:        func() string { return "saga-1" },
	})
	err := e.Register(saga.Definition{
		Name:    "subsidy_application",
		Subject: "subsidy",
		Steps: []saga.Step{
			{Name: "household_applies", Role: "household", Compensation: "cancel_application"},
			{Name: "government_evaluates", Role: "government", Compensation: "undo_approval"},
			{Name: "budget_deducted", Role: "government", Compensation: "refund_budget"},
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	var out saga.Outbox
	ctx := messages.Context{}.MustSet("agent_id", "household-7").MustSet("subsidy_cost_cents", 500000)
	x, err := e.Start("", "subsidy", ctx, &out)
	if err != nil {
		fmt.Println(err)
		return
	}

	// The wall-clock time only schedules retries; none happen here.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for len(out.Commands) > 0 {
		cmd := out.Commands[0]
		fmt.Printf("%s attempt=%d seq=%d\n", cmd.Subject(), cmd.Attempt, cmd.Seq)

		reply := messages.ReplyTo(&cmd, messages.OK, "")
		if cmd.Step == "budget_deducted" && cmd.Action == messages.Execute {
			reply = messages.ReplyTo(&cmd, messages.Failed, "budget insufficient")
		}
		out.Reset()
		if err := e.ApplyReply(reply, now, &out); err != nil {
			fmt.Println(err)
			return
		}
	}

	final, err := e.Get(x.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("status:", final.Status)
	fmt.Println("completed:", final.Completed)
	fmt.Println("compensated:", final.Compensated)
	fmt.Println("error:", final.Error)
	// Output:
	// saga.subsidy.household_applies attempt=1 seq=1
	// saga.subsidy.government_evaluates attempt=1 seq=2
	// saga.subsidy.budget_deducted attempt=1 seq=3
	// saga.subsidy.government_evaluates.compensate attempt=1 seq=4
	// saga.subsidy.household_applies.compensate attempt=1 seq=5
	// status: rolled_back
	// completed: [household_applies government_evaluates]
	// compensated: [government_evaluates household_applies]
	// error: step budget_deducted failed: budget insufficient
}
