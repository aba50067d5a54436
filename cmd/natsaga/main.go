// Command natsaga is the operator's tool: it asks a running coordinator
// about sagas, retries the compensation of failed ones, aborts stuck
// ones, registers saga
// definitions, follows the saga events, writes the outcome log, waits for
// a quiet tick and lists the running services.
//
// Usage:
//
//	natsaga [-nats URL] [-json] summary
//	natsaga [-nats URL] [-json] status SAGA_ID
//	natsaga [-nats URL] [-json] list [-status STATUS] [-limit N]
//	natsaga [-nats URL] [-json] retry SAGA_ID
//	natsaga [-nats URL] [-json] abort [-reason TEXT] SAGA_ID
//	natsaga [-nats URL] [-json] start [-id SAGA_ID] SAGA_TYPE [CONTEXT_JSON]
//	natsaga [-nats URL] [-json] tick N
//	natsaga [-nats URL] [-json] events [-saga TYPE] [-status STATUS] [-n N | -all] [-f]
//	natsaga [-nats URL] [-json] services
//	natsaga [-nats URL] [-json] register FILE
//	natsaga [-nats URL] [-json] outcomes [-o FILE] [-ranked]
//	natsaga [-nats URL] [-json] quiet [-wait D]
//
// Answers are printed as tables for people; with -json (before or after
// the command) as the coordinator's JSON, in the shape of its answer
// (docs/protocol.md; a list's pages as one answer), events one JSON object
// a line. In the tables and messages for people, every text that came
// from outside (a reason, a note, an id, a service's metadata, an error)
// has what a terminal would act on escaped as %q escapes it ("\x1b[2J",
// "\r\n", "\u202e"); -json prints it as JSON encodes it. Every request
// goes through package client, as any Go program's.
// Every command takes -h, and its flags before or after its arguments
// ("status SAGA_ID -json"; after "--", every word is an argument). The
// exit code is 0 on success, 1 when the coordinator answered with an
// error or could not be reached (within -timeout, with the reason), and 2
// for bad usage: every argument the tool can check itself (a saga id or
// type, a status, a number, a file to read or to write) is checked before
// it reaches for the server, and so is a connection flag no server could
// take (cli.ErrBadFlag). A start the coordinator answers "busy" (it
// holds its limit of sagas in flight) is sent again after a backoff until
// -timeout; the last answer is printed.
//
// The outcome log (one JSON line per saga, sorted by id, as floodsim
// -outcomes writes it) goes to -o FILE, or with -json to stdout, byte for
// byte; otherwise it is shown as a table. Its SHA-256 is printed on stderr.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
	"github.com/natsaga/natsaga/internal/cli"
	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

const usage = `usage: natsaga [flags] COMMAND [command flags] [arguments]
commands:
  summary                        saga counts by status
  status SAGA_ID                 one saga's state and history
  list [-status S] [-limit N]    active sagas, or those with status S (a saga's status: completed, failed, ...)
  retry SAGA_ID                  retry the compensation of a failed saga
  abort [-reason R] SAGA_ID      roll back an active saga (the step in flight too)
  start [-id ID] TYPE [CONTEXT]  start a saga (CONTEXT is a JSON object)
  tick N                         advance the simulation clock to tick N
  events [-saga T] [-status S] [-n N | -all] [-f]
                                 saga status events: the latest N, all kept, or (by default) new ones as they happen
  services                       the coordinator and agents running (NATS micro discovery)
  register FILE                  register the saga definitions of FILE, or new versions of them
  outcomes [-o FILE] [-ranked]   the outcome log of the stored sagas (as floodsim -outcomes writes it), and its SHA-256
  quiet [-wait D]                wait until the current tick is quiet (the summary's due is 0)
"natsaga COMMAND -h" describes a command. Flags:
`

// errUsage marks an error in the command line (exit code 2).
var errUsage = errors.New("usage")

// errInput marks a command's error about what an argument holds (a file
// that does not load): exit code 2, said without the command's usage,
// which the command line followed.
var errInput = errors.New("input")

// inputError marks err with errInput, its text unchanged.
func inputError(err error) error { return markedError{err, errInput} }

// markedError is err, which errors.Is also finds to be mark.
type markedError struct{ err, mark error }

func (e markedError) Error() string   { return e.err.Error() }
func (e markedError) Unwrap() []error { return []error{e.err, e.mark} }

