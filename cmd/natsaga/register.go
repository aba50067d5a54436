package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// registerRequest reads the definitions file named file and returns the
// request that registers it. A file that does not load is refused here,
// with the error the coordinator would give.
func registerRequest(file string) (messages.RegisterRequest, error) {
	f, err := os.Open(file)
	if err != nil {
		return messages.RegisterRequest{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, saga.MaxFileSize+1))
	if err != nil {
		return messages.RegisterRequest{}, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := saga.ParseFile(data); err != nil {
		return messages.RegisterRequest{}, fmt.Errorf("%s: %w", file, err)
	}
	return messages.RegisterRequest{V: messages.Version, Definitions: json.RawMessage(data)}, nil
}

// printRegister prints the definitions registered, a row each.
func printRegister(w io.Writer, r *messages.RegisterResponse) {
	t := table(w)
	fmt.Fprintln(t, "SAGA\tVERSION\tLATEST\tUNCHANGED")
	for _, s := range r.Registered {
		fmt.Fprintf(t, "%s\t%d\t%t\t%t\n", s.Name, s.Version, s.Latest, s.Unchanged)
	}
	_ = t.Flush()
	fmt.Fprintf(w, "%d definitions\n", len(r.Registered))
}
