package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/natsaga/natsaga/client"
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
	cl, err := client.New(nc, client.Options{})
	if err != nil {
		return "", 0, err
	}
	var buf bytes.Buffer
	digest, n, err := cl.WriteOutcomes(ctx, &buf, o.ranked)
	if err != nil {
		return "", 0, err
	}
	if o.path == "" {
		_, err = stdout.Write(buf.Bytes())
	} else {
		err = os.WriteFile(o.path, buf.Bytes(), 0o644)
	}
	if err != nil {
		return "", 0, fmt.Errorf("outcome log: %w", err)
	}
	return digest, n, nil
}

// errNoSagas is returned when the bucket holds no saga to log.
var errNoSagas = errors.New("no saga stored")