// errAnswered marks an error the coordinator answered (exit code 1); it
// has been printed.
var errAnswered = errors.New("the coordinator answered with an error")

// options are the flags every command shares.
type options struct {
	conn      cli.Conn
	timeout   time.Duration
	json      bool
	logFormat string
}

// command is one subcommand: its flags, its arguments' synopsis, and what
// it does once connected.
type command struct {
	synopsis string
	help     string
	flags    func(fs *flag.FlagSet) func(args []string) (runner, error)
}

// runner runs a parsed command with a client of the coordinator.
type runner func(ctx context.Context, cl *client.Client, o *options, stdout, stderr io.Writer) error

func main() { os.Exit(mainCode(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)) }

func mainCode(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("natsaga", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	var o options
	o.conn.Register(fs, getenv)
	// A person waits -timeout for the server, unless -connect-wait says
	// otherwise (below): the help says so.
	fs.Lookup("connect-wait").DefValue = "-timeout"
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "how long to wait to connect (unless -connect-wait is given) and for each answer (a start answered \"busy\", and a request no coordinator serves yet, are sent again until then)")
	fs.BoolVar(&o.json, "json", false, "print the answers as JSON, for machines")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json, for the connection's error logs")
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
	if o.timeout <= 0 {
		fmt.Fprintln(stderr, "natsaga: -timeout must be positive")
		return 2
	}
	name := fs.Arg(0)
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "natsaga: unknown command %q\n", name)
		fs.Usage()
		return 2
	}
	sub := flag.NewFlagSet(name, flag.ContinueOnError)
	sub.SetOutput(stderr)
	sub.Usage = func() {
		fmt.Fprintf(stderr, "usage: natsaga [flags] %s %s\n%s\n", name, cmd.synopsis, cmd.help)
		sub.PrintDefaults()
	}
	sub.BoolVar(&o.json, "json", o.json, "print the answer as JSON")
	parse := cmd.flags(sub)
	subArgs, err := parseInterspersed(sub, fs.Args()[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if f, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok && fs.Lookup(f) != nil {
			fmt.Fprintf(stderr, "natsaga: -%s is natsaga's own flag: give it before the command (natsaga -%s ... %s)\n", f, f, name)
		}
		return 2
	}
	run, err := parse(subArgs)
	if err != nil {
		printf(stderr, "natsaga %s: %v\n", name, err)
		if !errors.Is(err, errInput) {
			sub.Usage()
		}
		return 2
	}

	ctx, stop := cli.SignalContext()
	defer stop()
	// A person waits -timeout for the server, unless -connect-wait says
	// otherwise.
	connectWait := o.timeout
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "connect-wait" {
			connectWait = o.conn.Wait
		}
	})
	o.conn.Wait = connectWait
	log, err := cli.NewLogger(stderr, "error", o.logFormat)
	if err != nil {
		printf(stderr, "natsaga: %v\n", err)
		return 2
	}
	// The connection says what a person waits for: the server, once
	// it has waited a second; a connection lost and found again.
	connLog, _ := cli.NewLogger(stderr, "info", o.logFormat)
	log, connLog = log.With("process", "natsaga", "pid", os.Getpid()), connLog.With("process", "natsaga", "pid", os.Getpid())
	cctx, cancel := context.WithTimeout(ctx, max(o.timeout, connectWait))
	nc, err := o.conn.Connect(cctx, "natsaga-cli", connLog)
	cancel()
	if err != nil {
		printf(stderr, "natsaga: %v\n", err)
		if errors.Is(err, cli.ErrBadFlag) {
			return 2
		}
		return 1
	}
	defer nc.Close()
	// A subject the server refuses this user is not answered: nats.go
	// says so only to the connection's error handler, and a request would
	// wait out -timeout. The command stops at once instead; every subject
	// it uses is one it needs.
	ctx, refused := context.WithCancelCause(ctx)
	defer refused(nil)
	logErr := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, s *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			refused(err)
		}
		if logErr != nil {
			logErr(c, s, err)
		}
	})
	// One attempt per request, as a person waits for one answer; a request
	// nobody serves yet (a coordinator starting or taking over) is sent
	// again until -timeout.
	cl, err := client.New(nc, client.Options{RequestTimeout: o.timeout, Attempts: 1, RestartPatience: o.timeout, Logger: log})
	if err != nil {
		printf(stderr, "natsaga: %v\n", err)
		return 2
	}
	err = run(ctx, cl, &o, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errAnswered):
		return 1
	case errors.Is(err, errUsage):
		printf(stderr, "natsaga: %v\n", err)
		return 2
	default:
		le := context.Cause(ctx)
		if !errors.Is(le, nats.ErrPermissionViolation) {
			printf(stderr, "natsaga: %v\n", err)
			return 1
		}
		hint := ""
		if strings.Contains(le.Error(), `"_INBOX.`) {
			// A user whose inbox is elsewhere hears no answer.
			hint = " (a user of deploy/nats/auth.conf needs its -inbox-prefix, _INBOX_<user>)"
		}
		printf(stderr, "natsaga: the server refused this user a subject: %v%s\n", le, hint)
		return 1
	}
}

