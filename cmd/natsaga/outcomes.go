package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// outcomesOptions are the flags of "natsaga outcomes".
type outcomesOptions struct {
	// path is the file the log goes to; "" means stdout.
	path string
	// ranked keeps only the sagas a simulation driver ranked.
	ranked bool
}

func parseOutcomes(args []string) (outcomesOptions, error) {
	var o outcomesOptions
	fs := flag.NewFlagSet("outcomes", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.path, "o", "", "write the log to this file (default: stdout)")
	fs.BoolVar(&o.ranked, "ranked", false, "only the sagas a simulation driver ranked")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("outcomes: %w", err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("outcomes: unexpected arguments %v", fs.Args())
	}
	return o, nil
}

// writeOutcomes reads every saga stored in the saga bucket and writes the
// outcome log (one JSON line per saga, sorted by id, as floodsim -outcomes
// writes it) to o.path or stdout; it returns the log's SHA-256 in hex and
// how many sagas it holds.
func writeOutcomes(ctx context.Context, nc *nats.Conn, o outcomesOptions, stdout io.Writer) (string, int, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return "", 0, err
	}
	kv, err := js.KeyValue(ctx, messages.SagaBucket)
	if err != nil {
		return "", 0, fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return "", 0, fmt.Errorf("bucket %s: %w", messages.SagaBucket, err)
	}
	defer w.Stop()
	var xs []saga.Execution
	for e := range w.Updates() {
		if e == nil {
			break // every stored value seen
		}
		if !strings.HasPrefix(e.Key(), messages.SagaKeyPrefix) {
			continue
		}
		var x saga.Execution
		if err := json.Unmarshal(e.Value(), &x); err != nil {
			return "", 0, fmt.Errorf("saga %s: %w", e.Key(), err)
		}
		if !o.ranked || x.Rank > 0 {
			xs = append(xs, x)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", 0, fmt.Errorf("reading the sagas: %w", err)
	}
	log, digest, err := saga.OutcomeLog(xs)
	if err != nil {
		return "", 0, err
	}
	if o.path == "" {
		_, err = stdout.Write(log)
	} else {
		err = os.WriteFile(o.path, log, 0o644)
	}
	if err != nil {
		return "", 0, fmt.Errorf("outcome log: %w", err)
	}
	return digest, len(xs), nil
}

// errNoSagas is returned when the bucket holds no saga to log.
var errNoSagas = errors.New("no saga stored")
