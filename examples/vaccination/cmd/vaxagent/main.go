// Command vaxagent serves one role of the vaccination campaign as a
// process of its own, with the flags of every natsaga agent program
// (package agentmain): run the coordinator with the model's definitions,
// a vaxagent for each role, as many copies as you like, and a driver.
//
// Usage:
//
//	vaxagent patient|depot|clinic [flags]
//
// `vaxagent ROLE -h` lists the flags; the depot's -stock opens its stock.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/natsaga/natsaga/agentmain"
	"github.com/natsaga/natsaga/examples/vaccination"
)

func main() { os.Exit(mainCode(os.Args[1:], os.Getenv, os.Stderr)) }

func mainCode(args []string, getenv func(string) string, stderr io.Writer) int {
	const usage = "usage: vaxagent patient|depot|clinic [flags] (vaxagent ROLE -h lists the flags)"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		fmt.Fprintln(stderr, usage)
		return 0 // asked for, as every program's -h
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	r, err := vaccination.Program(args[0])
	if err != nil {
		fmt.Fprintln(stderr, "vaxagent:", err)
		return 2
	}
	return agentmain.Run(r, args[1:], getenv, stderr)
}
