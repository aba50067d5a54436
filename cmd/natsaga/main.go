// Command natsaga is the operator's tool: it asks a running coordinator
// about sagas and retries the compensation of failed ones.
//
// Usage:
//
//	natsaga [-nats URL] summary
//	natsaga [-nats URL] status SAGA_ID
//	natsaga [-nats URL] list [-status failed] [-limit N]
//	natsaga [-nats URL] retry SAGA_ID
//	natsaga [-nats URL] start SAGA_TYPE [CONTEXT_JSON]
//	natsaga [-nats URL] tick N
//	natsaga [-nats URL] events [-saga TYPE] [-status STATUS] [-all] [-n N]
//	natsaga [-nats URL] outcomes [-o FILE] [-ranked]
//	natsaga [-nats URL] quiet [-wait 1m]
//	natsaga [-nats URL] register FILE
//
// Every answer is printed as indented JSON on stdout; events are printed one
// JSON object a line. The exit code is 0 on success, 1 when the coordinator
// answered with an error or did not answer, and 2 for bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/messages"
)

const usage = `usage: natsaga [-nats URL] COMMAND
commands:
  summary                        saga counts by status
  status SAGA_ID                 one saga's state and history
  list [-status S] [-limit N]    active sagas, or those with status S (an active status or failed)
  retry SAGA_ID                  retry the compensation of a failed saga
  start SAGA_TYPE [CONTEXT]      start a saga (CONTEXT is a JSON object)
  tick N                         advance the simulation clock to tick N
  events [-saga T] [-status S] [-all] [-n N]
                                 print saga status events as they happen (with -all, from the oldest kept)
  register FILE                  register the saga definitions of FILE, or new versions of them
  quiet [-wait D]                wait until the current tick is quiet (the summary's due is 0)
  outcomes [-o FILE] [-ranked]   the outcome log of the stored sagas: a JSON line per saga, sorted by id
                                 (as floodsim -outcomes writes it), and its SHA-256 on stderr
`

func main() { os.Exit(mainCode(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

func mainCode(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsaga", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	var conn cli.Conn
	conn.Register(fs, getenv)
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the coordinator's answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}
	if fs.Arg(0) == "events" {
		return eventsCode(conn, fs.Args()[1:], stdout, stderr)
	}
	if fs.Arg(0) == "quiet" {
		return quietCode(conn, fs.Args()[1:], stdout, stderr)
	}
	if fs.Arg(0) == "outcomes" {
		return outcomesCode(conn, *timeout, fs.Args()[1:], stdout, stderr)
	}
	subject, req, err := request(fs.Args())
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 2
	}
	conn.Wait = min(conn.Wait, *timeout)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	nc, err := conn.Connect(ctx, "natsaga-cli", log)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	defer nc.Close()
	answer, err := ask(ctx, nc, subject, req)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	fmt.Fprintln(stdout, string(answer))
	var e struct {
		Error *messages.WireError `json:"error"`
	}
	if json.Unmarshal(answer, &e) == nil && e.Error != nil {
		return 1
	}
	return 0
}

// request maps the command line to a subject and a request payload.
func request(args []string) (string, any, error) {
	cmd, rest := args[0], args[1:]
	need := func(n int) error {
		if len(rest) != n {
			return fmt.Errorf("%s takes %d argument(s), got %d", cmd, n, len(rest))
		}
		return nil
	}
	switch cmd {
	case "summary":
		return messages.SummarySubject, struct{}{}, need(0)
	case "status":
		if err := need(1); err != nil {
			return "", nil, err
		}
		return messages.StatusSubject, messages.StatusRequest{V: messages.Version, SagaID: rest[0]}, nil
	case "retry":
		if err := need(1); err != nil {
			return "", nil, err
		}
		return messages.RetrySubject, messages.RetryRequest{V: messages.Version, SagaID: rest[0]}, nil
	case "list":
		fs := flag.NewFlagSet("list", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		status := fs.String("status", "", "status")
		limit := fs.Int("limit", 0, "limit")
		if err := fs.Parse(rest); err != nil {
			return "", nil, fmt.Errorf("list: %w", err)
		}
		return messages.ListSubject, messages.ListRequest{V: messages.Version, Status: *status, Limit: *limit}, nil
	case "start":
		if len(rest) < 1 || len(rest) > 2 {
			return "", nil, errors.New("start takes SAGA_TYPE [CONTEXT_JSON]")
		}
		req := messages.StartRequest{V: messages.Version, Context: messages.Context{}}
		if len(rest) == 2 {
			if err := json.Unmarshal([]byte(rest[1]), &req.Context); err != nil {
				return "", nil, fmt.Errorf("start: context is not a JSON object: %w", err)
			}
		}
		if err := messages.CheckToken("saga type", rest[0]); err != nil {
			return "", nil, err
		}
		return messages.StartSubject(rest[0]), req, nil
	case "register":
		if err := need(1); err != nil {
			return "", nil, err
		}
		req, err := registerRequest(rest[0])
		return messages.RegisterSubject, req, err
	case "tick":
		if err := need(1); err != nil {
			return "", nil, err
		}
		n, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || n < 0 {
			return "", nil, fmt.Errorf("tick %q: want a non-negative integer", rest[0])
		}
		return messages.TickSubject, messages.Tick{V: messages.Version, Tick: n}, nil
	}
	return "", nil, fmt.Errorf("unknown command %q", cmd)
}

// ask sends req on subject and returns the answer, indented.
func ask(ctx context.Context, nc *nats.Conn, subject string, req any) ([]byte, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	m, err := nc.RequestWithContext(ctx, subject, data)
	if err != nil {
		return nil, fmt.Errorf("%s: no answer from the coordinator: %w", subject, err)
	}
	var v any
	if err := json.Unmarshal(m.Data, &v); err != nil {
		return nil, fmt.Errorf("%s: answer is not JSON: %w", subject, err)
	}
	return json.MarshalIndent(v, "", "  ")
}

// quietCode runs "natsaga quiet": it prints the summary once the tick is
// quiet, and fails when it is not within -wait.
func quietCode(conn cli.Conn, args []string, stdout, stderr io.Writer) int {
	wait, err := parseQuiet(args)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	nc, err := conn.Connect(ctx, "natsaga-cli", log)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	defer nc.Close()
	s, err := waitQuiet(ctx, nc)
	out, _ := json.MarshalIndent(s, "", "  ")
	fmt.Fprintln(stdout, string(out))
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	return 0
}

// outcomesCode runs "natsaga outcomes": reading the bucket may take up to
// timeout (at least a minute).
func outcomesCode(conn cli.Conn, timeout time.Duration, args []string, stdout, stderr io.Writer) int {
	o, err := parseOutcomes(args)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, time.Minute))
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	nc, err := conn.Connect(ctx, "natsaga-cli", log)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	defer nc.Close()
	digest, n, err := writeOutcomes(ctx, nc, o, stdout)
	if err == nil && n == 0 {
		err = errNoSagas
	}
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	fmt.Fprintf(stderr, "%d sagas, outcome log SHA-256: %s\n", n, digest)
	return 0
}

// eventsCode runs "natsaga events" until SIGINT or -n events.
func eventsCode(conn cli.Conn, args []string, stdout, stderr io.Writer) int {
	o, err := parseEvents(args)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 2
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	nc, err := conn.Connect(ctx, "natsaga-cli", log)
	if err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	defer nc.Close()
	if err := streamEvents(ctx, nc, o, stdout); err != nil {
		fmt.Fprintln(stderr, "natsaga:", err)
		return 1
	}
	return 0
}
