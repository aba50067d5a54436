package main

import (
	"fmt"
	"io"

	"github.com/natsaga/natsaga/messages"
)

// printRegister prints the definitions registered, a row each.
func printRegister(w io.Writer, registered []messages.RegisteredSaga) {
	t := table(w)
	fmt.Fprintln(t, "SAGA\tVERSION\tLATEST\tUNCHANGED")
	for _, s := range registered {
		printf(t, "%s\t%d\t%t\t%t\n", s.Name, s.Version, s.Latest, s.Unchanged)
	}
	_ = t.Flush()
	printf(w, "%d definitions\n", len(registered))
}