// parseInterspersed parses a command's args with fs, its flags before,
// between or after its arguments ("status SAGA_ID -json", as "status
// -json SAGA_ID"), and returns the arguments in their order. After "--"
// every word is an argument. A negative number that is not a flag's value
// is an argument too, so that "tick -1" is refused as a tick, not as an
// unknown flag -1.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var out []string
	for len(args) > 0 {
		cut := negativeArgument(fs, args)
		if err := fs.Parse(args[:cut]); err != nil {
			return nil, err
		}
		rest := fs.Args()
		used := cut - len(rest)
		if used > 0 && args[used-1] == "--" && (used < 2 || !takesValue(fs, args[used-2])) {
			return slices.Concat(out, rest, args[cut:]), nil
		}
		if len(rest) > 0 {
			// Parse stopped at an argument: take it, and parse on.
			out = append(out, rest[0])
			args = slices.Concat(rest[1:], args[cut:])
			continue
		}
		if cut < len(args) {
			out = append(out, args[cut])
		}
		args = args[min(cut+1, len(args)):]
	}
	return out, nil
}

// negativeArgument returns the index in args of the first negative number
// that is not a flag's value, before any "--"; len(args) if there is none.
func negativeArgument(fs *flag.FlagSet, args []string) int {
	for i, a := range args {
		if a == "--" {
			break
		}
		if _, err := strconv.ParseInt(a, 10, 64); err != nil || !strings.HasPrefix(a, "-") {
			continue
		}
		if i > 0 && takesValue(fs, args[i-1]) {
			continue
		}
		return i
	}
	return len(args)
}

