package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"

	"github.com/nats-io/nats.go"
)

// greetings is the definitions file of the examples: one saga of one step.
const greetings = `{"roles": ["greeter"], "sagas": [{"name": "greeting", "subject": "greet",
	"steps": [{"name": "say_hello", "role": "greeter", "timeout_ticks": 2}]}]}`

// system runs an embedded nats-server, a coordinator of greetings and a
// greeter agent until stop is called, and returns the server's URL.
func system() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "natsaga-example")
	if err != nil {
		panic(err)
	}
	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defs, err := saga.ParseFile([]byte(greetings))
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	co, err := coordinator.New(nc, coordinator.Options{Definitions: defs})
	if err != nil {
		panic(err)
	}
	hello := agent.Handler{
		Execute: func(context.Context, agent.Tx, *messages.Command) (messages.Context, error) {
			return messages.Context{}.MustSet("greeting", "hello"), nil
		},
		Compensate: func(context.Context, agent.Tx, *messages.Command) error { return nil },
	}
	ag, err := participant.New(nc, participant.Options{Role: "greeter",
		Steps: []agent.Step{{Saga: "greet", Name: "say_hello", Handler: hello}}})
	if err != nil {
		panic(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = co.Run(ctx); done <- struct{}{} }()
	go func() { _ = ag.Run(ctx); done <- struct{}{} }()
	<-co.Ready()
	return ns.ClientURL(), func() {
		cancel()
		<-done
		<-done
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}

// A simulation driver starts its sagas ranked and scheduled for a tick,
// then advances the clock: Advance waits for quiet by the documented rule,
// so every run of the same seed ends the same.
func ExampleClient_Advance() {
	url, stop := system()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := client.Connect(ctx, url, client.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	starts := []client.Start{
		{Saga: "greet", ID: "run1-1", Rank: 1, Tick: 1},
		{Saga: "greet", ID: "run1-2", Rank: 2, Tick: 1},
	}
	_, errs := c.StartMany(ctx, starts, 0)
	if err := errors.Join(errs...); err != nil {
		panic(err)
	}
	sum, err := c.Advance(ctx, 1, client.Quiet{})
	if err != nil {
		panic(err)
	}
	fmt.Println("tick", sum.Tick, "completed", sum.Completed, "due", sum.Due)

	var log bytes.Buffer
	_, n, err := c.WriteOutcomes(ctx, &log, true)
	if err != nil {
		panic(err)
	}
	fmt.Println(n, "sagas in the outcome log")
	// Output:
	// tick 1 completed 2 due 0
	// 2 sagas in the outcome log
}

// Errors the coordinator answers with carry a code that errors.Is tells
// apart.
func ExampleClient_Status() {
	url, stop := system()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c, err := client.Connect(ctx, url, client.Options{})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	started, err := c.Start(ctx, client.Start{Saga: "greet", ID: "hello-1"})
	if err != nil {
		panic(err)
	}
	if _, err := c.WaitQuiet(ctx, client.Quiet{}); err != nil {
		panic(err)
	}
	x, err := c.Status(ctx, started.ID)
	if err != nil {
		panic(err)
	}
	greeting, _ := x.Context.String("greeting")
	fmt.Println(x.ID, x.Status, greeting)

	_, err = c.Status(ctx, "nobody")
	fmt.Println(errors.Is(err, client.ErrNotFound))
	_, err = c.Retry(ctx, "hello-1")
	fmt.Println(errors.Is(err, client.ErrConflict))
	// Output:
	// hello-1 completed hello
	// true
	// true
}
