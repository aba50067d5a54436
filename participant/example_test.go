package participant_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/agent"
	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/coordinator"
	"github.com/natsaga/natsaga/internal/embedded"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/participant"
	"github.com/natsaga/natsaga/saga"
)

// lend is the handler of a new role, a library that lends books from a
// stock every saga shares. Its state is a count under one key.
var lend = agent.Handler{
	Execute: func(_ context.Context, tx agent.Tx, cmd *messages.Command) (messages.Context, error) {
		var left int
		if _, err := tx.Get("books", &left); err != nil {
			return nil, err // transient: retried
		}
		if left == 0 {
			return nil, agent.Reject("no book left") // the saga rolls back
		}
		return messages.Context{}.MustSet("books_left", left-1), tx.Put("books", left-1)
	},
	Compensate: func(_ context.Context, tx agent.Tx, _ *messages.Command) error {
		var left int
		if _, err := tx.Get("books", &left); err != nil {
			return err
		}
		return tx.Put("books", left+1) // the book comes back
	},
}

// Example runs a new role's agent: the library above serves the step
// "lend" of saga "borrow", with one book in stock, on JetStream.
func Example() {
	nc, stop := exampleSystem(`{"roles":["library"],"sagas":[{"name":"borrow","subject":"borrow","steps":[{"name":"lend","role":"library"}]}]}`)
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	a, err := participant.New(nc, participant.Options{
		Role:   "library",
		Steps:  []agent.Step{{Saga: "borrow", Name: "lend", Handler: lend}},
		Serial: true, // one key every saga touches
		Init: func(ctx context.Context, s agent.Seeder) error {
			_, err := s.Init(ctx, "books", 1)
			return err
		},
	})
	if err != nil {
		panic(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	c, _ := client.New(nc, client.Options{})
	for _, id := range []string{"ann", "bob"} {
		if _, err := c.Start(ctx, client.Start{Saga: "borrow", ID: id}); err != nil {
			panic(err)
		}
		if _, err := c.WaitQuiet(ctx, client.Quiet{}); err != nil {
			panic(err)
		}
		x, _ := c.Status(ctx, id)
		fmt.Printf("%s %s %q\n", id, x.Status, x.Error)
	}
	// Output:
	// ann completed ""
	// bob rolled_back "step lend failed: no book left"
}

// exampleSystem runs an embedded nats-server and a coordinator of the
// definitions file defs, and returns a connection to the server.
func exampleSystem(defs string) (*nats.Conn, func()) {
	dir, err := os.MkdirTemp("", "participant-example")
	if err != nil {
		panic(err)
	}
	ns, err := embedded.Start(embedded.Options{StoreDir: dir})
	if err != nil {
		panic(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		panic(err)
	}
	d, err := saga.ParseFile([]byte(defs))
	if err != nil {
		panic(err)
	}
	co, err := coordinator.New(nc, coordinator.Options{Definitions: d})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = co.Run(ctx); close(done) }()
	<-co.Ready()
	return nc, func() {
		cancel()
		<-done
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = os.RemoveAll(dir)
	}
}