// takesValue reports whether arg is a flag of fs given without its value,
// which the next argument then is.
func takesValue(fs *flag.FlagSet, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if name == arg || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// The coordinator's bounds of a list of finished sagas, read from its
// bucket (coordinator.DefaultFinishedList and MaxFinishedList; a test holds
// them equal).
const (
	defaultFinished = 100
	maxFinished     = 1000
)

// listHint is what a list of n sagas of status, asked with limit, adds to
// its count when the coordinator holds more than it listed (more): active
// or failed sagas past -limit, or finished ones past the latest the
// coordinator answers in its one page.
func listHint(status saga.Status, limit, n int, more bool) string {
	if !more {
		return ""
	}
	if !status.Terminal() || status == saga.Failed {
		return " (more are held: -limit 0 lists them all)"
	}
	switch want := cmp.Or(limit, defaultFinished); {
	case n < min(want, maxFinished):
		return " (the latest that fit one answer of the coordinator; more are stored: summary counts them)"
	case want > maxFinished:
		return fmt.Sprintf(" (the latest %d, the most the coordinator answers, not the %d asked; more are stored: summary counts them)", maxFinished, want)
	case want == maxFinished:
		return fmt.Sprintf(" (the latest %d, the most the coordinator answers; more are stored: summary counts them)", maxFinished)
	}
	return fmt.Sprintf(" (the latest; more are stored: -limit asks for up to %d, and summary counts them)", maxFinished)
}

// commands are natsaga's subcommands by name.
func commands() map[string]command {
	noFlags := func(n int, run func(args []string) (runner, error)) func(*flag.FlagSet) func([]string) (runner, error) {
		return func(*flag.FlagSet) func([]string) (runner, error) {
			return func(args []string) (runner, error) {
				if len(args) != n {
					if n == 0 {
						return nil, fmt.Errorf("takes no arguments, got %d", len(args))
					}
					return nil, fmt.Errorf("takes %d argument, got %d", n, len(args))
				}
				return run(args)
			}
		}
	}
	return map[string]command{
		"summary": {"", "Print the coordinator's counts of sagas by status.", noFlags(0, func([]string) (runner, error) {
			return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
				s, err := cl.Summary(ctx)
				return s, func(w io.Writer) { printSummary(w, &s) }, err
			}), nil
		})},
		"status": {"SAGA_ID", "Print one saga's state and history, active or finished.", noFlags(1, func(args []string) (runner, error) {
			if err := messages.CheckToken("saga_id", args[0]); err != nil {
				return nil, err
			}
			return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
				x, err := cl.StatusJSON(ctx, args[0])
				return messages.StatusResponse{V: messages.Version, Saga: x, Error: wireError(err)}, func(w io.Writer) { printStatus(w, x) }, err
			}), nil
		})},
		"retry": {"SAGA_ID", "Retry the compensation of a failed saga.", noFlags(1, func(args []string) (runner, error) {
			if err := messages.CheckToken("saga_id", args[0]); err != nil {
				return nil, err
			}
			return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
				st, err := cl.Retry(ctx, args[0])
				return messages.RetryResponse{V: messages.Version, Status: string(st), Error: wireError(err)}, func(w io.Writer) { printRetry(w, st) }, err
			}), nil
		})},
		"abort": {"[-reason TEXT] SAGA_ID", "Roll back an active saga that waits for an agent that will not answer:\n" +
			"the step in flight and the completed ones are compensated, in reverse order. The compensations\n" +
			"still need their agents: with no agent of the role running, the saga stays compensating until one serves it.",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				reason := fs.String("reason", "", "why, kept in the saga's error after \"aborted: \" (default \"by an operator\")")
				return func(args []string) (runner, error) {
					if len(args) != 1 {
						return nil, fmt.Errorf("want one SAGA_ID, got %d arguments", len(args))
					}
					req := messages.AbortRequest{V: messages.Version, SagaID: args[0], Reason: *reason}
					if err := req.Validate(); err != nil {
						return nil, err
					}
					return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
						a, err := cl.Abort(ctx, req.SagaID, req.Reason)
						resp := messages.AbortResponse{V: messages.Version, Status: string(a.Status), Unchanged: a.Unchanged, Error: wireError(err)}
						return resp, func(w io.Writer) { printAbort(w, a) }, err
					}), nil
				}
			}},
		"tick": {"N", "Advance the simulation clock to tick N (the agents follow).", noFlags(1, func(args []string) (runner, error) {
			n, err := strconv.ParseInt(args[0], 10, 64)
			switch {
			case errors.Is(err, strconv.ErrRange):
				return nil, fmt.Errorf("tick %s: out of range (at most %d)", args[0], int64(math.MaxInt64))
			case err != nil || n < 0:
				return nil, fmt.Errorf("tick %q: want a non-negative integer", args[0])
			}
			return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
				// An answer with an error comes back with the error in it.
				ack, err := cl.Tick(ctx, n)
				return ack, func(w io.Writer) { printTick(w, &ack, n) }, err
			}), nil
		})},
		"start": {"[-id SAGA_ID] SAGA_TYPE [CONTEXT_JSON]", "Start a saga of SAGA_TYPE with CONTEXT_JSON, a JSON object, as its context.\n" +
			"With -id, the same start run again starts the saga once: run it again after an error.",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				id := fs.String("id", "", "the saga's id (default: the coordinator makes one); a start with an id is sent again when its answer is late, and starts the saga once")
				return func(args []string) (runner, error) {
					if len(args) < 1 || len(args) > 2 {
						return nil, errors.New("takes SAGA_TYPE [CONTEXT_JSON]")
					}
					if *id != "" {
						if err := messages.CheckToken("saga id", *id); err != nil {
							return nil, err
						}
					}
					start := client.Start{Saga: args[0], ID: *id, Context: messages.Context{}}
					if len(args) == 2 {
						if err := json.Unmarshal([]byte(args[1]), &start.Context); err != nil {
							// Say what it is in JSON's terms, not Go's.
							if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
								return nil, fmt.Errorf("context is not a JSON object: it is a JSON %s", te.Value)
							}
							return nil, fmt.Errorf("context is not a JSON object: %w", err)
						}
					}
					if err := messages.CheckToken("saga type", args[0]); err != nil {
						return nil, err
					}
					return startSaga(start), nil
				}
			}},
		"list": {"[-status STATUS] [-limit N]", "List the active sagas, or those with STATUS: pending, in_progress, compensating, failed,\n" +
			"or, from the coordinator's bucket, completed, rolled_back or timed_out (the latest; 100 unless -limit).",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				status := fs.String("status", "", "only sagas with this status: pending, in_progress, compensating, completed, rolled_back, timed_out or failed (default: the active ones)")
				limit := fs.Int("limit", 0, "at most this many (0: all active ones, or 100 finished ones; finished ones: at most 1000, the most the coordinator answers)")
				return func(args []string) (runner, error) {
					if len(args) > 0 {
						return nil, fmt.Errorf("unexpected arguments %v", args)
					}
					if *limit < 0 {
						return nil, errors.New("-limit must not be negative")
					}
					if *status != "" && !saga.Status(*status).Valid() {
						return nil, fmt.Errorf("-status %q: want pending, in_progress, compensating, failed, completed, rolled_back or timed_out", *status)
					}
					return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
						xs, more, err := cl.ListMore(ctx, saga.Status(*status), *limit)
						hint := listHint(saga.Status(*status), *limit, len(xs), more)
						return messages.ListResponse{V: messages.Version, Sagas: xs, More: more, Error: wireError(err)}, func(w io.Writer) { printList(w, xs, hint) }, err
					}), nil
				}
			}},
		"events": {"[-saga TYPE] [-status STATUS] [-n N | -all] [-f]",
			"Print saga status events from the event stream: the latest N kept (-n), every one kept (-all),\n" +
				"or by default the new ones as they happen; -f goes on following after -n or -all.",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				var e eventsOptions
				e.register(fs)
				return func(args []string) (runner, error) {
					if err := e.validate(fs, args); err != nil {
						return nil, err
					}
					return func(ctx context.Context, cl *client.Client, o *options, stdout, _ io.Writer) error {
						return printEvents(ctx, cl, e, o.json, stdout)
					}, nil
				}
			}},
		"services": {"", "List the natsaga services that answer NATS micro discovery: the coordinators, active and standing by, and every agent.",
			noFlags(0, func([]string) (runner, error) { return listServices, nil })},
		"register": {"FILE", "Register the saga definitions of FILE, a definitions file (docs/own-model.md), or new versions of them\n" +
			"with the running coordinator. A file that does not load is refused before it is sent.",
			noFlags(1, func(args []string) (runner, error) {
				// A file that does not load is refused here, with the error
				// the coordinator would give, so that it is a usage error
				// and never sent.
				file, _, err := cli.ReadDefinitions(args[0])
				if err != nil {
					return nil, inputError(err)
				}
				return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
					reg, err := cl.Register(ctx, file)
					return messages.RegisterResponse{V: messages.Version, Registered: reg, Error: wireError(err)}, func(w io.Writer) { printRegister(w, reg) }, err
				}), nil
			})},
		"outcomes": {"[-o FILE] [-ranked]", "Write the outcome log of the sagas stored in the coordinator's bucket: one JSON line per saga,\n" +
			"sorted by id, as floodsim -outcomes writes it, to FILE, or with -json to stdout; otherwise show it as a table.\n" +
			"The count and the log's SHA-256 go to stderr. Reading the bucket may take up to a minute, or -timeout if longer.",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				var oo outcomesOptions
				fs.StringVar(&oo.path, "o", "", "write the log to this file")
				fs.BoolVar(&oo.ranked, "ranked", false, "only the sagas a simulation driver ranked")
				return func(args []string) (runner, error) {
					if len(args) > 0 {
						return nil, fmt.Errorf("unexpected arguments %v", args)
					}
					if oo.path != "" {
						// Said before the bucket is read, which may take a
						// minute, and before the server is reached.
						if err := checkWritable(oo.path); err != nil {
							return nil, inputError(fmt.Errorf("-o %s: %w", oo.path, err))
						}
					}
					return func(ctx context.Context, cl *client.Client, o *options, stdout, stderr io.Writer) error {
						ctx, cancel := context.WithTimeout(ctx, max(o.timeout, time.Minute))
						defer cancel()
						return writeOutcomes(ctx, cl, oo, o.json, stdout, stderr)
					}, nil
				}
			}},
		"quiet": {"[-wait D]", "Wait until the current tick is quiet: no command due at or before it lacks its final answer\n" +
			"(the summary's due is 0), and print the summary; fail when it is not quiet within -wait.",
			func(fs *flag.FlagSet) func([]string) (runner, error) {
				wait := fs.Duration("wait", time.Minute, "how long to wait for the tick to become quiet")
				return func(args []string) (runner, error) {
					if len(args) > 0 {
						return nil, fmt.Errorf("unexpected arguments %v", args)
					}
					if *wait <= 0 {
						return nil, errors.New("-wait must be positive")
					}
					return func(ctx context.Context, cl *client.Client, o *options, stdout, _ io.Writer) error {
						// -wait for the tick, and -timeout more for the
						// last answers: the summary, and the sagas named.
						ctx, cancel := context.WithTimeout(ctx, *wait+o.timeout)
						defer cancel()
						s, err := waitQuiet(ctx, cl, *wait)
						switch {
						case s.V == 0:
							return unanswered(err, o.timeout)
						case o.json:
							printJSON(stdout, s)
						case s.Due == 0 && err == nil:
							printf(stdout, "tick %d is quiet\n", s.Tick)
							printSummary(stdout, &s)
						default:
							printf(stdout, "tick %d is not quiet: %s due\n", s.Tick, count(s.Due, "command"))
							printSummary(stdout, &s)
						}
						// The coordinator may stop answering mid-wait.
						return unanswered(err, o.timeout)
					}, nil
				}
			}},
	}
}

