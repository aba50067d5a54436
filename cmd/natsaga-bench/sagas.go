package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// The bench saga: three steps served by one role, each answering at once
// (or after the simulated latency) with a one-key output and writing no
// state, so a step costs the agent one barrier record.
const (
	benchSaga = "bench"
	benchRole = "bench"
)

var benchStepNames = []string{"s1", "s2", "s3"}

// benchDefinition is the saga the benchmark runs.
func benchDefinition() saga.Definition {
	d := saga.Definition{Name: benchSaga, Subject: benchSaga, Description: "three-step benchmark saga"}
	for _, name := range benchStepNames {
		d.Steps = append(d.Steps, saga.Step{Name: name, Role: benchRole, Compensation: "undo_" + name})
	}
	return d
}

// benchSteps are the bench role's steps; each sleeps latency, then
// answers with {"<step>_done": true}.
func benchSteps(latency time.Duration) []agent.Step {
	var steps []agent.Step
	for _, name := range benchStepNames {
		out := messages.Context{name + "_done": json.RawMessage("true")}
		steps = append(steps, agent.Step{Saga: benchSaga, Name: name, Handler: agent.Handler{
			Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
				if latency > 0 {
					time.Sleep(latency)
				}
				return out, nil
			},
			Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
		}})
	}
	return steps
}
