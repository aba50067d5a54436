package main

import (
	"fmt"
	"io"
	"os"

	"github.com/natsaga/natsaga/messages"
	"github.com/natsaga/natsaga/saga"
)

// readDefinitions reads the definitions file named file. A file that does
// not load is refused here, with the error the coordinator would give, so
// that it is a usage error and never sent.
func readDefinitions(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, saga.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := saga.ParseFile(data); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return data, nil
}

// printRegister prints the definitions registered, a row each.
func printRegister(w io.Writer, registered []messages.RegisteredSaga) {
	t := table(w)
	fmt.Fprintln(t, "SAGA\tVERSION\tLATEST\tUNCHANGED")
	for _, s := range registered {
		fmt.Fprintf(t, "%s\t%d\t%t\t%t\n", s.Name, s.Version, s.Latest, s.Unchanged)
	}
	_ = t.Flush()
	fmt.Fprintf(w, "%d definitions\n", len(registered))
}