// ask returns a runner that asks the coordinator with do and prints the
// answer do returns: with -json, wire, the answer in the coordinator's
// shape (an error it answered with included), and otherwise table. An
// error the coordinator answered with is printed (to stderr, naming its
// code, without -json) and returned as errAnswered; an answer that did not
// come is returned saying why.
func ask(do func(ctx context.Context, cl *client.Client) (wire any, table func(io.Writer), err error)) runner {
	return func(ctx context.Context, cl *client.Client, o *options, stdout, stderr io.Writer) error {
		wire, table, err := do(ctx, cl)
		var answered *client.Error
		if err != nil && !errors.As(err, &answered) {
			return unanswered(err, o.timeout)
		}
		switch {
		case o.json:
			printJSON(stdout, wire)
		case answered == nil:
			table(stdout)
		default:
			// The code is said once: "bad_request: …", not "…: bad request" too.
			msg := strings.TrimSuffix(answered.Message, ": "+strings.ReplaceAll(answered.Code, "_", " "))
			printf(stderr, "natsaga: %s: %s\n", answered.Code, msg)
		}
		if answered != nil {
			return errAnswered
		}
		return nil
	}
}

// startSaga returns a runner that starts s as ask asks. While the
// coordinator answers "busy" (a start that started nothing), the client
// sends the start again after a backoff, until -timeout; the last answer
// is printed.
func startSaga(s client.Start) runner {
	return func(ctx context.Context, cl *client.Client, o *options, stdout, stderr io.Writer) error {
		ctx, cancel := context.WithTimeout(ctx, o.timeout)
		defer cancel()
		return ask(func(ctx context.Context, cl *client.Client) (any, func(io.Writer), error) {
			started, err := cl.Start(ctx, s)
			resp := messages.StartResponse{V: messages.Version, SagaID: started.ID, Status: string(started.Status), Existed: started.Existed, Error: wireError(err)}
			return resp, func(w io.Writer) { printStart(w, started) }, err
		})(ctx, cl, o, stdout, stderr)
	}
}

// unanswered returns err, a request that got no answer, saying why in the
// operator's terms.
func unanswered(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return fmt.Errorf("no coordinator is serving (none running, or all standing by) within %s: %w", timeout, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return fmt.Errorf("no answer from the coordinator within %s: %w", timeout, err)
	}
	return err
}

// wireError returns the error the coordinator answered with that err
// carries, as the answer carried it; nil when err carries none.
func wireError(err error) *messages.WireError {
	var answered *client.Error
	if !errors.As(err, &answered) {
		return nil
	}
	return &messages.WireError{Code: answered.Code, Message: answered.Message}
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) {
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(w, string(out))
}
